"""Instant clone, memory half: fork a warm zygote into a VM container vs. a cold start there.

    .venv/bin/python bench/clone_memory.py [--forks 20] [--cold 8] [--image cowpod/vm:latest]

One VM container (`cowpod/vm:latest` running `sleep`, 512 MiB) is the target.
The entrypoint both ways is `hypervisor.providers.docker.zygote_probe:run` after importing what
the agent imports (`hypervisor.providers.docker.zygote.DEFAULT_PRELOAD`: grpc, protobuf stubs,
docker, yaml, cowpod.client; plus `agent.main` and everything it imports):

- warm: a zygote on the host preloads those modules once; each clone is
  `ZygoteClient.fork_into(container, ...)`;
- cold (baseline, same run, same container): `docker exec -d <vm> python -c
  "import <the same modules>; zygote_probe.run(...)"` with the VM image's
  Python, i.e. what starting the agent cold costs.

Both are timed from the request until the probe's report file exists inside
the container (`*_ready_ms`); `fork_into_ms` is the client call alone (until
the clone is in the container, about to run the entrypoint). Memory comes from
`/proc/<pid>/smaps_rollup` of a clone and of a cold process that stay alive.
The last line printed is one JSON object.
"""

# Steps run one after another and are timed as such; nothing else runs on this
# loop, so the blocking calls (docker exec, polling a file) are what we measure.
# ruff: noqa: ASYNC221, ASYNC230, ASYNC240

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from bench._cleanup import BenchRun, own_path, run_labels  # noqa: E402
from hypervisor.providers.docker.zygote import DEFAULT_PRELOAD, ZygoteConfig  # noqa: E402
from hypervisor.providers.docker.zygote_client import ZygoteProcess  # noqa: E402
from hypervisor.testing import machine, smaps_rollup_kb  # noqa: E402

VM_PYTHON = "/opt/cowpod/venv/bin/python"
# What `cowpod-agent` loads before it runs: the zygote's default list plus the agent itself.
PRELOAD = (*DEFAULT_PRELOAD, "agent.main")
PROBE_DIR = "/tmp/cowpod-bench"  # inside the VM: a copy of zygote_probe.py for the cold path



def host_machine() -> dict[str, Any]:
    """The machine, its Python named `host_python`: the zygote runs on the host's,
    the clones' code on the VM's (`vm_python`)."""
    info = machine()
    info["host_python"] = info.pop("python")
    return info


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def memory(pid: int) -> dict[str, float]:
    s = smaps_rollup_kb(pid)
    return {
        "rss_mb": mb(s["Rss"]),
        "pss_mb": mb(s["Pss"]),
        "uss_mb": mb(s["Private_Clean"] + s["Private_Dirty"]),
        "shared_mb": mb(s["Shared_Clean"] + s["Shared_Dirty"]),
    }


async def wait_file(path: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        await asyncio.sleep(0.001)


async def run(forks: int, cold: int, image: str) -> dict[str, Any]:
    dock = docker.from_env()
    name = f"cowpod-bench-zygote-{uuid.uuid4().hex[:6]}"
    vm = dock.containers.run(
        image, ["sleep", "infinity"], detach=True, name=name, hostname=name,
        labels={"cowpod.bench": "1", **run_labels()}, mem_limit="512m", memswap_limit="512m",
    )
    tmp = tempfile.mkdtemp(prefix="cowpod-bench-")
    own_path(tmp)
    zp = ZygoteProcess(
        ZygoteConfig(socket_path=f"{tmp}/z.sock", preload=PRELOAD,
                     entrypoint="hypervisor.providers.docker.zygote_probe:run"),
        stderr_path=f"{tmp}/zygote.log",
    )
    try:
        vm.reload()
        init = int(vm.attrs["State"]["Pid"])
        root = f"/proc/{init}/root"
        vm.exec_run(["mkdir", "-p", PROBE_DIR])
        probe_src = (ROOT / "hypervisor" / "zygote_probe.py").read_text()
        vm.exec_run([VM_PYTHON, "-c", f"open('{PROBE_DIR}/zygote_probe.py','w').write({probe_src!r})"])
        vm_python = vm.exec_run([VM_PYTHON, "-c", "import platform; print(platform.python_version())"])
        t0 = time.monotonic()
        await zp.start()
        zygote_start_ms = (time.monotonic() - t0) * 1000
        client = zp.client

        # Warm: fork, the clone writes its report and exits.
        fork_ms, ready_ms = [], []
        for i in range(forks):
            out = f"/fork-{i}.json"
            t0 = time.monotonic()
            await client.fork_into(name, ["--out", out, "--sleep", "0"])
            t1 = time.monotonic()
            await wait_file(root + out)
            t2 = time.monotonic()
            fork_ms.append((t1 - t0) * 1000)
            ready_ms.append((t2 - t0) * 1000)

        # Cold: docker exec the VM's Python, import the same modules, run the same probe.
        imports = "; ".join(f"import {m}" for m in PRELOAD)

        def cold_cmd(out: str, sleep: str) -> list[str]:
            code = (f"import sys; sys.path.insert(0, {PROBE_DIR!r}); {imports}; import zygote_probe; "
                    f"zygote_probe.run(['--out', {out!r}, '--sleep', {sleep!r}])")
            return ["docker", "exec", "-d", name, VM_PYTHON, "-c", code]

        cold_ms = []
        for i in range(cold):
            out = f"/cold-{i}.json"
            t0 = time.monotonic()
            subprocess.run(cold_cmd(out, "0"), check=True, capture_output=True)
            await wait_file(root + out)
            cold_ms.append((time.monotonic() - t0) * 1000)

        # Memory: one clone and one cold process that stay alive.
        clone = await client.fork_into(name, ["--out", "/mem-fork.json"])
        await wait_file(root + "/mem-fork.json")
        subprocess.run(cold_cmd("/mem-cold.json", "600"), check=True, capture_output=True)
        await wait_file(root + "/mem-cold.json")
        with open(root + "/mem-cold.json") as f:
            cold_ns_pid = json.load(f)["pid"]
        cold_pid = _host_pid_of(init, cold_ns_pid)
        await asyncio.sleep(0.5)  # let both settle (the probe's last writes)
        child, cold_proc = memory(clone.pid), memory(cold_pid)
        zyg = memory(zp.pid)
        ping = await client.ping()
    finally:
        await zp.stop()
        vm.remove(force=True)
        dock.close()

    p50 = statistics.median
    result = {
        "fork_into_ms_p50": round(p50(fork_ms), 1),
        "fork_ready_ms_p50": round(p50(ready_ms), 1),
        "cold_start_ms_p50": round(p50(cold_ms), 1),
        "speedup": round(p50(cold_ms) / p50(ready_ms), 1),
        "speedup_vs_fork_into": round(p50(cold_ms) / p50(fork_ms), 1),
        "child_private_mb": child["uss_mb"],
        "child_shared_mb": child["shared_mb"],
        "child_pss_mb": child["pss_mb"],
        "child_rss_mb": child["rss_mb"],
        "cold_private_mb": cold_proc["uss_mb"],
        "cold_pss_mb": cold_proc["pss_mb"],
        "cold_rss_mb": cold_proc["rss_mb"],
        "zygote_rss_mb": round(ping["rss_kb"] / 1024, 1),
        "zygote_pss_mb": zyg["pss_mb"],
        "zygote_start_ms": round(zygote_start_ms, 1),
        "forks": forks,
        "cold_starts": cold,
        "vm_python": vm_python.output.decode().strip(),
        "preload": list(PRELOAD),
        "machine": host_machine(),
    }
    return result


def _host_pid_of(init: int, ns_pid: int) -> int:
    """The host pid of the process whose pid in `init`'s pid namespace is `ns_pid`."""
    ns = os.readlink(f"/proc/{init}/ns/pid")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and int(line.split()[-1]) == ns_pid:
                        return int(entry)
        except OSError:
            continue
    raise LookupError(f"no process with pid {ns_pid} in the namespace of {init}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--forks", type=int, default=20)
    p.add_argument("--cold", type=int, default=8)
    p.add_argument("--image", default="cowpod/vm:latest")
    a = p.parse_args()
    with BenchRun("clone_memory"):  # the VM container, the zygote and its clones go however it ends
        result = asyncio.run(run(a.forks, a.cold, a.image))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

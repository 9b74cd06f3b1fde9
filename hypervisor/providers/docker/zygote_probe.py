"""A tiny clone entrypoint that reports where it landed: for tests, the benchmark and operators.

`python -m hypervisor.providers.docker.zygote --entrypoint hypervisor.providers.docker.zygote_probe:run ...`
then `fork_into(container, ["--out", "/probe.json"])` writes, inside the
container, what the clone sees: its pid (in the container's pid namespace),
hostname, cgroups, the root mount line of its mountinfo, the files at `/`,
and optionally the contents of a file (`--read`). Then it can allocate memory
(`--alloc-mb`, to show that the container's memory limit applies) and sleeps
(`--sleep`, default forever) so that it can be inspected from the host.

It imports nothing beyond what the zygote preloads for it (json, os, socket,
time), because once inside a container the host's files are out of reach.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from typing import Any


def _root_mount_line() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4] == "/":
                return line.strip()
    return ""


def report() -> dict[str, Any]:
    with open("/proc/self/cgroup") as f:
        cgroup = f.read()
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "env_hostname": os.environ.get("HOSTNAME", ""),
        "cgroup": cgroup,
        "root_mount": _root_mount_line(),
        "root_entries": sorted(os.listdir("/")),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
    }


def run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="zygote-probe", add_help=False)
    p.add_argument("--out", default="/zygote-probe.json")
    p.add_argument("--read", default=None)
    p.add_argument("--alloc-mb", type=int, default=0)
    p.add_argument("--sleep", type=float, default=-1.0)
    a = p.parse_args(argv)
    facts = report()
    if a.read:
        with open(a.read) as f:
            facts["read"] = f.read()
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(facts, f)
    os.rename(tmp, a.out)  # readers never see half a report
    print(f"probe: pid {facts['pid']} on {facts['hostname']}", flush=True)
    hold = []
    for _ in range(a.alloc_mb):
        hold.append(bytearray(1 << 20))  # zero-filled pages, really touched
        hold[-1][::4096] = b"\x01" * len(range(0, 1 << 20, 4096))
    if a.alloc_mb:
        print(f"probe: holding {a.alloc_mb} MB", flush=True)
    if a.sleep >= 0:
        time.sleep(a.sleep)
        return 0
    while True:
        time.sleep(3600)

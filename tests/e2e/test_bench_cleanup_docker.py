"""#16: a bench's containers go with it: on SIGTERM, and after a SIGKILL with the
next bench run. Real Docker: a script owns a "VM" container (the run's label) and
a "pod" container nested in its network and cgroup, as the agent nests pods, the
way bench/clone_memory.py and the docker provider's VMs are owned."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import docker
import pytest

from agent.testing import BUSYBOX, ensure_images

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is scripts, not an installed package

from bench._cleanup import RUN_LABEL, RUNS_DIR_ENV, BenchRun, start_time  # noqa: E402

pytestmark = pytest.mark.e2e

OWNER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    import docker
    from bench._cleanup import BenchRun, run_labels

    with BenchRun("docker-owner", grace=2.0):
        d = docker.from_env()
        vm = d.containers.run({busybox!r}, ["sleep", "3600"], detach=True,
                              labels={{"cowpod.test": "1", **run_labels()}})
        pod = d.containers.run({busybox!r}, ["sleep", "3600"], detach=True,
                               labels={{"cowpod.test": "1", "cowpod.managed": "1"}},
                               network_mode=f"container:{{vm.id}}", cgroup_parent=f"/docker/{{vm.id}}")
        print("READY", vm.id, pod.id, flush=True)
        time.sleep(3600)
    """
)


@pytest.fixture
def engine(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[docker.DockerClient]:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))  # this test's records only
    ensure_images()
    client = docker.from_env()
    yield client
    client.close()


def exists(client: docker.DockerClient, cid: str) -> bool:
    try:
        client.containers.get(cid)
    except docker.errors.NotFound:
        return False
    return True


def start_owner() -> tuple[subprocess.Popen[str], str, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(root=str(ROOT), busybox=BUSYBOX)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line and line[0] == "READY", line
    return proc, f"docker-owner.{proc.pid}.{start_time(proc.pid)}", line[1], line[2]


def test_sigterm_removes_the_runs_containers_and_the_pods_nested_in_them(engine: docker.DockerClient) -> None:
    proc, run, vm, pod = start_owner()
    assert engine.containers.get(vm).labels[RUN_LABEL] == run and exists(engine, pod)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    assert not exists(engine, vm) and not exists(engine, pod)


def test_the_next_run_removes_what_a_sigkilled_run_left(engine: docker.DockerClient) -> None:
    proc, _, vm, pod = start_owner()
    proc.kill()
    proc.wait(30)
    assert exists(engine, vm) and exists(engine, pod)  # SIGKILL ran nothing
    with BenchRun("next", grace=2.0):
        assert not exists(engine, vm) and not exists(engine, pod)

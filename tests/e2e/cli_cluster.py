"""A `cowpod up --detach` cluster on the real Docker engine, driven through the CLI a user
types: the one shared by the e2e modules that need only a default cluster (the
`default_cluster` fixture in conftest.py), and the few that need their own.

Starting and stopping a cluster costs etcd, the controller, the scheduler and a VM each
time, so one default (secure, one VM `vm-1`) cluster serves a whole test session. The
modules sharing it stay independent: each test uses its own object names and deletes what
it made, and at the end of every module `remove_new` deletes whatever the module left (a
failed test's objects, a VM it cloned), so the next module finds the cluster as `up` made it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from cowpod.local.etcd import free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

# What a module may leave behind, in the order it is removed: owners before what they own,
# pods before their namespaces, VMs (and with them their nodes) last.
KINDS = ("deployments", "daemonsets", "jobs", "replicasets", "services", "configmaps", "secrets",
         "pods", "namespaces", "vms")
# `get -o json` names an item's kind in the singular; `delete` takes the plural.
_PLURAL = {"Deployment": "deployments", "DaemonSet": "daemonsets", "Job": "jobs",
           "ReplicaSet": "replicasets", "Service": "services", "ConfigMap": "configmaps",
           "Secret": "secrets", "Pod": "pods", "Namespace": "namespaces", "VM": "vms"}

ObjectKey = tuple[str, str, str]  # (plural kind, namespace or "", name)


# Each test session's clusters live in CLUSTERS/<pytest pid>/<name>/, outside pytest's rotating
# temp dirs, so that a later session finds the clusters of one that was killed and stops them.
CLUSTERS = pathlib.Path(tempfile.gettempdir()) / "cowpod-e2e-clusters"


def cli_env(data: pathlib.Path) -> dict[str, str]:
    """The environment of a `cowpod` CLI for the cluster whose data dir is `data`."""
    env = {**os.environ, "COWPOD_DATA_DIR": str(data), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for k in ("COWPOD_CONTROLLER", "COWPOD_CONFIG"):
        env.pop(k, None)
    return env


def sweep_killed_sessions() -> list[pathlib.Path]:
    """Stop the clusters of test sessions whose pytest is gone (SIGKILL, a lost terminal):
    `cowpod down --purge` stops what each one's cluster.json records and sweeps its VM
    containers. A running session's clusters are left alone."""
    swept: list[pathlib.Path] = []
    for session in sorted(CLUSTERS.glob("*")):
        if not session.name.isdigit() or pathlib.Path("/proc", session.name).exists():
            continue
        for data in session.glob("*/data"):
            CliCluster(cli_env(data), data).down()
        shutil.rmtree(session, ignore_errors=True)
        swept.append(session)
    return swept


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True)


def docker_answers() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@dataclass(frozen=True)
class CliCluster:
    env: dict[str, str]
    data: pathlib.Path

    def run(self, *args: str, check: bool = True, stdin: str | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(BIN / "cowpod"), *args], env=self.env, input=stdin, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"cowpod {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    @classmethod
    def up(cls, name: str, *flags: str) -> tuple[CliCluster, subprocess.CompletedProcess[str]]:
        """`cowpod up --detach FLAGS` on a free loopback port, its data in `CLUSTERS/<this
        session's pid>/<name>/` (the clusters of killed sessions are stopped first). The
        caller's fixture uses `vm_images`, so the local images are there; it runs `down()` in a
        `finally` (a cluster that failed to come up is removed here)."""
        if not docker_answers():
            pytest.fail("no Docker engine answers; run scripts/bootstrap.sh")
        sweep_killed_sessions()
        data = CLUSTERS / str(os.getpid()) / name / "data"
        data.parent.mkdir(parents=True)
        c = cls(cli_env(data), data)
        try:
            proc = c.run("up", "--detach", *flags, "--listen", f"127.0.0.1:{free_port()}", timeout=300)
        except BaseException:
            c.down()
            raise
        return c, proc

    def down(self) -> None:
        """`cowpod down --purge`, then the cluster's directory (purge keeps the CLI's config
        file) and the session's once empty."""
        self.run("down", "--purge", check=False, timeout=180)
        shutil.rmtree(self.data.parent, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.data.parent.parent.rmdir()

    def objects(self) -> dict[ObjectKey, bool]:
        """Every object of `KINDS` in the cluster, in all namespaces, and whether it is being
        deleted already."""
        listed = self.json("get", ",".join(KINDS), "-A")
        return {(_PLURAL[i["kind"]], i["metadata"].get("namespace") or "", i["metadata"]["name"]):
                bool(i["metadata"].get("deletionTimestamp")) for i in listed["items"] if i["kind"] in _PLURAL}

    def remove_new(self, before: Iterable[ObjectKey]) -> list[ObjectKey]:
        """Delete every object that is not in `before` (pods at once, VMs with their nodes),
        wait until each is gone, and return those that nobody was deleting yet."""
        left = {k: deleting for k, deleting in self.objects().items() if k not in before}
        for kind in KINDS:
            for _, ns, name in sorted(k for k in left if k[0] == kind):
                where = ["-n", ns] if ns else []
                self.run("delete", kind, name, *where, "--ignore-not-found", "--grace-period", "0", "--wait",
                         "--timeout", "120s", check=False, timeout=180)
        still = set(self.objects()) - set(before)
        if still:
            raise AssertionError(f"could not remove what a test module left in the shared cluster: {still}")
        return sorted(k for k, deleting in left.items() if not deleting)

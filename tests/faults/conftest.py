"""Fixtures for the fault suite: a `make_cluster(**options)` factory of real-process
clusters (tests/faults/cluster.py), each torn down after the test even when it fails."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.faults.cluster import ProcCluster


def _require(ok: bool, msg: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def make_cluster(tmp_path: pathlib.Path) -> Iterator[Callable[..., ProcCluster]]:
    _require(shutil.which("etcd") is not None, "etcd not found: apt-get install etcd-server")
    made: list[ProcCluster] = []

    def make(**options: Any) -> ProcCluster:
        c = ProcCluster(tmp_path / f"c{len(made)}", **options)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.teardown()


@pytest.fixture(scope="session")
def docker_images() -> None:
    """The busybox and pause images the host agents run (built locally, no registry)."""
    _require(shutil.which("docker") is not None, "docker not found")
    if image_present("cowpod/busybox:latest") and image_present("cowpod/pause:latest"):
        return
    from agent.testing import ensure_images

    ensure_images()


def image_present(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0

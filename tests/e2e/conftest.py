"""Fixtures of the tests that run VMs on the real Docker engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from hypervisor.testing import DockerTestEnv, build_images, sweep_test_networks

if TYPE_CHECKING:
    from hypervisor.providers.vsphere.testing import Vcsim


@pytest.fixture(scope="module")
def vm_images() -> None:
    """The busybox, pause and VM images (cached after the first build); test networks
    an earlier, killed run left behind are swept first."""
    sweep_test_networks()
    build_images()


@pytest.fixture
def env(vm_images: None) -> Iterator[DockerTestEnv]:
    """A private cluster id, network and data dir (with its `run/` for the VMs);
    every container, image and network made under it is removed afterwards."""
    e = DockerTestEnv.create()
    (e.data_dir / "run").mkdir()
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture(scope="module")
def vcsim() -> Iterator[Vcsim]:
    """A simulator with InstantClone_Task; its template runs cowpod's VM image."""
    from hypervisor.providers.vsphere.testing import Vcsim

    build_images()
    sim = Vcsim.start()
    try:
        yield sim
    finally:
        sim.stop()

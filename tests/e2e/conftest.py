"""Fixtures of the tests that run VMs on the real Docker engine."""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from hypervisor.testing import DockerTestEnv, build_images, sweep_test_networks
from tests.e2e.cli_cluster import CliCluster

if TYPE_CHECKING:
    from hypervisor.providers.vsphere.testing import Vcsim


@pytest.fixture(scope="session")
def vm_images() -> None:
    """The busybox, pause and VM images (and the qemu guest where QEMU is installed), built
    or confirmed once a session (a check costs seconds: once, not once per module); test
    networks an earlier, killed run left behind are swept first."""
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


# The item after whose teardown no test needs the shared cluster (the last item of the last
# module using it, so that the module's `default_cluster` has cleaned up by then): it is
# stopped there rather than at the end of the session, not to run on beside the integration
# and unit tests.
_LAST_USER = pytest.StashKey[pytest.Item]()
_SHARED = pytest.StashKey[CliCluster]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [n for n, i in enumerate(items) if "shared_cluster" in getattr(i, "fixturenames", ())]
    if not users:
        return
    last = users[-1]
    module = items[last].getparent(pytest.Module)
    while last + 1 < len(items) and items[last + 1].getparent(pytest.Module) is module:
        last += 1
    config.stash[_LAST_USER] = items[last]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None]:
    yield
    if item.config.stash.get(_LAST_USER, None) is item and _SHARED in item.config.stash:
        item.config.stash[_SHARED].down()
        del item.config.stash[_SHARED]


@pytest.fixture(scope="session")
def shared_cluster(request: pytest.FixtureRequest, vm_images: None) -> Iterator[CliCluster]:
    """One default `cowpod up --detach --vms 1` (secure, VM `vm-1`) for the session's e2e
    modules that need nothing else; use it through `default_cluster`, which cleans up after
    each module. Stopped after the last test that uses it."""
    c, up = CliCluster.up("shared", "--vms", "1")
    request.config.stash[_SHARED] = c
    try:
        assert "vm-1" in up.stdout + up.stderr, up
        yield c
    finally:
        if request.config.stash.get(_SHARED, None) is c:
            c.down()
            del request.config.stash[_SHARED]


@pytest.fixture(scope="module")
def default_cluster(request: pytest.FixtureRequest, shared_cluster: CliCluster) -> Iterator[CliCluster]:
    """The session's default cluster for one module. Whatever the module's tests leave in it
    (a failed test's pods, a clone) is deleted when the module ends, so no module sees
    another's objects."""
    before = shared_cluster.objects()
    yield shared_cluster
    left = shared_cluster.remove_new(before)
    if left:
        warnings.warn(f"{request.node.name} left {left} in the shared cluster (now deleted)", stacklevel=1)


@pytest.fixture(scope="module")
def vcsim(vm_images: None) -> Iterator[Vcsim]:
    """A simulator with InstantClone_Task; its template runs cowpod's VM image."""
    from hypervisor.providers.vsphere.testing import Vcsim

    sim = Vcsim.start()
    try:
        yield sim
    finally:
        sim.stop()

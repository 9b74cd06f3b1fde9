"""Shared fixtures. Real parts: an etcd member per test session (tests isolate
by key prefix), and the local Docker engine for e2e tests."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from cowpod.local.etcd import EtcdMember

if TYPE_CHECKING:
    from controller.testing import ControllerRunner
    from cowpod.client import Client


def _require(binary: str, hint: str) -> None:
    # In CI nothing may be skipped silently: a missing binary is a failure.
    if shutil.which(binary) is None:
        msg = f"{binary} not found: {hint}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


# Every process a test session starts inherits this: the pid of the pytest that owns it.
OWNER_ENV = "COWPOD_TEST_OWNER"
os.environ[OWNER_ENV] = str(os.getpid())


def _owner_alive(proc: pathlib.Path) -> bool:
    """Does the pytest session that started this process still run? A member of a
    concurrent session's `cowpod up --detach` cluster is re-parented to init too, but
    its owner is alive."""
    try:
        env = (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    for item in env:
        if item.startswith(OWNER_ENV.encode() + b"="):
            owner = item.split(b"=", 1)[1].decode(errors="replace")
            return owner.isdigit() and pathlib.Path(f"/proc/{owner}").exists()
    return False


def _sweep_orphan_etcds(base: pathlib.Path) -> None:
    """Kill etcd members an earlier, killed test run left: their data dir is under
    pytest's temp base, their parent is gone (they were re-parented to init) and so is
    the pytest session that started them. A concurrent run's members are left alone."""
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid != 1 or not argv or not argv[0].endswith(b"etcd") or b"--data-dir" not in argv:
            continue
        if _owner_alive(proc):
            continue
        data_dir = argv[argv.index(b"--data-dir") + 1].decode(errors="replace")
        if pathlib.Path(data_dir).is_relative_to(base):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    _require("etcd", "apt-get install etcd-server")
    d = tmp_path_factory.mktemp("etcd")
    # pytest's base temp is <tmp>/pytest-of-<user>/pytest-<n>: sweep every run's.
    _sweep_orphan_etcds(tmp_path_factory.getbasetemp().parent)
    member = EtcdMember(data_dir=d / "data", log_path=d / "etcd.log")
    member.start()
    member.wait_ready()
    yield member
    member.stop()


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix private to one test, so tests share one etcd yet never see each other."""
    return f"/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def data_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    d = tmp_path / "cowpod"
    d.mkdir()
    return d


# --- controller (owned by the controller engineer; see controller/testing.py) ---------------------


@pytest.fixture
async def controller(etcd: EtcdMember, etcd_prefix: str) -> AsyncIterator[ControllerRunner]:
    """A controller running in this test's event loop on an ephemeral loopback port, against
    the session etcd under this test's prefix. `.address`, `.stop()`, `.start()`, `.restart()`
    (same port, state kept), `.controller` (the live Controller, e.g. for its store)."""
    from controller.testing import ControllerRunner

    runner = ControllerRunner(etcd.endpoint, etcd_prefix)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()


@pytest.fixture
async def client(controller: ControllerRunner) -> AsyncIterator[Client]:
    """A `cowpod.client.Client` connected to the `controller` fixture."""
    from cowpod.client import Client

    async with Client(controller.address) as c:
        yield c


@pytest.fixture
async def secure_controller(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> AsyncIterator[ControllerRunner]:
    """Like `controller`, with TLS, client certificates, authorization and limits on (a fresh
    cluster PKI in tmp_path/pki). Connect with `.client("admin" | "scheduler" | "transport",
    token=...)` or `.settings(...)`; see docs/security.md."""
    from controller.testing import ControllerRunner

    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki")
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop()

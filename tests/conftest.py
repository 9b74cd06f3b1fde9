"""Shared fixtures. Real parts: an etcd member per test session (tests isolate
by key prefix), and the local Docker engine for e2e tests."""

from __future__ import annotations

import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

import pytest

from cowpod.local.etcd import EtcdMember


def _require(binary: str, hint: str) -> None:
    # In CI nothing may be skipped silently: a missing binary is a failure.
    if shutil.which(binary) is None:
        msg = f"{binary} not found: {hint}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdMember]:
    _require("etcd", "apt-get install etcd-server")
    d = tmp_path_factory.mktemp("etcd")
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

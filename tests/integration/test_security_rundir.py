"""Hole 10 of #15: root in any VM can plant symlinks in `<data-dir>/run/` (mounted
read-write at /run/cowpod), where the controller on the host writes the join bundle
and the join token. Before, it opened `<name>.tmp` with O_TRUNC and followed a
link there to truncate and overwrite any file the controller could write."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest

from controller.testing import ControllerRunner
from cowpod.local.etcd import EtcdMember
from tests.polling import eventually

pytestmark = pytest.mark.integration

PLANTED = ("bootstrap-token", "bootstrap-token.tmp", "ca.crt", "ca.crt.tmp", "transport.key.tmp")


async def test_controller_writes_no_file_through_links_planted_in_the_run_dir(
    etcd: EtcdMember, etcd_prefix: str, tmp_path: pathlib.Path
) -> None:
    data = tmp_path / "data"
    run = data / "run"
    run.mkdir(parents=True)
    victims = tmp_path / "host"
    victims.mkdir()
    for name in PLANTED:
        victim = victims / name
        victim.write_text(f"precious {name}\n")
        (run / name).symlink_to(victim)
    runner = ControllerRunner.secure(etcd.endpoint, etcd_prefix, pki_dir=tmp_path / "pki", data_dir=data)
    await runner.start()
    try:
        token = run / "bootstrap-token"
        await eventually(  # published by the join-token rotation task, replacing the planted link
            lambda: asyncio.to_thread(lambda: not token.is_symlink()), what=f"{token} published"
        )
        for name in ("bootstrap-token", "ca.crt", "transport.crt", "transport.key"):
            path = run / name
            assert not path.is_symlink() and path.is_file(), name
        assert token.read_text().count(".") == 1
        assert os.stat(token).st_mode & 0o777 == 0o600
        assert "BEGIN CERTIFICATE" in (run / "ca.crt").read_text()
        for name in PLANTED:
            assert (victims / name).read_text() == f"precious {name}\n", name
        leftovers = [p.name for p in run.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        assert not leftovers
    finally:
        await runner.stop()

"""Monitor.save_state against a scripted QMP peer: it returns only once QEMU has taken the
source VM out of finish-migrate (a `cont` before that is refused: "Migration is not
finalized yet", seen in CI). The real QEMU runs the same path in tests/e2e/test_qemu_provider.py."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from hypervisor.providers.qemu import qmp
from hypervisor.providers.qemu.qmp import Monitor, MonitorError


class ScriptedQMP:
    """What QEMU 7.2 does around an outgoing migration: the MIGRATION event says completed
    while the run state is still finish-migrate for a few more queries."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.calls: list[str] = []

    def send_fd_scm(self, fd: int) -> None:
        pass

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        self.calls.append(cmd)
        if cmd == "query-status":
            return {"status": self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]}
        return {}

    @contextlib.contextmanager
    def listener(self, names: tuple[str, ...]) -> Iterator[AsyncIterator[dict[str, Any]]]:
        async def events() -> AsyncIterator[dict[str, Any]]:
            for status in ("setup", "active", "device", "completed"):
                yield {"event": "MIGRATION", "data": {"status": status}}

        yield events()


def monitor(peer: ScriptedQMP) -> Monitor:
    mon = Monitor("vm-1")
    mon._qmp = peer  # type: ignore[assignment]
    return mon


async def test_save_state_returns_once_the_vm_left_finish_migrate(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qmp, "_FINALIZE_POLL_S", 0.0)
    peer = ScriptedQMP(["finish-migrate", "finish-migrate", "postmigrate"])
    await monitor(peer).save_state(tmp_path / "state", ignore_shared=True)
    assert peer.calls[-3:] == ["query-status"] * 3 and peer.statuses == ["postmigrate"]


async def test_save_state_says_so_when_the_vm_never_leaves_finish_migrate(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(qmp, "_FINALIZE_POLL_S", 0.0)
    monkeypatch.setattr(qmp, "_FINALIZE_POLLS", 3)
    with pytest.raises(MonitorError, match="stayed in finish-migrate"):
        await monitor(ScriptedQMP(["finish-migrate"])).save_state(tmp_path / "state", ignore_shared=True)

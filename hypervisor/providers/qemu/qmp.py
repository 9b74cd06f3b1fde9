"""QMP for one QEMU process: commands, events, and the two migrations we use.

Everything waits on an event from QEMU (a QMP event, a reply, a pidfd turning
readable), never on a sleep loop:

- `Monitor.connect` dials the QMP socket that the provider bound and handed to
  QEMU (`-chardev socket,fd=N,server=on`), so the socket exists before QEMU
  runs and the dial never races QEMU's start-up.
- `save_state` / `load_state` run an outgoing / incoming migration through a
  file descriptor passed with SCM_RIGHTS (`getfd` + `fd:` URI; QEMU 7.2 has no
  `file:` URI) and wait for the MIGRATION event that says completed or failed.
  The one poll: QEMU takes a source VM out of its finish-migrate run state a
  moment after that event, with no event of its own, and refuses `cont` until
  then; `save_state` asks `query-status` every 5 ms until it has.
- `wait_exit` waits for a process (ours or a re-attached one) to end on a pidfd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

__all__ = ["Monitor", "MonitorError", "pid_alive", "wait_exit"]


# How long `save_state` waits for the VM to leave finish-migrate after the migration completed.
_FINALIZE_POLL_S = 0.005
_FINALIZE_POLLS = 2000  # 10 s


class MonitorError(Exception):
    """QEMU refused a command or the QMP connection broke."""


class Monitor:
    """One QMP connection. QEMU's QMP server takes one client at a time: the
    provider holds one Monitor per running VM and closes it before the process goes."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._qmp = QMPClient(name)

    @staticmethod
    async def connect(name: str, path: pathlib.Path) -> Monitor:
        mon = Monitor(name)
        try:
            await mon._qmp.connect(str(path))
        except (ConnectError, OSError) as err:
            raise MonitorError(f"vm {name!r}: cannot connect to QMP at {path}: {err}") from err
        return mon

    async def close(self) -> None:
        # A process that is already gone leaves the reader at EOF.
        with contextlib.suppress(QMPError, OSError, EOFError):
            await self._qmp.disconnect()

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> Any:
        try:
            return await self._qmp.execute(cmd, dict(args) if args else None)
        except ExecuteError as err:
            raise MonitorError(f"vm {self._name!r}: {cmd}: {err.error.error.desc}") from err
        except (QMPError, OSError) as err:
            raise MonitorError(f"vm {self._name!r}: {cmd}: QMP connection lost ({err})") from err

    async def status(self) -> str:
        """QEMU's run state: running, paused, inmigrate, postmigrate, shutdown, ..."""
        reply = await self.execute("query-status")
        return str(reply["status"])

    async def _send_fd(self, fd: int, fdname: str) -> None:
        self._qmp.send_fd_scm(fd)
        await self.execute("getfd", {"fdname": fdname})

    async def _set_caps(self, ignore_shared: bool) -> None:
        await self.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": "x-ignore-shared", "state": ignore_shared},
            {"capability": "events", "state": True},
        ]})

    async def _until_migrated(self, listener: EventListener) -> None:
        async for ev in listener:
            status = _data(ev).get("status")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise MonitorError(f"vm {self._name!r}: migration {status} (see its qemu.log)")

    async def save_state(self, path: pathlib.Path, *, ignore_shared: bool) -> None:
        """Write the (stopped) VM's device state to `path`.

        With `ignore_shared` the RAM blocks that live in a shared file are left
        out (the file *is* the RAM snapshot) and the state is a few hundred KB;
        without it every non-zero RAM page goes into the state file."""
        await self._set_caps(ignore_shared)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            await self._send_fd(fd, "cowpod-save")
        finally:
            os.close(fd)
        with self._qmp.listener(("MIGRATION",)) as listener:
            await self.execute("migrate", {"uri": "fd:cowpod-save"})
            await self._until_migrated(listener)
        # The migration thread sends "completed" a moment before the VM leaves its
        # finish-migrate run state (under QEMU's big lock, later): a `cont` in that
        # moment is refused with "Migration is not finalized yet".
        for _ in range(_FINALIZE_POLLS):
            if await self.status() != "finish-migrate":
                return
            await asyncio.sleep(_FINALIZE_POLL_S)
        raise MonitorError(f"vm {self._name!r}: migration completed but the VM stayed in finish-migrate")

    async def load_state(self, path: pathlib.Path, *, ignore_shared: bool) -> None:
        """Restore a process started with `-incoming defer` from `path` (it stays paused)."""
        await self._set_caps(ignore_shared)
        fd = os.open(path, os.O_RDONLY)
        try:
            await self._send_fd(fd, "cowpod-load")
        finally:
            os.close(fd)
        with self._qmp.listener(("MIGRATION",)) as listener:
            await self.execute("migrate-incoming", {"uri": "fd:cowpod-load"})
            await self._until_migrated(listener)

    async def freeze_disk(self, device: str, overlay: pathlib.Path) -> None:
        """External snapshot: the disk's current top becomes read-only backing of a new `overlay`."""
        await self.execute("blockdev-snapshot-sync",
                           {"device": device, "snapshot-file": str(overlay), "format": "qcow2"})

    async def stream_disk(self, device: str) -> None:
        """Copy the backing chain into the active overlay and drop it (a live snap free)."""
        job = f"cowpod-stream-{device}"
        with self._qmp.listener(("BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR")) as listener:
            await self.execute("block-stream", {"device": device, "job-id": job})
            async for ev in listener:
                data = _data(ev)
                if data.get("device") != job and data.get("id") != job:
                    continue
                if ev["event"] == "BLOCK_JOB_ERROR" or data.get("error"):
                    raise MonitorError(f"vm {self._name!r}: block-stream failed: {data.get('error', data)}")
                return

    async def until_event(self, names: tuple[str, ...], timeout: float) -> str | None:
        """The first of `names` to arrive within `timeout` seconds, or None."""
        with self._qmp.listener(names) as listener:
            try:
                async with asyncio.timeout(timeout):
                    ev = await listener.get()
                    return str(ev["event"])
            except TimeoutError:
                return None


def pid_alive(pid: int, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (its VM
    directory), so a recycled pid is never mistaken for the VM."""
    if pid <= 0:
        return False
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker.encode() in cmdline


async def wait_exit(pid: int, timeout: float | None = None) -> bool:
    """Wait for process `pid` to end (ours or not) on a pidfd; False on timeout.

    A child of ours is reaped too, so it leaves no zombie."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, ready)
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 -- it has exited: reaping does not block
    return True


def _data(ev: Mapping[str, object]) -> dict[str, Any]:
    data = ev.get("data")
    return dict(data) if isinstance(data, Mapping) else {}

"""Child processes of a local cluster: is this pid still ours, and stop it politely.

`down` may run long after `up` exited, so it only has pids from cluster.json.
A pid can be reused by an unrelated process; before signalling, we check that
the process's command line is the one we started. Only those pids are ever
signalled.
"""

from __future__ import annotations

import os
import pathlib
import signal
from collections.abc import Sequence

from cowpod.clock import Clock


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def stat_state(stat: pathlib.Path) -> str:
    """The state letter (R, S, D, T, Z, ...) in a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat`
    file; raises OSError when it cannot be read. It follows the parenthesised command name,
    which may contain spaces."""
    return stat.read_text().rpartition(")")[2].split()[0]


def _is_zombie(pid: int) -> bool:
    try:
        return stat_state(pathlib.Path(f"/proc/{pid}/stat")) in ("Z", "X")
    except OSError:
        return True


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def matches(actual: Sequence[str], expected: Sequence[str]) -> bool:
    """Is `actual` (from /proc) the process started as `expected`?

    A console script runs as `python /venv/bin/cowpod-controller ARGS`, so the
    program may appear as the first or second word; the arguments must match.
    """
    if not actual or not expected:
        return False
    program = os.path.basename(expected[0])
    args = list(expected[1:])
    heads = [os.path.basename(a) for a in actual[:2]]
    if program not in heads:
        return False
    return list(actual[len(actual) - len(args) :]) == args if args else True


def is_ours(pid: int, expected: Sequence[str]) -> bool:
    if not pid_alive(pid):
        return False
    actual = cmdline(pid)
    return actual is not None and matches(actual, expected)


async def terminate(pid: int, expected: Sequence[str], clock: Clock, *, grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds. False if it was not running (or not ours)."""
    if not is_ours(pid, expected):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = clock.monotonic() + grace
    while clock.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return True
        await clock.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(50):
        if not pid_alive(pid):
            break
        await clock.sleep(0.1)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process was our own child (foreground `up`)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def exists(pid: int) -> bool:
    """Alive or a zombie: the pid still names a process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def wait_gone(pids: Sequence[int], clock: Clock, *, timeout: float = 15.0) -> list[int]:
    """Wait until the pids name no process at all, zombies included; returns those left.

    A stopped component of a detached cluster is an orphan whose exit status
    only init collects; until it does, the pid still exists. `down` waits for
    that, so "stopped" means the pids are gone.
    """
    for pid in pids:
        _reap(pid)
    deadline = clock.monotonic() + timeout
    left = [p for p in pids if exists(p)]
    while left and clock.monotonic() < deadline:
        await clock.sleep(0.1)
        for pid in left:
            _reap(pid)
        left = [p for p in left if exists(p)]
    return left

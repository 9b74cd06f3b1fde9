"""What runs after the zygote forks: enter the container, become a new process, run the payload.

    zygote ──fork──► child ──(cgroups, setns ipc/uts/net/cgroup/pid/mnt, chroot)──fork──► grandchild
                       │                                                             │
                       └─ reports grandchild's host pid, exits                       └─ resets identity,
                          (grandchild re-parents to the zygote,                         reports its pid in
                           a child subreaper, which reaps it)                           the container, runs
                                                                                        the entrypoint

The second fork is needed because `setns(CLONE_NEWPID)` only applies to the
caller's future children. Both processes report over one pipe as
newline-delimited JSON; each message is far below PIPE_BUF, so writes are
atomic. Nothing here may return into the zygote's code: every path ends in
`os._exit`, so the zygote's atexit handlers, finalizers and buffered output
never run twice.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from hypervisor.providers.docker import nsenter
from hypervisor.providers.docker.zygote_protocol import ForkRequest

Entrypoint = Callable[[list[str]], int | None]

# Exit codes of a child that failed before its entrypoint ran (the message
# went to the zygote over the report pipe).
EXIT_SETUP_FAILED = 120

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ChildPlan:
    """Everything the forked child needs, prepared by the zygote before fork.

    The zygote does every lookup that needs the host's view (/proc of the
    target, its environment and capabilities) and every import, so that the
    child, once inside the container, touches nothing of the host's.
    """

    request: ForkRequest
    handle: nsenter.ContainerHandle
    entry: Entrypoint
    entry_name: str
    base_env: Mapping[str, str]
    capabilities: nsenter.Capabilities | None
    cap_last_cap: int
    log_path: str
    report_fd: int


def resolve_entrypoint(spec: str) -> Entrypoint:
    """Import `module:function` (in the zygote, so the import is shared with every clone)."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"entrypoint: must be 'module:function', got {spec!r}")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in func_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"entrypoint: {module_name} has no attribute {func_name!r}")
    if not callable(obj):
        raise ValueError(f"entrypoint: {spec} is not callable")
    fn: Entrypoint = obj
    return fn


def read_environ(pid: int, *, proc: str = "/proc") -> dict[str, str]:
    """The environment the container's init was started with (what `docker exec` would give)."""
    with open(f"{proc}/{pid}/environ", "rb") as f:
        raw = f.read()
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def _report(fd: int, msg: Mapping[str, Any]) -> None:
    data = (json.dumps(msg) + "\n").encode()
    try:
        os.write(fd, data)
    except OSError:
        pass  # the zygote gave up on us; the exit status still tells it


def _reset_signals() -> None:
    """The zygote's handlers and wakeup fd belong to the zygote, not to a clone."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the Python interpreter starts
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def run_child(plan: ChildPlan) -> NoReturn:
    """In the zygote's direct child: join the container, fork the real clone, exit."""
    stage = "reset signals"
    try:
        _reset_signals()
        stage = "move into the target's cgroups"
        nsenter.move_to_cgroups(os.getpid(), plan.handle.cgroups)
        stage = "join the target's namespaces"
        nsenter.join_namespaces(plan.handle, chroot=True)
        stage = "fork into the pid namespace"
        pid = os.fork()
    except BaseException as e:
        _report(plan.report_fd, {"error": f"{stage}: {e}"})
        os._exit(EXIT_SETUP_FAILED)
    if pid == 0:
        run_grandchild(plan)
    _report(plan.report_fd, {"pid": pid})
    os._exit(0)


def _redirect_stdio(log_path: str) -> None:
    os.makedirs(os.path.dirname(log_path) or "/", exist_ok=True)
    out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def _close_inherited_fds(keep: int) -> None:
    """Close everything the zygote had open (its socket, other requests' pipes...)."""
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 20)


def _reset_identity(plan: ChildPlan) -> None:
    req = plan.request
    # Environment: the container's own (as docker exec does), then the request's.
    os.environ.clear()
    os.environ.update(plan.base_env)
    os.environ.update(req.env)
    os.environ.setdefault("PATH", _DEFAULT_PATH)
    os.environ["HOSTNAME"] = socket.gethostname()  # the container's uts namespace now
    sys.argv = [req.name or plan.entry_name, *req.argv]
    if req.sys_path is not None:
        sys.path[:] = list(req.sys_path)
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
    # Random state: the zygote's would be identical in every clone. `random`
    # reseeds itself after fork already; do it explicitly for other holders.
    import random

    random.seed(os.urandom(32))
    ssl = sys.modules.get("ssl")
    if ssl is not None:
        ssl.RAND_add(os.urandom(32), 32.0)
    platform = sys.modules.get("platform")
    if platform is not None:
        platform._uname_cache = None  # type: ignore[attr-defined]  # node name of the zygote
    # Logging handlers are the zygote's; the entrypoint configures its own.
    logging.root.handlers.clear()
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        asyncio.set_event_loop_policy(None)
    os.umask(0o022)


def run_grandchild(plan: ChildPlan) -> NoReturn:
    """In the container's pid namespace: become a fresh process, then run the entrypoint."""
    req = plan.request
    stage = "start"
    try:
        ns_pid = os.getpid()
        stage = f"open log file {plan.log_path}"
        _redirect_stdio(plan.log_path)
        stage = f"chdir to {req.cwd}"
        os.chdir(req.cwd)
        stage = "close inherited fds"
        _close_inherited_fds(plan.report_fd)
        stage = "reset identity"
        _reset_identity(plan)
        # Only comm can change here: rewriting /proc/PID/cmdline (PR_SET_MM) needs
        # CAP_SYS_RESOURCE, so `docker top` shows the zygote's command line.
        nsenter.set_process_name(req.name or "cowpod-clone")
        if req.match_capabilities and plan.capabilities is not None:
            stage = "match the container's capabilities"
            nsenter.match_capabilities(plan.capabilities, plan.cap_last_cap)
    except BaseException as e:
        _report(plan.report_fd, {"error": f"{stage}: {e}"})
        os._exit(EXIT_SETUP_FAILED)
    _report(plan.report_fd, {"ns_pid": ns_pid})
    os.close(plan.report_fd)
    code: int = 0
    try:
        result = plan.entry(list(req.argv))
        code = int(result or 0)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code & 0xFF)

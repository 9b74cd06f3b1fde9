"""One vCenter session for the provider: pyVmomi behind a small async surface.

pyVmomi is synchronous and keeps one HTTP session per service instance, so:

- every call runs on a ThreadPoolExecutor of `workers` threads, never on the
  event loop, and that pool bounds how many calls are in flight;
- a call that fails with NotAuthenticated (the session expired, vCenter
  restarted) logs in again once and is repeated; only one thread logs in;
- idempotent calls (reads, task waits) are retried on transient faults
  (connection lost, HostCommunication, TaskInProgress) with doubling back-off
  on the injected clock; a call that starts a task is not, since its first
  attempt may have landed;
- a task is awaited with the property collector (WaitForUpdatesEx on a
  collector of its own, so waits on several threads do not share a version
  stream), not by polling `task.info`.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pyVim import connect as _connect
from pyVmomi import VmomiSupport
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock
from cowpod.errors import FailedPrecondition, Unavailable
from hypervisor.providers.vsphere.settings import VSphereSettings

# pyVmomi's stubs cover part of the API (no data-object constructors, several
# faults missing); its types are built at run time, so they are Any here.
connect: Any = _connect
vim: Any = _vim
vmodl: Any = _vmodl

log = logging.getLogger(__name__)

T = TypeVar("T")

# Fault fields every fault has; the rest say what went wrong.
_BASE_FAULT_FIELDS = frozenset({"msg", "faultCause", "faultMessage", "dynamicType", "dynamicProperty"})


class TaskFault(FailedPrecondition):
    """A vSphere task (or call) ended in a fault; `fault` is pyVmomi's object.

    A FailedPrecondition, so the VM manager marks the VM Failed with this text."""

    def __init__(self, what: str, fault: Any) -> None:
        self.fault = fault
        self.what = what
        super().__init__(f"{what}: {fault_text(fault)}")


def fault_text(fault: Any) -> str:
    """One line for a vSphere fault: its name, its message, and its own fields.

    vcsim's messages are Go type names ("*types.InvalidPowerState"), so the
    fault's own fields (existingState=poweredOn) carry the meaning there."""
    name = str(getattr(fault, "_wsdlName", "") or type(fault).__name__)
    msg = str(getattr(fault, "msg", "") or "")
    if msg.startswith("*types."):
        msg = ""
    fields: list[str] = []
    props = getattr(fault, "_GetPropertyList", None)
    if props is not None:
        for prop in props():
            if prop.name in _BASE_FAULT_FIELDS:
                continue
            value = getattr(fault, prop.name, None)
            if value is None or (isinstance(value, (str, list)) and not value):
                continue
            fields.append(f"{prop.name}={getattr(value, '_moId', value)}")
    text = name
    if msg:
        text += f": {msg}"
    if fields:
        text += f" ({', '.join(fields)})"
    return text


class ThumbprintMismatch(Exception):
    pass


def check_thumbprint(host: str, port: int, expected: str) -> None:
    """Raise ThumbprintMismatch unless the server's certificate has this SHA-1/SHA-256 fingerprint."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=30) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True) or b""
    want = expected.replace(":", "").lower()
    got = (hashlib.sha1(der) if len(want) == 40 else hashlib.sha256(der)).hexdigest()
    if got != want:
        raise ThumbprintMismatch(f"the server's certificate has fingerprint {got}")


def is_transient(err: BaseException) -> bool:
    """A fault that a later identical call may not meet."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return False
    if isinstance(err, (ConnectionError, TimeoutError, http.client.HTTPException)):
        return True
    return isinstance(err, (vmodl.fault.HostCommunication, vim.fault.TaskInProgress))


class VC:
    """The service instance and content of one login. Managed objects are
    bound to the login that fetched them; `bind` moves one to this login, so
    objects kept across a re-login (the folder, the pool) keep working."""

    def __init__(self, si: Any, content: Any) -> None:
        self.si = si
        self.content = content

    def bind(self, obj: Any) -> Any:
        return type(obj)(obj._moId, self.si._stub)


class Session:
    """A logged-in vCenter session shared by the provider's calls (see the module docstring)."""

    def __init__(self, settings: VSphereSettings, password: str, clock: Clock) -> None:
        self.settings = settings
        self._password = password
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="vsphere")
        self._login = threading.Lock()
        self._vc: VC | None = None
        # Bumped at each login, so a thread that saw an expired session logs in
        # again only if nobody did since.
        self._generation = 0
        self._closed = False

    # ---- connection (worker threads) ------------------------------------------

    def _connect_sync(self) -> Any:
        s = self.settings
        kwargs: dict[str, Any] = {}
        if s.url.scheme == "https":
            if s.insecure:
                kwargs["disableSslCertValidation"] = True
            elif s.thumbprint:
                # pyVmomi checks a pinned thumbprint only on its login connection
                # and only when the chain does not verify, after it negotiated the
                # API version over an unpinned one; so the pin is checked here,
                # on a connection of its own, before anything is sent.
                check_thumbprint(s.host, s.port, s.thumbprint)
                kwargs["disableSslCertValidation"] = True
            else:
                # Always a context of our own: without one, pyVmomi skips
                # verification for localhost and 127.0.0.1 on its own.
                kwargs["sslContext"] = ssl.create_default_context(cafile=s.ca_file or None)
        return connect.SmartConnect(
            protocol=s.url.scheme, host=s.host, port=s.port, path=s.url.path or "/sdk",
            user=s.username, pwd=self._password, **kwargs,
        )

    def api_sync(self) -> VC:
        with self._login:
            if self._vc is None:
                si = self._connect_sync()
                self._vc = VC(si, si.RetrieveContent())
                self._generation += 1
            return self._vc

    def _relogin_sync(self, seen: int) -> None:
        with self._login:
            if self._generation != seen:
                return
            log.warning("vCenter session at %s expired: logging in again", self.settings.host)
            old, self._vc = self._vc, None
            if old is not None:
                try:
                    connect.Disconnect(old.si)
                except Exception:
                    pass
            si = self._connect_sync()
            self._vc = VC(si, si.RetrieveContent())
            self._generation += 1

    def call_sync(self, fn: Callable[[VC], T]) -> T:
        """Run `fn(vc)`; log in again once if the session expired."""
        vc = self.api_sync()
        seen = self._generation
        try:
            return fn(vc)
        except vim.fault.NotAuthenticated:
            self._relogin_sync(seen)
            return fn(self.api_sync())

    # ---- the async surface ----------------------------------------------------

    async def run(self, fn: Callable[[VC], T], *, idempotent: bool = True) -> T:
        """`fn(vc)` on a worker thread, retried on transient faults when idempotent."""
        loop = asyncio.get_running_loop()
        # Transient vCenter faults: 0.5 s, doubling up to 10 s.
        retry = Retry(Backoff(initial=0.5, cap=10.0), self._clock)
        attempt = 0
        while True:
            try:
                return await loop.run_in_executor(self._pool, self.call_sync, fn)
            except Exception as err:
                if not is_transient(err):
                    raise
                if not idempotent or attempt >= self.settings.retries:
                    raise Unavailable(f"vCenter {self.settings.host}: {err}") from err
                attempt += 1
                delay = retry.next_delay()
                log.warning("vCenter %s: %s; retry %d in %.1fs", self.settings.host, err, attempt, delay)
                await self._clock.sleep(delay)

    async def start_task(self, what: str, start: Callable[[VC], Any]) -> Any:
        """Start a task (`start(vc)` returns it), wait for it, return its result.

        Starting is not retried (it may have landed); waiting is."""
        try:
            task = await self.run(start, idempotent=False)
        except vmodl.MethodFault as fault:
            raise TaskFault(what, fault) from None
        return await self.run(lambda vc: self.wait_task_sync(vc, task, what))

    def wait_task_sync(self, vc: VC, task: Any, what: str) -> Any:
        """Block until `task` ends: its result (bound to `vc`), or TaskFault with its fault."""
        task = vc.bind(task)
        pc = vc.content.propertyCollector.CreatePropertyCollector()
        try:
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
                propSet=[vmodl.query.PropertyCollector.PropertySpec(
                    type=vim.Task, pathSet=["info.state", "info.error", "info.result"])],
            )
            pc.CreateFilter(spec, partialUpdates=True)
            deadline = time.monotonic() + self.settings.task_timeout_s
            version = ""
            seen: dict[str, Any] = {}
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FailedPrecondition(f"{what}: task {task._moId} still running after "
                                             f"{self.settings.task_timeout_s:.0f}s")
                opts = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=max(1, min(int(left), 60)))
                update = pc.WaitForUpdatesEx(version, opts)
                if update is None:
                    continue
                version = update.version
                for fs in update.filterSet or []:
                    for obj in fs.objectSet or []:
                        for change in obj.changeSet or []:
                            seen[change.name] = change.val
                state = seen.get("info.state")
                if state == vim.TaskInfo.State.success:
                    result = seen.get("info.result")
                    return vc.bind(result) if isinstance(result, VmomiSupport.ManagedObject) else result
                if state == vim.TaskInfo.State.error:
                    raise TaskFault(what, seen.get("info.error"))
        finally:
            try:
                pc.DestroyPropertyCollector()
            except Exception:
                pass

    async def close(self) -> None:
        def logout() -> None:
            with self._login:
                if self._vc is not None:
                    try:
                        connect.Disconnect(self._vc.si)
                    finally:
                        self._vc = None

        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, logout)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

"""Liveness, readiness and startup probes.

One `ProbeWorker` per (container instance, probe kind), like kubelet's
prober workers. It waits `initialDelaySeconds`, then checks every
`periodSeconds` (each check bounded by `timeoutSeconds`), counts consecutive
successes and failures against the thresholds, and reports a verdict only
when it changes:

    startup    success -> started        failures -> unhealthy (restart)
    liveness   failures -> unhealthy (restart)
    readiness  success -> ready          failures -> not ready

Liveness and readiness wait for the startup probe. All waiting goes through
the injected Clock, so unit tests drive probes without sleeping.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.metrics import AgentMetrics
from agent.runtime import Runtime
from cowpod.clock import Clock
from cowpod.v1 import pod_pb2


class ProbeKind(enum.StrEnum):
    STARTUP = "Startup"
    LIVENESS = "Liveness"
    READINESS = "Readiness"


@dataclass(frozen=True)
class Settings:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int


def settings(p: pod_pb2.Probe, kind: ProbeKind) -> Settings:
    success = p.success_threshold or 1
    if kind != ProbeKind.READINESS:
        success = 1  # as Kubernetes requires for liveness and startup
    return Settings(
        initial_delay=float(max(p.initial_delay_seconds, 0)),
        period=float(p.period_seconds or 10),
        timeout=float(p.timeout_seconds or 1),
        success_threshold=success,
        failure_threshold=p.failure_threshold or 3,
    )


@dataclass(frozen=True)
class Target:
    container_id: str
    pod_ip: str


class Prober:
    """Runs one check: exec in the container, TCP connect, or HTTP GET."""

    def __init__(self, runtime: Runtime, metrics: AgentMetrics | None = None) -> None:
        self._runtime = runtime
        self.metrics = metrics  # probe workers count their results here

    async def run_handler(self, h: pod_pb2.LifecycleHandler, target: Target, timeout: float,
                          clock: Clock) -> tuple[bool, str]:
        """A postStart or preStop handler: exec, httpGet and tcpSocket run as a probe's do (a
        non-2xx/3xx answer or a refused connection fails the hook); sleep waits on `clock`,
        at most `timeout` (the grace period bounds a preStop sleep)."""
        if h.HasField("sleep"):
            await clock.sleep(float(min(max(h.sleep.seconds, 0), timeout)))
            return True, ""
        return await self.check(h, target, timeout)

    async def check(self, p: pod_pb2.Probe | pod_pb2.LifecycleHandler, target: Target,
                    timeout: float) -> tuple[bool, str]:
        try:
            return await asyncio.wait_for(self._check(p, target, timeout), timeout)
        except TimeoutError:
            return False, f"timed out after {timeout:g}s"
        except OSError as err:
            return False, str(err) or type(err).__name__
        except Exception as err:
            return False, f"probe error: {err}"

    async def _check(self, p: pod_pb2.Probe | pod_pb2.LifecycleHandler, target: Target,
                     timeout: float) -> tuple[bool, str]:
        if p.HasField("exec"):
            res = await self._runtime.exec(target.container_id, list(p.exec.command), timeout=timeout)
            if res.exit_code == 0:
                return True, ""
            out = (res.stdout + res.stderr).decode(errors="replace").strip()
            return False, f"command {list(p.exec.command)} exited with {res.exit_code}: {out[:200]}"
        if p.HasField("tcp_socket"):
            host = p.tcp_socket.host or target.pod_ip or "127.0.0.1"
            _, writer = await asyncio.open_connection(host, p.tcp_socket.port)
            writer.close()
            await writer.wait_closed()
            return True, ""
        if p.HasField("http_get"):
            return await _http_get(p.http_get, target.pod_ip)
        return False, "probe has no handler (exec, tcpSocket or httpGet)"


async def _http_get(h: pod_pb2.HTTPGetAction, pod_ip: str) -> tuple[bool, str]:
    host = h.host or pod_ip or "127.0.0.1"
    path = h.path or "/"
    ctx = None
    if (h.scheme or "HTTP").upper() == "HTTPS":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, h.port, ssl=ctx)
    try:
        headers = {
            "Host": f"{host}:{h.port}",
            "User-Agent": "cowpod-probe/1.0",
            "Accept": "*/*",
            "Connection": "close",
        }
        for hd in h.http_headers:
            headers[hd.name] = hd.value
        req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(req.encode())
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    parts = line.decode(errors="replace").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"bad HTTP response: {line[:80]!r}"
    code = int(parts[1])
    if 200 <= code < 400:
        return True, ""
    return False, f"HTTP probe failed with statuscode: {code}"


Verdict = Callable[[ProbeKind, str, bool, str], Awaitable[None]]
"""Called with (kind, container id, ok, message) when a verdict changes."""

Failure = Callable[[ProbeKind, str, str], None]
"""Called with (kind, container id, message) on every failed check (for events)."""


class ProbeWorker:
    def __init__(
        self,
        kind: ProbeKind,
        probe: pod_pb2.Probe,
        target: Target,
        prober: Prober,
        clock: Clock,
        on_verdict: Verdict,
        on_failure: Failure,
        started: asyncio.Event | None = None,
    ) -> None:
        self.kind = kind
        self.probe = probe
        self.target = target
        self.s = settings(probe, kind)
        self._prober = prober
        self._clock = clock
        self._on_verdict = on_verdict
        self._on_failure = on_failure
        # Set once the startup probe passed; liveness/readiness wait on it.
        self._started = started

    async def run(self) -> None:
        if self._started is not None and self.kind != ProbeKind.STARTUP:
            await self._started.wait()
        if self.s.initial_delay:
            await self._clock.sleep(self.s.initial_delay)
        successes = failures = 0
        verdict: bool | None = None
        while True:
            ok, msg = await self._prober.check(self.probe, self.target, self.s.timeout)
            if self._prober.metrics is not None:
                self._prober.metrics.probed(self.kind.value.lower(), ok)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self._on_failure(self.kind, self.target.container_id, msg)
            new = verdict
            if ok and successes >= self.s.success_threshold:
                new = True
            elif not ok and failures >= self.s.failure_threshold:
                new = False
            if new is not None and new != verdict:
                verdict = new
                await self._on_verdict(self.kind, self.target.container_id, new, msg)
                if self.kind == ProbeKind.STARTUP and new:
                    return  # done: liveness/readiness take over
                if self.kind != ProbeKind.READINESS and not new:
                    return  # the container will be restarted; a new worker follows
            await self._clock.sleep(self.s.period)

"""The agent's /metrics: scraped over loopback HTTP while the whole agent runs on fakes."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

from prometheus_client.parser import text_string_to_metric_families

from tests.unit.agent.fakes import container, pod
from tests.unit.agent.test_agent import Env, make_env


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_agent_metrics_exist_and_move(tmp_path: pathlib.Path) -> None:
    env: Env = make_env(tmp_path, metrics_listen="127.0.0.1:0")
    await env.start()
    try:
        port = env.agent.metrics_port
        assert port
        before = await scrape(port)
        assert value(before, "cowpod_agent_pods", phase="Running") == 0
        assert value(before, "cowpod_agent_container_starts_total", kind="app") == 0

        c = container("app", "img")
        c.readiness_probe.exec.command.extend(["ok"])
        c.readiness_probe.period_seconds = 1
        env.cp.put(pod("web", c))
        env.cp.put(pod("crashy", container("app", "crash")))
        await env.until(lambda: env.status("web").phase == "Running" and env.app("web").ready)
        await env.until(lambda: env.app("crashy").restart_count >= 1)

        env.cp.heartbeat = _failing_heartbeat  # type: ignore[method-assign]
        await env.clock.advance(12)  # one heartbeat period
        await env.until(lambda: env.agent.metrics.heartbeat_failures._value.get() >= 1)

        after = await scrape(port)
        assert value(after, "cowpod_agent_pods", phase="Running") >= 1
        assert value(after, "cowpod_agent_container_starts_total", kind="app") >= 3  # web, crashy twice
        assert value(after, "cowpod_agent_container_starts_total", kind="sandbox") == 2
        assert value(after, "cowpod_agent_container_restarts_total", kind="app") >= 1
        assert value(after, "cowpod_agent_probe_results_total", probe="readiness", result="success") >= 1
        assert value(after, "cowpod_agent_status_writes_total", result="ok") >= 2
        assert value(after, "cowpod_agent_heartbeat_failures_total") >= 1
        assert value(after, "cowpod_agent_heartbeats_total", result="error") >= 1
    finally:
        with contextlib.suppress(Exception):
            await env.stop()


async def _failing_heartbeat(node_name: str, status: object) -> bool:
    raise ConnectionError("controller down")

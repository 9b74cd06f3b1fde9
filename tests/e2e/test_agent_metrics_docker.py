"""The Docker runtime times every Engine API call into the agent's metrics."""

from __future__ import annotations

import pytest

from agent.metrics import AgentMetrics
from agent.runtime_docker import DockerRuntime

pytestmark = pytest.mark.e2e


async def test_docker_calls_are_timed_by_call_and_outcome() -> None:
    m = AgentMetrics()
    rt = DockerRuntime("metrics-test-node", metrics=m)
    try:
        assert await rt.version()
        await rt.list_containers(pod_uid="no-such-pod")
        assert not await rt.is_running("cowpod-no-such-container")
    finally:
        await rt.close()

    def count(call: str, outcome: str) -> float:
        v = m.registry.get_sample_value(
            "cowpod_agent_docker_call_seconds_count", {"call": call, "outcome": outcome}
        )
        return v or 0.0

    assert count("version", "ok") == 1
    assert count("list", "ok") == 1
    assert count("is_running", "ok") + count("is_running", "error") == 1
    assert b'cowpod_agent_docker_call_seconds_bucket{call="version"' in m.render()

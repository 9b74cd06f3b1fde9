"""The agent proxy's channel cache (issue #15, hole 7): one channel per (endpoint, node),
so a node advertising another's endpoint cannot share (and poison) its channel, and a
bounded number of them, so nodes writing endless endpoints cannot exhaust the controller."""

from __future__ import annotations

from typing import Any

from controller.agent_proxy import AgentProxy
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2


class Objects:
    """`Resource.get` over a dict: enough of the store for the proxy."""

    def __init__(self, items: dict[str, Any]) -> None:
        self.items = items

    async def get(self, namespace: str, name: str) -> Any:
        return self.items[name]


def pod(name: str, node: str) -> pod_pb2.Pod:
    p = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(name=name, namespace="default"))
    p.spec.node_name = node
    return p


def node(name: str, endpoint: str) -> node_pb2.Node:
    n = node_pb2.Node(metadata=meta_pb2.ObjectMeta(name=name))
    n.status.daemon_endpoint = endpoint
    return n


async def test_channels_are_per_endpoint_and_node_and_bounded() -> None:
    pods = Objects({f"p{i}": pod(f"p{i}", f"n{i}") for i in range(5)})
    # Every node claims the same endpoint.
    nodes = Objects({f"n{i}": node(f"n{i}", "127.0.0.1:1") for i in range(5)})
    proxy = AgentProxy(pods, nodes, max_channels=3)  # type: ignore[arg-type]
    try:
        await proxy._stub("default", "p0")
        await proxy._stub("default", "p1")
        assert set(proxy._channels) == {("127.0.0.1:1", "n0"), ("127.0.0.1:1", "n1")}
        for i in range(5):
            await proxy._stub("default", f"p{i}")
        assert list(proxy._channels) == [("127.0.0.1:1", "n2"), ("127.0.0.1:1", "n3"), ("127.0.0.1:1", "n4")]
    finally:
        await proxy.close()

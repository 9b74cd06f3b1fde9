"""Logs and exec reach a pod's agent through the controller: pod -> node ->
node.status.daemonEndpoint -> AgentService. A CLI user never needs a VM's address.

Channels are cached per (endpoint, node): a secure channel verifies the agent's
serving certificate against the node's name, so a node advertising another
node's endpoint gets a channel of its own that fails the handshake, and the
other node's channel is untouched. A node can write any endpoint into its
status, so the cache is bounded (least recently used channels are closed).
The agent's own status codes pass through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator

import grpc

from controller.resource import Resource
from cowpod.errors import CowpodError, FailedPrecondition, Invalid, NotFound, Unavailable
from cowpod.v1 import agent_pb2_grpc, node_pb2, pod_pb2


class AgentError(CowpodError):
    """An error the agent answered with, passed through with its own code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# Channels kept open at once; one per node in a healthy cluster.
MAX_CHANNELS = 1024


class AgentProxy:
    def __init__(self, pods: Resource[pod_pb2.Pod], nodes: Resource[node_pb2.Node],
                 *, connect_timeout: float = 5.0, max_channels: int = MAX_CHANNELS) -> None:
        self.pods = pods
        self.nodes = nodes
        self.connect_timeout = connect_timeout
        self.max_channels = max_channels
        self._channels: OrderedDict[tuple[str, str], grpc.aio.Channel] = OrderedDict()
        # Set by a secure controller: TLS as system:controller, verifying the agent's node certificate.
        self.credentials: grpc.ChannelCredentials | None = None

    async def _stub(self, namespace: str, name: str) -> tuple[agent_pb2_grpc.AgentServiceStub, str]:
        pod = await self.pods.get(namespace, name)
        node_name = pod.spec.node_name
        q = f"{pod.metadata.namespace}/{name}"
        if not node_name:
            raise FailedPrecondition(f'pods "{q}" is not bound to a node yet; nothing runs it')
        try:
            node = await self.nodes.get("", node_name)
        except NotFound:
            raise NotFound(f'pods "{q}": its node "{node_name}" no longer exists') from None
        endpoint = node.status.daemon_endpoint
        if not endpoint:
            raise Unavailable(f'node "{node_name}" has not advertised an agent endpoint '
                              "(status.daemonEndpoint is empty)")
        ch = await self._channel(endpoint, node_name)
        return agent_pb2_grpc.AgentServiceStub(ch), f'agent of node "{node_name}" at {endpoint}'

    async def _channel(self, endpoint: str, node_name: str) -> grpc.aio.Channel:
        key = (endpoint, node_name)
        ch = self._channels.get(key)
        if ch is not None:
            self._channels.move_to_end(key)
            return ch
        if self.credentials is not None:
            ch = grpc.aio.secure_channel(
                endpoint, self.credentials, options=[("grpc.ssl_target_name_override", node_name)]
            )
        else:
            ch = grpc.aio.insecure_channel(endpoint)
        self._channels[key] = ch
        while len(self._channels) > self.max_channels:
            _, old = self._channels.popitem(last=False)
            # A grace period lets a call still using the evicted channel finish.
            await old.close(grace=self.connect_timeout)
        return ch

    @staticmethod
    def _translate(err: grpc.aio.AioRpcError, where: str) -> CowpodError:
        code = err.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return Unavailable(f"{where} unreachable: {err.details()}")
        return AgentError(code, err.details() or code.name)

    async def logs(self, req: pod_pb2.LogsRequest) -> AsyncIterator[pod_pb2.LogChunk]:
        stub, where = await self._stub(req.pod.namespace, req.pod.name)
        try:
            async for chunk in stub.Logs(req, wait_for_ready=False):
                yield chunk
        except grpc.aio.AioRpcError as err:
            raise self._translate(err, where) from None

    async def exec(self, req: pod_pb2.ExecRequest, timeout: float | None) -> pod_pb2.ExecResponse:
        stub, where = await self._stub(req.pod.namespace, req.pod.name)
        try:
            resp: pod_pb2.ExecResponse = await stub.Exec(req, timeout=timeout, wait_for_ready=False)
            return resp
        except grpc.aio.AioRpcError as err:
            raise self._translate(err, where) from None

    async def exec_stream(self, requests: AsyncIterator[pod_pb2.ExecStreamRequest],
                          ) -> AsyncIterator[pod_pb2.ExecStreamResponse]:
        """Relay an interactive exec: the first message names the pod, hence the agent."""
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("start"):
            raise Invalid("start", "the first message says what to run")
        stub, where = await self._stub(first.start.pod.namespace, first.start.pod.name)

        async def upstream() -> AsyncIterator[pod_pb2.ExecStreamRequest]:
            yield first
            async for msg in requests:
                yield msg

        try:
            async for resp in stub.ExecStream(upstream(), wait_for_ready=False):
                yield resp
        except grpc.aio.AioRpcError as err:
            raise self._translate(err, where) from None

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()



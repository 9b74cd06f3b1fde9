"""The agent's view of the controller: the few calls it makes, as a Protocol
with a gRPC implementation over `cowpod.client.Client` (unit tests use an
in-memory fake). gRPC errors are turned into outcomes here, once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc

from agent.leasestream import LeaseRenewer
from cowpod.client import Client
from cowpod.configrefs import RefKind
from cowpod.errors import NotFound, rpc_code
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, pod_pb2

log = logging.getLogger(__name__)


class ControlPlane(Protocol):
    async def register(self, node: node_pb2.Node) -> node_pb2.Node: ...

    async def heartbeat(self, node_name: str, status: node_pb2.NodeStatus | None) -> bool:
        """Renew the node's lease, and refresh its status when one is given. False when the
        controller no longer knows the node (re-register)."""

    async def update_pod_status(self, pod: pod_pb2.Pod) -> pod_pb2.Pod | None:
        """None when the pod is gone."""

    async def finalize_pod(self, namespace: str, name: str, uid: str, resource_version: int) -> None:
        """Remove the pod object now that its containers are gone; a pod
        already gone, or replaced by another of the same name, is left be."""

    async def create_event(self, event: event_pb2.Event) -> None: ...

    def pod_watch(self) -> Callable[..., Any]:
        """The Watch callable an Informer drives."""

    async def get_config(self, kind: RefKind, namespace: str, name: str) -> Mapping[str, bytes] | None:
        """A ConfigMap's (data and binaryData) or Secret's data; None when it does not exist.
        The controller answers only for objects a pod bound to this node references."""


class GrpcControlPlane:
    def __init__(self, client: Client) -> None:
        self.client = client
        # Heartbeats go over NodeService.HeartbeatStream, or the unary call against a
        # controller that predates it (agent/leasestream.py).
        self.leases = LeaseRenewer(client.nodes, self._unary_heartbeat, client.clock)

    async def register(self, node: node_pb2.Node) -> node_pb2.Node:
        return await self.client.call(self.client.nodes.Register, node, attempts=1000, max_delay=5.0)

    async def _unary_heartbeat(self, request: node_pb2.HeartbeatRequest) -> node_pb2.HeartbeatResponse:
        return await self.client.call(self.client.nodes.Heartbeat, request, timeout=10.0, attempts=3)

    async def heartbeat(self, node_name: str, status: node_pb2.NodeStatus | None) -> bool:
        try:
            await self.leases.renew(node_pb2.HeartbeatRequest(node_name=node_name, status=status))
        except NotFound:  # answered over the stream
            return False
        except grpc.RpcError as err:  # the unary call's
            if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def update_pod_status(self, pod: pod_pb2.Pod) -> pod_pb2.Pod | None:
        try:
            return await self.client.call(self.client.pods.UpdateStatus, pod, timeout=15.0, attempts=3)
        except grpc.RpcError as err:
            if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    async def finalize_pod(self, namespace: str, name: str, uid: str, resource_version: int) -> None:
        key = meta_pb2.ObjectKey(namespace=namespace, name=name)
        for _ in range(5):
            try:
                current = await self.client.call(self.client.pods.Get, key, timeout=10.0)
            except grpc.RpcError as err:
                if rpc_code(err) == grpc.StatusCode.NOT_FOUND:
                    return
                raise
            if uid and current.metadata.uid != uid:
                return
            try:
                await self.client.call(
                    self.client.pods.Delete,
                    meta_pb2.DeleteOptions(
                        key=key, grace_period_seconds=0, resource_version=current.metadata.resource_version
                    ),
                    timeout=10.0,
                )
                return
            except grpc.RpcError as err:
                code = rpc_code(err)
                if code == grpc.StatusCode.NOT_FOUND:
                    return
                if code != grpc.StatusCode.ABORTED:
                    raise
        log.warning("finalize %s/%s: kept changing under us; will retry on next sync", namespace, name)
        raise RuntimeError(f"finalize {namespace}/{name}: conflict")

    async def create_event(self, event: event_pb2.Event) -> None:
        await self.client.call(self.client.events.Create, event, timeout=10.0, attempts=3)

    def pod_watch(self) -> Callable[..., Any]:
        watch: Callable[..., Any] = self.client.pods.Watch
        return watch

    async def get_config(self, kind: RefKind, namespace: str, name: str) -> Mapping[str, bytes] | None:
        key = meta_pb2.ObjectKey(namespace=namespace, name=name)
        try:
            if kind is RefKind.CONFIGMAP:
                cm = await self.client.call(self.client.configmaps.Get, key, timeout=10.0, attempts=3)
                return {**{k: v.encode() for k, v in cm.data.items()}, **dict(cm.binary_data)}
            secret = await self.client.call(self.client.secrets.Get, key, timeout=10.0, attempts=3)
            return dict(secret.data)
        except grpc.RpcError as err:
            # Not found, or not (yet) referenced by a pod the controller sees bound here: the
            # node authorizer answers both alike, and either way the pod waits for it.
            if rpc_code(err) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED):
                return None
            raise

"""The Python client for the cowpod API; the CLI, scheduler and agent use it too.

    import asyncio
    from cowpod.client import Client

    async def main() -> None:
        async with Client("127.0.0.1:7070") as c:
            for pod in (await c.pods.List(ListOptions(namespace="default"))).items:
                print(pod.metadata.name, pod.status.phase)

    asyncio.run(main())

`Client` holds one gRPC channel and a typed stub per service (`pods`, `nodes`,
`vms`, `events`, `leases`, `replicasets`, `deployments`, `jobs`, `daemonsets`, `services`,
`endpoints`, `namespaces`, `configmaps`, `secrets`, `priorityclasses`). `call` retries a unary call on
UNAVAILABLE with capped exponential back-off, which is what every component wants while
the controller or etcd restarts; callers that must not repeat a non-idempotent write use
the stub directly.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cowpod.api.labels import CREATE_ID_ANNOTATION
from cowpod.backoff import Backoff, Retry
from cowpod.clock import Clock, RealClock
from cowpod.v1 import (
    config_pb2_grpc,
    event_pb2_grpc,
    lease_pb2_grpc,
    meta_pb2,
    namespace_pb2_grpc,
    node_pb2_grpc,
    pod_pb2_grpc,
    scheduling_pb2_grpc,
    service_pb2_grpc,
    vm_pb2_grpc,
    workload_pb2_grpc,
)

DEFAULT_ADDRESS = "127.0.0.1:7070"

T = TypeVar("T")

# Large lists (thousands of nodes) must fit in one message.
CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE})
# A create may be repeated after these too: `Client.create` makes the repeat harmless.
CREATE_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Set by `Client.create` so a retried create can recognise its own earlier attempt.


class Client:
    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        call_credentials: grpc.CallCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        clock: Clock | None = None,
    ) -> None:
        self.address = address
        self.clock: Clock = clock or RealClock()
        opts = [*CHANNEL_OPTIONS, *options]
        if credentials is not None:
            if call_credentials is not None:
                credentials = grpc.composite_channel_credentials(credentials, call_credentials)
            self.channel = grpc.aio.secure_channel(address, credentials, options=opts)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=opts)
        self.pods = pod_pb2_grpc.PodServiceStub(self.channel)
        self.nodes = node_pb2_grpc.NodeServiceStub(self.channel)
        self.vms = vm_pb2_grpc.VMServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)
        self.leases = lease_pb2_grpc.LeaseServiceStub(self.channel)
        self.replicasets = workload_pb2_grpc.ReplicaSetServiceStub(self.channel)
        self.deployments = workload_pb2_grpc.DeploymentServiceStub(self.channel)
        self.jobs = workload_pb2_grpc.JobServiceStub(self.channel)
        self.daemonsets = workload_pb2_grpc.DaemonSetServiceStub(self.channel)
        self.services = service_pb2_grpc.ServiceServiceStub(self.channel)
        self.endpoints = service_pb2_grpc.EndpointsServiceStub(self.channel)
        self.namespaces = namespace_pb2_grpc.NamespaceServiceStub(self.channel)
        self.configmaps = config_pb2_grpc.ConfigMapServiceStub(self.channel)
        self.secrets = config_pb2_grpc.SecretServiceStub(self.channel)
        self.priorityclasses = scheduling_pb2_grpc.PriorityClassServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            resp = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        request: Any,
        *,
        timeout: float = 30.0,
        attempts: int = 8,
        base_delay: float = 0.1,
        max_delay: float = 3.0,
    ) -> T:
        """Unary call with retry on UNAVAILABLE (capped, jittered back-off)."""
        retry = Retry(Backoff(initial=base_delay, cap=max_delay, jitter=0.5), self.clock)
        for attempt in range(attempts):
            try:
                return await fn(request, timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
                if code not in RETRYABLE or attempt == attempts - 1:
                    raise
            await retry.sleep()
        raise AssertionError("unreachable")

    async def create(
        self,
        create: Callable[..., Awaitable[T]],
        get: Callable[..., Awaitable[T]],
        obj: Any,
        *,
        timeout: float = 30.0,
        attempts: int = 10,
        base_delay: float = 0.1,
        max_delay: float = 3.0,
    ) -> T:
        """Create `obj` (e.g. `create=c.pods.Create, get=c.pods.Get`), retrying UNAVAILABLE and
        DEADLINE_EXCEEDED with back-off, without ever creating it twice.

        A create whose answer was lost (the controller or etcd died after committing)
        must not become a duplicate or an error on retry. So the name is fixed before
        the first attempt (a `generate_name` is resolved here, not by the server) and
        the object carries a `cowpod.io/create-id` annotation; a retry that meets
        ALREADY_EXISTS — or any other final refusal (etcd out of space refuses before
        it compares, so a lost answer can come back as RESOURCE_EXHAUSTED) — reads the
        stored object and, if it carries our id, returns it: our earlier attempt landed."""
        meta = obj.metadata
        if not meta.name and meta.generate_name:
            meta.name = meta.generate_name + "".join(
                secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            meta.generate_name = ""
        create_id = meta.annotations.get(CREATE_ID_ANNOTATION) or uuid.uuid4().hex
        meta.annotations[CREATE_ID_ANNOTATION] = create_id
        retry = Retry(Backoff(initial=base_delay, cap=max_delay, jitter=0.5), self.clock)
        retried = False
        for attempt in range(attempts):
            try:
                return await create(obj, timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
                if code not in CREATE_RETRYABLE or attempt == attempts - 1:
                    # ALREADY_EXISTS, or any other final answer, after an attempt whose
                    # answer was lost: that attempt may be what is stored.
                    landed = await self._landed(get, meta, create_id, timeout) if retried else None
                    if landed is not None:
                        return landed
                    raise
            retried = True
            await retry.sleep()
        raise AssertionError("unreachable")

    async def _landed(self, get: Callable[..., Awaitable[T]], meta: Any, create_id: str,
                      timeout: float) -> T | None:
        """The object an earlier, unanswered attempt of this create stored, if any."""
        key = meta_pb2.ObjectKey(namespace=meta.namespace, name=meta.name)
        try:
            existing: Any = await self.call(get, key, timeout=timeout)
        except grpc.RpcError:
            return None
        if existing.metadata.annotations.get(CREATE_ID_ANNOTATION) != create_id:
            return None
        found: T = existing
        return found

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the controller answers health checks."""
        deadline = self.clock.monotonic() + timeout
        while not await self.healthy():
            if self.clock.monotonic() > deadline:
                raise TimeoutError(f"controller at {self.address} did not become healthy in {timeout:.0f}s")
            await asyncio.sleep(0.1)

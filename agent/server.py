"""AgentService: logs and exec for the controller to proxy (`cowpod logs`,
`cowpod exec`), served on a unix socket or a loopback port.

The servicer decodes the request, asks the agent which container is meant
(domain errors from `cowpod.errors`), calls the runtime, and maps errors to
gRPC codes in one place (`_abort`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Sequence

import grpc

from agent.daemon import Agent
from agent.plan import instances
from agent.runtime import ContainerInfo, EngineError, ExecSession, Kind
from cowpod.errors import CowpodError, FailedPrecondition, Invalid, NotFound, status_of
from cowpod.v1 import agent_pb2_grpc, pod_pb2

log = logging.getLogger(__name__)


async def find_container(
    agent: Agent, req_pod_ns: str, req_pod: str, container: str, previous: bool
) -> ContainerInfo:
    pod = agent.find_pod(req_pod_ns, req_pod)
    if pod is None:
        raise NotFound(f"pod {req_pod_ns or 'default'}/{req_pod} is not on node {agent.cfg.node_name}")
    names = [c.name for c in pod.spec.containers]
    init_names = [c.name for c in pod.spec.init_containers]
    if not container:
        if len(names) != 1:
            raise Invalid(
                "container",
                f"a container name must be specified for pod {req_pod}, choose one of: [{' '.join(names)}]",
            )
        container = names[0]
    if container in names:
        kind = Kind.APP
    elif container in init_names:
        kind = Kind.INIT
    else:
        raise NotFound(f"container {container} is not valid for pod {req_pod}")
    inst = instances(await agent.runtime.list_containers(pod_uid=pod.metadata.uid), container, kind)
    if previous:
        prev = previous_instance(inst, agent.statuses.get(pod.metadata.uid), container)
        if prev is None:
            raise NotFound(f'previous terminated container "{container}" in pod "{req_pod}" not found')
        return prev
    if not inst:
        raise FailedPrecondition(f'container "{container}" in pod "{req_pod}" is waiting to start')
    return inst[-1]


def previous_instance(
    inst: Sequence[ContainerInfo], status: pod_pb2.PodStatus | None, container: str
) -> ContainerInfo | None:
    """The instance `logs --previous` means: the one the pod status reports as the
    container's `lastState.terminated`, as kubelet does.

    Not simply the second newest: while a crashed container waits out its back-off
    there is no current instance, `lastState` is the newest dead one, and the older
    ones are already garbage (the agent keeps one dead instance besides the newest),
    so "second newest" answered "not found" for every crash-looping container. With
    no status yet (the agent just restarted), the instance before the newest."""
    if status is not None:
        for cs in (*status.container_statuses, *status.init_container_statuses):
            if cs.name != container:
                continue
            cid = cs.last_state.terminated.container_id.removeprefix("docker://")
            found = next((c for c in inst if cid and c.id == cid and c.dead), None)
            if found is not None:
                return found
    return inst[-2] if len(inst) > 1 else None


async def _abort(context: grpc.aio.ServicerContext[object, object], err: Exception) -> None:
    if isinstance(err, CowpodError):
        await context.abort(status_of(err), str(err))
    if isinstance(err, EngineError):
        await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
    log.exception("agent service error", exc_info=err)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {err}")


async def _feed(session: ExecSession, first: pod_pb2.ExecStreamRequest,
                requests: AsyncIterator[pod_pb2.ExecStreamRequest]) -> None:
    """Pass the client's stdin, resizes and end of stdin to the running command."""
    msg = first
    while True:
        if msg.stdin:
            await session.write(msg.stdin)
        if msg is not first and msg.size.width:
            await session.resize(msg.size.width, msg.size.height)
        if msg.stdin_closed:
            await session.close_stdin()
            return
        nxt = await anext(requests, None)
        if nxt is None:  # the client went away without closing stdin: do it for it
            await session.close_stdin()
            return
        msg = nxt


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):  # type: ignore[misc]
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def Logs(
        self, request: pod_pb2.LogsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pod_pb2.LogChunk]:
        try:
            c = await find_container(
                self.agent, request.pod.namespace, request.pod.name, request.container, request.previous
            )
            since = self.agent.clock.now() - request.since_seconds if request.since_seconds > 0 else 0.0
            async for chunk in self.agent.runtime.logs(
                c.id,
                follow=request.follow and not request.previous and c.running,
                tail=int(request.tail_lines),
                timestamps=request.timestamps,
                since=since,
            ):
                yield pod_pb2.LogChunk(data=chunk)
        except (CowpodError, EngineError) as err:
            await _abort(context, err)

    async def Exec(
        self, request: pod_pb2.ExecRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pod_pb2.ExecResponse:
        try:
            if not request.command:
                raise Invalid("command", "required")
            c = await find_container(
                self.agent, request.pod.namespace, request.pod.name, request.container, False
            )
            if not c.running:
                raise FailedPrecondition(f"container {c.name} is not running")
            res = await self.agent.runtime.exec(c.id, list(request.command), stdin=request.stdin)
            return pod_pb2.ExecResponse(stdout=res.stdout, stderr=res.stderr, exit_code=res.exit_code)
        except (CowpodError, EngineError) as err:
            await _abort(context, err)
            raise AssertionError("unreachable") from err

    async def ExecStream(
        self, requests: AsyncIterator[pod_pb2.ExecStreamRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[pod_pb2.ExecStreamResponse]:
        """`exec -it`: the first message says what to run; then stdin and resizes flow in
        while output flows out; the last message carries the exit code."""
        session = None
        feeding: asyncio.Task[None] | None = None
        try:
            first = await anext(aiter(requests), None)
            if first is None or not first.start.command:
                raise Invalid("start.command", "required in the first message")
            start = first.start
            c = await find_container(self.agent, start.pod.namespace, start.pod.name, start.container, False)
            if not c.running:
                raise FailedPrecondition(f"container {c.name} is not running")
            session = await self.agent.runtime.exec_session(c.id, list(start.command), tty=first.tty)
            if first.size.width:
                await session.resize(first.size.width, first.size.height)
            feeding = asyncio.create_task(_feed(session, first, requests))
            async for stream, data in session.output():
                yield (pod_pb2.ExecStreamResponse(stdout=data) if stream == 1
                       else pod_pb2.ExecStreamResponse(stderr=data))
            yield pod_pb2.ExecStreamResponse(exit_code=await session.exit_code())
        except (CowpodError, EngineError) as err:
            await _abort(context, err)
        finally:
            if feeding is not None:
                feeding.cancel()
            if session is not None:
                await session.close()


def bind_address(listen: str) -> str:
    """'unix:///path' or 'host:port' as grpc wants it; makes the socket's
    directory and removes a stale socket file."""
    if listen.startswith("unix://"):
        path = pathlib.Path(listen.removeprefix("unix://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            os.unlink(path)
        return f"unix://{path}"
    return listen


async def serve(
    agent: Agent,
    *,
    credentials: grpc.ServerCredentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> None:
    """Serve AgentService on agent.cfg.listen until cancelled.

    `credentials`/`interceptors`: TLS with the node certificate and the check that
    only the controller calls (cowpod.auth.peer); plaintext without them."""
    server = grpc.aio.server(interceptors=list(interceptors))
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(agent), server)
    addr = bind_address(agent.cfg.listen)
    port = server.add_secure_port(addr, credentials) if credentials else server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"--listen {agent.cfg.listen}: cannot bind")
    await server.start()
    agent.bound_port = port
    agent.serving.set()
    log.info("AgentService listening on %s", addr)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=1.0)

"""Fakes and builders for the agent's unit tests: an in-memory control plane
(pods, nodes, events, a watch stream the real Informer consumes) and small
builders for pods and container facts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any

from agent import labels as L
from agent.desired import DesiredPod, Want, spec_hash
from agent.runtime import ContainerInfo, Kind, RunState
from cowpod.configrefs import RefKind
from cowpod.v1 import event_pb2, meta_pb2, node_pb2, pod_pb2

_ids = itertools.count(1)


class FakeControlPlane:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], pod_pb2.Pod] = {}
        self.nodes: dict[str, node_pb2.Node] = {}
        self.events: list[event_pb2.Event] = []
        self.heartbeats = 0
        self.node_statuses: list[node_pb2.NodeStatus] = []
        self.status_writes: list[pod_pb2.Pod] = []
        self.finalized: list[str] = []
        self._rv = itertools.count(1)
        self._watchers: list[asyncio.Queue[pod_pb2.PodWatchEvent]] = []
        self.fail_status = False
        # ConfigMaps/Secrets get_config answers with, by (kind, namespace, name).
        self.configs: dict[tuple[RefKind, str, str], dict[str, bytes]] = {}
        self.config_reads: list[tuple[RefKind, str, str]] = []

    # the ControlPlane protocol -------------------------------------------------

    async def register(self, node: node_pb2.Node) -> node_pb2.Node:
        node.metadata.uid = node.metadata.uid or f"uid-node-{node.metadata.name}"
        self.nodes[node.metadata.name] = node
        return node

    async def heartbeat(self, node_name: str, status: node_pb2.NodeStatus | None) -> bool:
        self.heartbeats += 1
        if status is not None:
            self.node_statuses.append(status)
        return node_name in self.nodes

    async def update_pod_status(self, pod: pod_pb2.Pod) -> pod_pb2.Pod | None:
        if self.fail_status:
            raise ConnectionError("controller down")
        key = (pod.metadata.namespace, pod.metadata.name)
        cur = self.pods.get(key)
        if cur is None or cur.metadata.uid != pod.metadata.uid:
            return None
        self.status_writes.append(pod)
        cur.status.CopyFrom(pod.status)
        self._bump(cur, meta_pb2.MODIFIED)
        return cur

    async def finalize_pod(self, namespace: str, name: str, uid: str, resource_version: int) -> None:
        cur = self.pods.get((namespace, name))
        if cur is None or cur.metadata.uid != uid:
            return
        del self.pods[(namespace, name)]
        self.finalized.append(name)
        self._emit(meta_pb2.DELETED, cur)

    async def create_event(self, event: event_pb2.Event) -> None:
        self.events.append(event)

    def pod_watch(self) -> Callable[..., Any]:
        return self._watch

    async def get_config(self, kind: RefKind, namespace: str, name: str) -> Mapping[str, bytes] | None:
        self.config_reads.append((kind, namespace, name))
        data = self.configs.get((kind, namespace, name))
        return None if data is None else dict(data)

    # test side -----------------------------------------------------------------

    def _emit(self, type_: meta_pb2.WatchEventType, pod: pod_pb2.Pod) -> None:
        ev = pod_pb2.PodWatchEvent(type=type_, object=pod, resource_version=pod.metadata.resource_version)
        for q in self._watchers:
            q.put_nowait(ev)

    def _bump(self, pod: pod_pb2.Pod, type_: meta_pb2.WatchEventType) -> None:
        pod.metadata.resource_version = next(self._rv)
        copy = pod_pb2.Pod()
        copy.CopyFrom(pod)
        self._emit(type_, copy)

    def put(self, pod: pod_pb2.Pod) -> pod_pb2.Pod:
        key = (pod.metadata.namespace or "default", pod.metadata.name)
        pod.metadata.namespace = key[0]
        pod.metadata.uid = pod.metadata.uid or f"uid-{pod.metadata.name}-{next(_ids)}"
        type_ = meta_pb2.MODIFIED if key in self.pods else meta_pb2.ADDED
        self.pods[key] = pod
        self._bump(pod, type_)
        return pod

    def get(self, name: str, namespace: str = "default") -> pod_pb2.Pod | None:
        return self.pods.get((namespace, name))

    def delete(self, name: str, grace: int | None = None, namespace: str = "default") -> None:
        pod = self.pods[(namespace, name)]
        pod.metadata.deletion_timestamp.GetCurrentTime()
        if grace is not None:
            pod.metadata.deletion_grace_period_seconds = grace
        self._bump(pod, meta_pb2.MODIFIED)

    def remove(self, name: str, namespace: str = "default") -> None:
        pod = self.pods.pop((namespace, name))
        self._emit(meta_pb2.DELETED, pod)

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    async def _watch(self, opts: meta_pb2.WatchOptions) -> AsyncIterator[pod_pb2.PodWatchEvent]:
        q: asyncio.Queue[pod_pb2.PodWatchEvent] = asyncio.Queue()
        self._watchers.append(q)
        node = opts.list.field_selector.removeprefix("spec.nodeName=")
        try:
            if opts.send_initial:
                for pod in list(self.pods.values()):
                    if pod.spec.node_name == node:
                        yield pod_pb2.PodWatchEvent(
                            type=meta_pb2.ADDED, object=pod, resource_version=pod.metadata.resource_version
                        )
                yield pod_pb2.PodWatchEvent(type=meta_pb2.BOOKMARK, resource_version=1)
            while True:
                ev = await q.get()
                if ev.object.spec.node_name == node or ev.type == meta_pb2.DELETED:
                    yield ev
        finally:
            self._watchers.remove(q)


# ---------------------------------------------------------------- builders


def container(name: str, image: str = "img", script: str = "", **kw: Any) -> pod_pb2.Container:
    kw.setdefault("image_pull_policy", "IfNotPresent")
    c = pod_pb2.Container(name=name, image=image, **kw)
    if script:
        c.command.extend(["/bin/sh", "-c", script])
    return c


def pod(name: str, *containers: pod_pb2.Container, node: str = "node-1", **spec: Any) -> pod_pb2.Pod:
    return pod_pb2.Pod(
        api_version="v1",
        kind="Pod",
        metadata=meta_pb2.ObjectMeta(name=name, namespace="default"),
        spec=pod_pb2.PodSpec(containers=list(containers), node_name=node, **spec),
    )


def desired(
    apps: tuple[str, ...] = ("app",),
    init: tuple[str, ...] = (),
    *,
    restart: str = "Always",
    deleting: bool = False,
    terminal: str = "",
    grace: int = 30,
    uid: str = "u1",
) -> DesiredPod:
    return DesiredPod(
        uid=uid,
        name="p",
        namespace="default",
        restart_policy=restart,
        init=tuple(Want(n, Kind.INIT, f"h-{n}") for n in init),
        apps=tuple(Want(n, Kind.APP, f"h-{n}") for n in apps),
        grace_seconds=grace,
        deleting=deleting,
        terminal_phase=terminal,
    )


def ctr(
    name: str = "app",
    *,
    kind: Kind = Kind.APP,
    attempt: int = 0,
    streak: int = 0,
    state: RunState = RunState.RUNNING,
    exit_code: int = 0,
    started: float | None = 100.0,
    finished: float | None = None,
    oom: bool = False,
    cid: str | None = None,
    uid: str = "u1",
    spec_hash: str | None = None,
) -> ContainerInfo:
    if state == RunState.EXITED and finished is None:
        finished = (started or 0.0) + 1.0
    return ContainerInfo(
        id=cid or f"{name}-{attempt}-{kind.value}",
        pod_uid=uid,
        pod_name="p",
        pod_namespace="default",
        name=name,
        kind=kind,
        attempt=attempt,
        streak=streak,
        spec_hash=spec_hash if spec_hash is not None else ("" if kind == Kind.SANDBOX else f"h-{name}"),
        state=state,
        exit_code=exit_code,
        oom_killed=oom,
        created_at=(started or 100.0) - 0.5,
        started_at=started if state != RunState.CREATED else None,
        finished_at=finished,
        labels={L.POD_UID: uid},
    )


def sandbox(*, attempt: int = 0, state: RunState = RunState.RUNNING, uid: str = "u1") -> ContainerInfo:
    return replace(
        ctr(L.SANDBOX_NAME, kind=Kind.SANDBOX, attempt=attempt, state=state, uid=uid), ip="10.0.0.2"
    )


def exited(name: str = "app", code: int = 0, **kw: Any) -> ContainerInfo:
    return ctr(name, state=RunState.EXITED, exit_code=code, **kw)


__all__ = ["FakeControlPlane", "container", "ctr", "desired", "exited", "pod", "sandbox", "spec_hash"]

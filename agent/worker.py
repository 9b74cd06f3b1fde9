"""One worker per pod UID: the loop that plans and executes for that pod.

    wake (API change, Docker event, probe verdict, back-off timer, resync)
      -> list the pod's containers -> plan_pod -> report status
      -> execute actions -> plan again ... until only waiting is left

Workers are independent tasks, so a pod whose image pull or grace period
takes long never holds up another. A worker ends when its pod is finalized,
or is gone from the API and has no containers left. It owns its pod's probe
workers and its `PodMemory`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.admission import Admission
from agent.config import AgentConfig
from agent.desired import DesiredPod, from_proto
from agent.events import EventRecorder, PodRef
from agent.executor import Executor
from agent.plan import PlanConfig, PodMemory, Requeue, deadline_exceeded, first_requeue, plan_pod
from agent.probes import Failure, ProbeKind, Prober, ProbeWorker, Target, Verdict
from agent.runtime import ContainerInfo, Kind
from agent.status import build_status
from agent.statusmgr import StatusManager
from agent.waiting import wait_event
from cowpod.api.phases import is_terminal
from cowpod.clock import Clock
from cowpod.tasks import TaskSupervisor
from cowpod.v1 import pod_pb2

log = logging.getLogger(__name__)

MAX_ROUNDS = 12


@dataclass
class WorkerDeps:
    cfg: AgentConfig
    executor: Executor
    recorder: EventRecorder
    statuses: StatusManager
    clock: Clock
    supervisor: TaskSupervisor
    admission: Admission
    prober: Prober


class PodWorker:
    def __init__(self, uid: str, pod: pod_pb2.Pod | None, deps: WorkerDeps) -> None:
        self.uid = uid
        self.pod = pod
        self.d = deps
        self.memory = PodMemory()
        self.wake = asyncio.Event()
        self.wake.set()
        self.plan_cfg = PlanConfig(backoff=deps.cfg.backoff, keep_dead=deps.cfg.keep_dead_per_container)
        self._probe_tasks: dict[tuple[str, ProbeKind], str] = {}
        self._started: dict[str, asyncio.Event] = {}
        self._backoff_seen: set[str] = set()
        self._first = True
        self.syncs = 0
        self.done = False
        self.last_ref = PodRef(pod.metadata.namespace, pod.metadata.name, uid) if pod else PodRef("", "", uid)

    @property
    def task_name(self) -> str:
        return f"pod/{self.uid}"

    def update(self, pod: pod_pb2.Pod | None) -> None:
        self.pod = pod
        if pod is not None:
            self.last_ref = PodRef(pod.metadata.namespace or "default", pod.metadata.name, self.uid)
        self.wake.set()

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        next_at: float | None = None
        try:
            while True:
                now = self.d.clock.now()
                timeout = self.d.cfg.resync_seconds
                if next_at is not None:
                    timeout = min(timeout, max(next_at - now, 0.0))
                await wait_event(self.wake, self.d.clock, timeout)
                self.wake.clear()
                try:
                    finished, next_at = await self.sync()
                except Exception:
                    log.exception(
                        "pod %s/%s: sync failed; retrying", self.last_ref.namespace, self.last_ref.name
                    )
                    next_at = self.d.clock.now() + 2.0
                    continue
                if finished:
                    return
        finally:
            self.done = True
            self._stop_probes(keep=set())
            self.d.admission.release(self.uid)

    async def sync(self) -> tuple[bool, float | None]:
        """One reconcile; (pod finished with, time of the next wanted wake)."""
        self.syncs += 1
        next_at: float | None = None
        if self.pod is not None:
            await self.d.executor.refresh_configs(self.pod)
        for _ in range(MAX_ROUNDS):
            containers = await self.d.executor.runtime.list_containers(pod_uid=self.uid)
            pod = self.pod
            if pod is None and not containers:
                self.d.statuses.forget(self.uid)
                return True, None
            vm_network = self.d.executor.node.vm is not None
            desired = from_proto(pod, vm_network=vm_network) if pod is not None else None
            if pod is not None and desired is not None:
                self._first_sight(pod, desired, containers)
            self._sync_probes(pod, containers)
            now = self.d.clock.now()
            expired = deadline_exceeded(desired, now) if desired is not None else None
            if expired is not None and self.memory.rejected is None:
                self.memory.rejected = expired
                self.d.recorder.record(self.last_ref, expired[0], expired[1], warning=True)
            actions = plan_pod(desired, containers, self.memory, now, self.plan_cfg, uid=self.uid)
            if pod is not None and desired is not None:
                self._report(pod, desired, containers, now)
            next_at = first_requeue(actions)
            work = [a for a in actions if not isinstance(a, Requeue)]
            if not work:
                return False, next_at
            if await self.d.executor.execute(pod, self.last_ref, work, self.memory, containers):
                return True, None
        return False, self.d.clock.now()

    # ------------------------------------------------------------ helpers

    def _first_sight(self, pod: pod_pb2.Pod, desired: DesiredPod, containers: list[ContainerInfo]) -> None:
        if not self._first:
            return
        self._first = False
        self.d.statuses.seed(pod)
        # Carry probe verdicts over an agent restart from what we reported.
        for st in pod.status.container_statuses:
            cid = st.container_id.removeprefix("docker://")
            if cid and any(c.id == cid and c.running for c in containers):
                if st.ready:
                    self.memory.ready[cid] = True
                if st.started:
                    self.memory.started[cid] = True
        if desired.deleting or desired.terminal_phase:
            return
        force = bool(containers) or pod.status.phase == "Running"
        rejected = self.d.admission.admit(pod, force=force)
        if rejected is not None:
            self.memory.rejected = rejected
            self.d.recorder.record(self.last_ref, rejected[0], rejected[1], warning=True)

    def _report(
        self, pod: pod_pb2.Pod, desired: DesiredPod, containers: list[ContainerInfo], now: float
    ) -> None:
        previous = self.d.statuses.get(self.uid)
        status = build_status(
            pod,
            desired,
            containers,
            self.memory,
            now,
            self.d.cfg.backoff,
            pod_ip=self.d.executor.pod_ip(containers),
            host_ip=self.d.executor.node.host_ip,
            previous=previous if previous is not None and previous.phase else None,
        )
        for cs in (*status.init_container_statuses, *status.container_statuses):
            if cs.state.waiting.reason == "CrashLoopBackOff" and cs.container_id not in self._backoff_seen:
                self._backoff_seen.add(cs.container_id)
                self.d.recorder.record(
                    self.last_ref,
                    "BackOff",
                    f"Back-off restarting failed container {cs.name} in pod {pod.metadata.name}",
                    warning=True,
                )
        if is_terminal(status.phase):
            self.d.admission.release(self.uid)
        self.d.statuses.set(pod.metadata.namespace or "default", pod.metadata.name, self.uid, status)

    # ------------------------------------------------------------ probes

    def _stop_probes(self, keep: set[tuple[str, ProbeKind]]) -> None:
        for key in [k for k in self._probe_tasks if k not in keep]:
            self.d.supervisor.cancel(self._probe_tasks.pop(key))
            self._started.pop(key[0], None)

    def _sync_probes(self, pod: pod_pb2.Pod | None, containers: list[ContainerInfo]) -> None:
        keep: set[tuple[str, ProbeKind]] = set()
        if pod is not None and not pod.metadata.HasField("deletion_timestamp"):
            pod_ip = self.d.executor.pod_ip(containers)
            specs = {c.name: c for c in pod.spec.containers}
            for c in containers:
                spec = specs.get(c.name)
                if c.kind != Kind.APP or not c.running or spec is None or c.id in self.memory.unhealthy:
                    continue
                probes = [
                    (ProbeKind.STARTUP, spec.startup_probe if spec.HasField("startup_probe") else None),
                    (ProbeKind.LIVENESS, spec.liveness_probe if spec.HasField("liveness_probe") else None),
                    (ProbeKind.READINESS, spec.readiness_probe if spec.HasField("readiness_probe") else None),
                ]
                has_startup = probes[0][1] is not None
                for kind, probe in probes:
                    if probe is None:
                        continue
                    key = (c.id, kind)
                    keep.add(key)
                    if key in self._probe_tasks:
                        continue
                    if kind == ProbeKind.STARTUP and self.memory.started.get(c.id):
                        continue
                    started = None
                    if has_startup:
                        started = self._started.setdefault(c.id, asyncio.Event())
                        if self.memory.started.get(c.id):
                            started.set()
                    worker = ProbeWorker(
                        kind,
                        probe,
                        Target(c.id, pod_ip),
                        self.d.prober,
                        self.d.clock,
                        self._make_verdict(c.name),
                        self._on_probe_failure(c.name),
                        started,
                    )
                    name = f"probe/{self.uid}/{c.id[:12]}/{kind.value}"
                    self._probe_tasks[key] = name
                    self.d.supervisor.spawn(worker.run(), name)
        self._stop_probes(keep)

    def _make_verdict(self, cname: str) -> Verdict:
        async def verdict(kind: ProbeKind, cid: str, ok: bool, msg: str) -> None:
            if kind == ProbeKind.READINESS:
                self.memory.ready[cid] = ok
            elif kind == ProbeKind.STARTUP and ok:
                self.memory.started[cid] = True
                ev = self._started.get(cid)
                if ev is not None:
                    ev.set()
            elif not ok:
                what = "liveness" if kind == ProbeKind.LIVENESS else "startup"
                self.memory.unhealthy[cid] = f"Container {cname} failed {what} probe, will be restarted"
            self.wake.set()

        return verdict

    def _on_probe_failure(self, cname: str) -> Failure:
        def failure(kind: ProbeKind, cid: str, msg: str) -> None:
            self.d.recorder.record(
                self.last_ref, "Unhealthy", f"{kind.value} probe failed: {msg}", warning=True
            )

        return failure

"""The desired pod as the planner sees it: a small frozen view of the API's
Pod (protobuf stops here), with a hash per container spec so a changed spec
replaces its container."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agent.runtime import Kind
from cowpod.api import podfields
from cowpod.api.phases import is_terminal
from cowpod.v1 import pod_pb2

DEFAULT_GRACE = 30


@dataclass(frozen=True)
class Want:
    name: str
    kind: Kind
    spec_hash: str


@dataclass(frozen=True)
class DesiredPod:
    uid: str
    name: str
    namespace: str
    restart_policy: str  # Always | OnFailure | Never
    init: tuple[Want, ...]
    apps: tuple[Want, ...]
    grace_seconds: int
    deleting: bool
    # A phase the pod already reached and reported; never left again.
    terminal_phase: str = ""
    # Whether the pod gets its own sandbox (pause) container; see `needs_sandbox`.
    sandbox: bool = True
    # spec.activeDeadlineSeconds as a wall-clock time: status.startTime plus the deadline
    # (None: no deadline, or the pod has no start time yet).
    active_deadline: float | None = None


def spec_hash(c: pod_pb2.Container) -> str:
    return hashlib.sha256(c.SerializeToString(deterministic=True)).hexdigest()[:16]


def grace_of(pod: pod_pb2.Pod) -> int:
    md = pod.metadata
    if md.HasField("deletion_timestamp") and md.HasField("deletion_grace_period_seconds"):
        return max(0, int(md.deletion_grace_period_seconds))
    if pod.spec.HasField("termination_grace_period_seconds"):
        return max(0, int(pod.spec.termination_grace_period_seconds))
    return DEFAULT_GRACE


def needs_sandbox(pod: pod_pb2.Pod, *, vm_network: bool) -> bool:
    """Whether a pause container has anything to hold for this pod.

    Kubernetes' sandbox holds the pod's own network namespace and the IPC
    namespace its containers share. On a VM every pod uses the VM's network,
    so a pod with a single container and no init containers shares nothing
    with anyone: it runs without a sandbox, as Nomad runs host-network tasks
    without its pause container, and saves the engine half its work per pod.
    Pods with several containers keep the sandbox for their shared IPC.
    A pod with configMap/secret volumes keeps it too: their files are written through it
    (agent/configvolumes.py); so does a non-root pod with disk emptyDir volumes, which the
    sandbox makes world-writable (cowpod.api.podfields.open_volumes), and one with
    shareProcessNamespace, whose containers share the sandbox's PID namespace.
    """
    if any(v.HasField("config_map") or v.HasField("secret") or v.HasField("downward_api")
           for v in pod.spec.volumes):
        return True
    if podfields.open_volumes(pod.spec) or pod.spec.share_process_namespace:
        return True
    return not (vm_network and len(pod.spec.containers) == 1 and not pod.spec.init_containers)


def from_proto(pod: pod_pb2.Pod, *, vm_network: bool = False) -> DesiredPod:
    phase = pod.status.phase
    return DesiredPod(
        uid=pod.metadata.uid,
        name=pod.metadata.name,
        namespace=pod.metadata.namespace or "default",
        restart_policy=pod.spec.restart_policy or "Always",
        init=tuple(Want(c.name, Kind.INIT, spec_hash(c)) for c in pod.spec.init_containers),
        apps=tuple(Want(c.name, Kind.APP, spec_hash(c)) for c in pod.spec.containers),
        grace_seconds=grace_of(pod),
        deleting=pod.metadata.HasField("deletion_timestamp"),
        terminal_phase=phase if is_terminal(phase) else "",
        sandbox=needs_sandbox(pod, vm_network=vm_network),
        active_deadline=active_deadline_of(pod),
    )


def active_deadline_of(pod: pod_pb2.Pod) -> float | None:
    """When the pod has been active longer than spec.activeDeadlineSeconds (counted from
    status.startTime, as kubelet does), or None."""
    if not pod.spec.HasField("active_deadline_seconds") or not pod.status.HasField("start_time"):
        return None
    start = pod.status.start_time
    return start.seconds + start.nanos / 1e9 + pod.spec.active_deadline_seconds

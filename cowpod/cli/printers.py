"""kubectl-style tables for `cowpod get`: pure functions of protos and "now".

Each kind has a row function returning its cells; `render_table` pads columns
with three spaces as kubectl's tabwriter does. The STATUS of a pod is computed
the way kubectl computes it (a waiting or terminated container's reason wins
over the phase; a pod being deleted is Terminating), so a Kubernetes user
reads the table at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.api import quantity
from cowpod.api.labels import ROLE_LABEL
from cowpod.api.phases import is_terminal
from cowpod.v1 import (
    config_pb2,
    event_pb2,
    lease_pb2,
    namespace_pb2,
    node_pb2,
    pod_pb2,
    service_pb2,
    vm_pb2,
    workload_pb2,
)

NONE = "<none>"

Row = list[str]


def human_duration(seconds: float) -> str:
    """kubectl's age format: 45s, 3m12s, 4h5m, 6d, 2y3d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def age(ts: Timestamp, now: float, *, is_set: bool = True) -> str:
    if not is_set or (ts.seconds == 0 and ts.nanos == 0):
        return "<unknown>"
    return human_duration(now - (ts.seconds + ts.nanos / 1e9))


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by at least three spaces; no trailing blanks."""
    all_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for r in all_rows:
        cells = [c.ljust(widths[i]) if i < len(r) - 1 else c for i, c in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


# --- pods -------------------------------------------------------------------------------------


def _condition(conditions: Iterable[Any], type_: str) -> str:
    for c in conditions:
        if c.type == type_:
            return str(c.status)
    return ""


def _terminated_reason(t: pod_pb2.ContainerStateTerminated) -> str:
    if t.reason:
        return t.reason
    return f"Signal:{t.signal}" if t.signal else f"ExitCode:{t.exit_code}"


def pod_status(pod: pod_pb2.Pod) -> str:
    """The STATUS column: kubectl's rules, so `CrashLoopBackOff`, `Completed`, `Terminating` show."""
    status = pod.status
    reason = status.reason or status.phase or "Pending"
    initializing = False
    n_init = len(pod.spec.init_containers)
    for i, cs in enumerate(status.init_container_statuses):
        state = cs.state
        if state.HasField("terminated") and state.terminated.exit_code == 0:
            continue
        if state.HasField("terminated"):
            reason = "Init:" + _terminated_reason(state.terminated)
        elif state.HasField("waiting") and state.waiting.reason and state.waiting.reason != "PodInitializing":
            reason = "Init:" + state.waiting.reason
        else:
            reason = f"Init:{i}/{n_init}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.container_statuses):
            state = cs.state
            if state.HasField("waiting") and state.waiting.reason:
                reason = state.waiting.reason
            elif state.HasField("terminated"):
                reason = _terminated_reason(state.terminated)
            elif state.HasField("running") and cs.ready:
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running" if _condition(status.conditions, "Ready") == "True" else "NotReady"
    if pod.metadata.HasField("deletion_timestamp"):
        reason = "Unknown" if status.reason == "NodeLost" else "Terminating"
    return reason


def pod_ready(pod: pod_pb2.Pod) -> str:
    total = len(pod.spec.containers)
    ready = sum(1 for cs in pod.status.container_statuses if cs.ready and cs.state.HasField("running"))
    return f"{ready}/{total}"


def pod_restarts(pod: pod_pb2.Pod, now: float) -> str:
    statuses = [*pod.status.init_container_statuses, *pod.status.container_statuses]
    restarts = sum(cs.restart_count for cs in statuses)
    last = max(
        (
            cs.last_state.terminated.finished_at.seconds
            for cs in statuses
            if cs.last_state.HasField("terminated") and cs.last_state.terminated.HasField("finished_at")
        ),
        default=0,
    )
    if restarts and last:
        return f"{restarts} ({human_duration(now - last)} ago)"
    return str(restarts)


POD_HEADERS = ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
POD_WIDE = ["IP", "NODE", "NOMINATED NODE"]  # kubectl's; nominated: where it preempted


def pod_row(pod: pod_pb2.Pod, now: float, *, wide: bool = False) -> Row:
    meta = pod.metadata
    row = [
        meta.name,
        pod_ready(pod),
        pod_status(pod),
        pod_restarts(pod, now),
        age(meta.creation_timestamp, now, is_set=meta.HasField("creation_timestamp")),
    ]
    if wide:
        row += [pod.status.pod_ip or NONE, pod.spec.node_name or NONE, pod.status.nominated_node_name or NONE]
    return row


# --- nodes ------------------------------------------------------------------------------------


def node_status(node: node_pb2.Node) -> str:
    ready = _condition(node.status.conditions, "Ready")
    text = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if node.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def node_roles(node: node_pb2.Node) -> str:
    roles = sorted(
        {
            k.removeprefix("node-role.kubernetes.io/")
            for k in node.metadata.labels
            if k.startswith("node-role.kubernetes.io/")
        }
        | ({node.metadata.labels[ROLE_LABEL]} if ROLE_LABEL in node.metadata.labels else set())
    )
    return ",".join(r for r in roles if r) or NONE


def internal_ip(node: node_pb2.Node) -> str:
    for a in node.status.addresses:
        if a.type == "InternalIP":
            return a.address
    return NONE


NODE_HEADERS = ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
NODE_WIDE = ["INTERNAL-IP", "CPU", "MEMORY", "PODS"]


def node_row(node: node_pb2.Node, now: float, *, wide: bool = False, pods_on_node: int | None = None) -> Row:
    meta = node.metadata
    row = [
        meta.name,
        node_status(node),
        node_roles(node),
        age(meta.creation_timestamp, now, is_set=meta.HasField("creation_timestamp")),
        node.status.node_info.agent_version or NONE,
    ]
    if wide:
        alloc = node.status.allocatable if node.status.HasField("allocatable") else node.status.capacity
        used = "?" if pods_on_node is None else str(pods_on_node)
        row += [
            internal_ip(node),
            quantity.format_cpu(alloc.cpu_millis) if alloc.cpu_millis else NONE,
            quantity.format_memory(alloc.memory_bytes) if alloc.memory_bytes else NONE,
            f"{used}/{alloc.pods}" if alloc.pods else used,
        ]
    return row


def pods_per_node(pods: Iterable[pod_pb2.Pod]) -> Counter[str]:
    """Pods that still hold resources on their node (not finished), by node name."""
    return Counter(
        p.spec.node_name for p in pods if p.spec.node_name and not is_terminal(p.status.phase)
    )


# --- VMs --------------------------------------------------------------------------------------

VM_HEADERS = ["NAME", "CLASS", "PHASE", "NODE", "PARENT", "AGE"]
VM_WIDE = ["IP", "CLONE", "CHILDREN"]


def vm_clone(vm: vm_pb2.VM) -> str:
    kind = vm.status.clone_kind or NONE
    if vm.status.snapped_free and vm.status.clone_kind == "instant":
        kind += ",snapped-free"  # a full clone stands alone anyway
    return kind


def vm_row(vm: vm_pb2.VM, now: float, *, wide: bool = False) -> Row:
    meta = vm.metadata
    row = [
        meta.name,
        vm.spec.class_name or NONE,
        vm.status.phase or "Pending",
        vm.status.node_name or NONE,
        vm.spec.parent or NONE,
        age(meta.creation_timestamp, now, is_set=meta.HasField("creation_timestamp")),
    ]
    if wide:
        row += [vm.status.ip or NONE, vm_clone(vm), str(len(vm.status.children))]
    return row


# --- replicasets ------------------------------------------------------------------------------

REPLICASET_HEADERS = ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
REPLICASET_WIDE = ["CONTAINERS", "IMAGES", "SELECTOR"]


def replicaset_row(rs: workload_pb2.ReplicaSet, now: float, *, wide: bool = False) -> Row:
    row = [
        rs.metadata.name,
        str(rs.spec.replicas),
        str(rs.status.replicas),
        str(rs.status.ready_replicas),
        age(rs.metadata.creation_timestamp, now, is_set=rs.metadata.HasField("creation_timestamp")),
    ]
    if wide:
        containers = rs.spec.template.spec.containers
        selector = ",".join(f"{k}={v}" for k, v in sorted(rs.spec.selector.match_labels.items()))
        row += [",".join(c.name for c in containers) or NONE, ",".join(c.image for c in containers) or NONE,
                selector or NONE]
    return row


# --- deployments, jobs, daemonsets ------------------------------------------------------------

DEPLOYMENT_HEADERS = ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
JOB_HEADERS = ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
DAEMONSET_HEADERS = ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
WORKLOAD_WIDE = ["CONTAINERS", "IMAGES", "SELECTOR"]


def _template_columns(tmpl: workload_pb2.PodTemplateSpec, selector: pod_pb2.LabelSelector) -> Row:
    containers = tmpl.spec.containers
    sel = ",".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
    return [",".join(c.name for c in containers) or NONE, ",".join(c.image for c in containers) or NONE,
            sel or NONE]


def deployment_row(d: workload_pb2.Deployment, now: float, *, wide: bool = False) -> Row:
    m, st = d.metadata, d.status
    created = age(m.creation_timestamp, now, is_set=m.HasField("creation_timestamp"))
    row = [m.name, f"{st.ready_replicas}/{d.spec.replicas}", str(st.updated_replicas),
           str(st.available_replicas), created]
    return row + (_template_columns(d.spec.template, d.spec.selector) if wide else [])


def job_state(job: workload_pb2.Job) -> str:
    """kubectl's STATUS column: Complete, Failed, Suspended or Running."""
    for c in job.status.conditions:
        if c.status == "True" and c.type in ("Complete", "Failed"):
            return c.type
    return "Suspended" if job.spec.suspend else "Running"


def job_row(job: workload_pb2.Job, now: float, *, wide: bool = False) -> Row:
    m, st = job.metadata, job.status
    duration = "<unset>"
    if st.HasField("start_time"):
        end = now
        if st.HasField("completion_time"):
            end = st.completion_time.seconds + st.completion_time.nanos / 1e9
        duration = human_duration(end - (st.start_time.seconds + st.start_time.nanos / 1e9))
    row = [m.name, job_state(job), f"{st.succeeded}/{job.spec.completions}", duration,
           age(m.creation_timestamp, now, is_set=m.HasField("creation_timestamp"))]
    return row + (_template_columns(job.spec.template, job.spec.selector) if wide else [])


def daemonset_row(ds: workload_pb2.DaemonSet, now: float, *, wide: bool = False) -> Row:
    m, st = ds.metadata, ds.status
    node_selector = ",".join(f"{k}={v}" for k, v in sorted(ds.spec.template.spec.node_selector.items()))
    row = [m.name, str(st.desired_number_scheduled), str(st.current_number_scheduled), str(st.number_ready),
           str(st.updated_number_scheduled), str(st.number_available), node_selector or NONE,
           age(m.creation_timestamp, now, is_set=m.HasField("creation_timestamp"))]
    return row + (_template_columns(ds.spec.template, ds.spec.selector) if wide else [])


# --- services and endpoints -------------------------------------------------------------------

SERVICE_HEADERS = ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
SERVICE_WIDE = ["SELECTOR"]
ENDPOINTS_HEADERS = ["NAME", "ENDPOINTS", "AGE"]


def service_ports(svc: service_pb2.Service) -> str:
    """`80/TCP,53/UDP`, as kubectl prints them (no node ports here)."""
    return ",".join(f"{p.port}/{p.protocol or 'TCP'}" for p in svc.spec.ports) or NONE


def service_row(svc: service_pb2.Service, now: float, *, wide: bool = False) -> Row:
    m = svc.metadata
    external = "<pending>" if svc.spec.type == "LoadBalancer" else NONE
    row = [m.name, svc.spec.type or "ClusterIP", svc.spec.cluster_ip or "None", external, service_ports(svc),
           age(m.creation_timestamp, now, is_set=m.HasField("creation_timestamp"))]
    if wide:
        row.append(",".join(f"{k}={v}" for k, v in sorted(svc.spec.selector.items())) or NONE)
    return row


def endpoint_list(ep: service_pb2.Endpoints, *, limit: int = 3) -> str:
    """Ready `ip:port` pairs, the first `limit` and `+ N more...` as kubectl does."""
    pairs = [f"{a.ip}:{p.port}" if p.port else a.ip
             for s in ep.subsets for a in s.addresses for p in (s.ports or [service_pb2.EndpointPort()])]
    if not pairs:
        return NONE
    shown = ",".join(pairs[:limit])
    return shown + (f" + {len(pairs) - limit} more..." if len(pairs) > limit else "")


def endpoints_row(ep: service_pb2.Endpoints, now: float) -> Row:
    m = ep.metadata
    created = age(m.creation_timestamp, now, is_set=m.HasField("creation_timestamp"))
    return [m.name, endpoint_list(ep), created]


# --- events -----------------------------------------------------------------------------------

NAMESPACE_HEADERS = ["NAME", "STATUS", "AGE"]
CONFIGMAP_HEADERS = ["NAME", "DATA", "AGE"]
# A Secret's row counts its keys; its values are never in a table (`-o yaml|json` prints them).
SECRET_HEADERS = ["NAME", "TYPE", "DATA", "AGE"]


def _age_of(meta: Any, now: float) -> str:
    return age(meta.creation_timestamp, now, is_set=meta.HasField("creation_timestamp"))


def namespace_row(ns: namespace_pb2.Namespace, now: float) -> Row:
    return [ns.metadata.name, ns.status.phase or "Active", _age_of(ns.metadata, now)]


def configmap_row(cm: config_pb2.ConfigMap, now: float) -> Row:
    return [cm.metadata.name, str(len(cm.data) + len(cm.binary_data)), _age_of(cm.metadata, now)]


def secret_row(s: config_pb2.Secret, now: float) -> Row:
    return [s.metadata.name, s.type or "Opaque", str(len(s.data)), _age_of(s.metadata, now)]


LEASE_HEADERS = ["NAME", "HOLDER", "AGE"]


def lease_row(lease: lease_pb2.Lease, now: float) -> Row:
    return [lease.metadata.name, lease.spec.holder_identity or NONE, _age_of(lease.metadata, now)]


PRIORITYCLASS_HEADERS = ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]


def priorityclass_row(pc: Any, now: float) -> Row:
    """kubectl's columns for a PriorityClass (built-in classes have no creation time)."""
    return [pc.metadata.name, str(pc.value), "true" if pc.global_default else "false",
            _age_of(pc.metadata, now), pc.preemption_policy or "PreemptLowerPriority"]


EVENT_HEADERS = ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]


def event_time(ev: event_pb2.Event) -> Timestamp:
    for field in ("last_timestamp", "first_timestamp"):
        if ev.HasField(field):
            ts: Timestamp = getattr(ev, field)
            return ts
    return ev.metadata.creation_timestamp


def event_object(ev: event_pb2.Event) -> str:
    ref = ev.involved_object
    return f"{ref.kind.lower()}/{ref.name}" if ref.kind else ref.name


def event_last_seen(ev: event_pb2.Event, now: float) -> str:
    last = age(event_time(ev), now)
    if ev.count > 1 and ev.HasField("first_timestamp"):
        return f"{last} (x{ev.count} over {age(ev.first_timestamp, now)})"
    return last


def event_row(ev: event_pb2.Event, now: float) -> Row:
    return [
        event_last_seen(ev, now),
        ev.type or "Normal",
        ev.reason,
        event_object(ev),
        " ".join(ev.message.split()),
    ]


def sort_events(events: Iterable[event_pb2.Event]) -> list[event_pb2.Event]:
    return sorted(events, key=lambda e: (event_time(e).seconds, event_time(e).nanos))

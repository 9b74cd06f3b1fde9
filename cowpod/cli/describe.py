"""`cowpod describe`: kubectl-like prose views of one object of any kind, with its events.

Pure functions of protos and "now" so tests check the text against fixed
objects. `Writer` aligns the values of consecutive `Key: value` lines at one
indentation level, the way kubectl's describe output reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.api import quantity
from cowpod.api.labels import DEPLOYMENT_REVISION_ANNOTATION as REVISION_ANNOTATION
from cowpod.api.labels import LAST_APPLIED_ANNOTATION
from cowpod.api.phases import is_terminal
from cowpod.cli import printers
from cowpod.manifest.encode import encode_object
from cowpod.manifest.timefmt import format_rfc3339
from cowpod.v1 import (
    config_pb2,
    event_pb2,
    lease_pb2,
    meta_pb2,
    namespace_pb2,
    node_pb2,
    pod_pb2,
    scheduling_pb2,
    service_pb2,
    vm_pb2,
    workload_pb2,
)

NONE = "<none>"
# Bookkeeping of `cowpod apply`, as kubectl describe hides its own.
HIDDEN_ANNOTATIONS = frozenset({LAST_APPLIED_ANNOTATION})


def _continues(line: tuple[int, str, str | None], level: int) -> bool:
    """Does `line` keep a group of `Key: value` lines at `level` open?"""
    return line[0] > level or (line[0] == level and line[2] is not None)


@dataclass
class Writer:
    _lines: list[tuple[int, str, str | None]] = field(default_factory=list)

    def kv(self, level: int, key: str, value: object = "") -> None:
        self._lines.append((level, key + ":", str(value)))

    def cont(self, level: int, value: object) -> None:
        """Another value of the `Key:` line above, aligned under its first value."""
        self._lines.append((level, "", str(value)))

    def line(self, level: int, text: str) -> None:
        self._lines.append((level, text, None))

    def render(self) -> str:
        """Values of one level line up across the deeper lines between them (as `State:` and
        `Ready:` of a container do around the state's details); a plain line or a shallower
        one ends the group."""
        lines = self._lines
        width: dict[int, int] = {}
        for i, (level, _key, value) in enumerate(lines):
            if value is None or i in width:
                continue
            group = [i]
            j = i + 1
            while j < len(lines) and _continues(lines[j], level):
                if lines[j][0] == level:
                    group.append(j)
                j += 1
            w = max(len(lines[g][1]) for g in group)
            for g in group:
                width[g] = w
        out = []
        for i, (level, key, value) in enumerate(lines):
            if value is None:
                out.append("  " * level + key)
            else:
                out.append(("  " * level + key.ljust(width[i]) + "  " + value).rstrip())
        return "\n".join(out) + "\n"


def _time(ts: Timestamp, is_set: bool) -> str:
    return format_rfc3339(ts) if is_set else NONE


def _map(w: Writer, level: int, key: str, values: Mapping[str, str]) -> None:
    if not values:
        w.kv(level, key, NONE)
        return
    _list(w, level, key, [f"{k}={v}" for k, v in sorted(values.items())])


def _conditions(w: Writer, conditions: Sequence[meta_pb2.Condition], *, node: bool = False) -> None:
    if not conditions:
        w.kv(0, "Conditions", NONE)
        return
    w.line(0, "Conditions:")
    if node:
        rows = [
            [
                c.type,
                c.status,
                _time(c.last_heartbeat_time, c.HasField("last_heartbeat_time")),
                _time(c.last_transition_time, c.HasField("last_transition_time")),
                c.reason,
                c.message,
            ]
            for c in conditions
        ]
        headers = ["Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"]
    else:
        rows = [[c.type, c.status] for c in conditions]
        headers = ["Type", "Status"]
    _table(w, 1, headers, rows)


def _table(w: Writer, level: int, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    rows = list(rows)
    underline = ["-" * len(h) for h in headers]
    text = printers.render_table(headers, [underline, *rows]) if len(headers) > 0 else ""
    for line in text.splitlines():
        w.line(level, line)


def events_section(w: Writer, events: Iterable[event_pb2.Event], now: float) -> None:
    events = printers.sort_events(events)
    if not events:
        w.kv(0, "Events", NONE)
        return
    w.line(0, "Events:")
    rows = []
    for ev in events:
        seen = printers.event_last_seen(ev, now)
        rows.append(
            [ev.type or "Normal", ev.reason, seen, ev.source.component or NONE, " ".join(ev.message.split())]
        )
    _table(w, 1, ["Type", "Reason", "Age", "From", "Message"], rows)


def _resources(w: Writer, level: int, key: str, rl: meta_pb2.ResourceList) -> None:
    values = []
    if rl.cpu_millis:
        values.append(("cpu", quantity.format_cpu(rl.cpu_millis)))
    if rl.memory_bytes:
        values.append(("memory", quantity.format_memory(rl.memory_bytes)))
    if rl.pods:
        values.append(("pods", str(rl.pods)))
    if rl.ephemeral_storage_bytes:
        values.append(("ephemeral-storage", quantity.format_memory(rl.ephemeral_storage_bytes)))
    values += [(k, str(v)) for k, v in sorted(rl.extended.items())]
    if not values:
        return
    w.line(level, f"{key}:")
    for k, v in values:
        w.kv(level + 1, k, v)


def _state(w: Writer, level: int, key: str, state: pod_pb2.ContainerState) -> None:
    if state.HasField("running"):
        w.kv(level, key, "Running")
        r = state.running
        w.kv(level + 1, "Started", _time(r.started_at, r.HasField("started_at")))
    elif state.HasField("terminated"):
        t = state.terminated
        w.kv(level, key, "Terminated")
        if t.reason:
            w.kv(level + 1, "Reason", t.reason)
        if t.message:
            w.kv(level + 1, "Message", t.message)
        w.kv(level + 1, "Exit Code", t.exit_code)
        if t.signal:
            w.kv(level + 1, "Signal", t.signal)
        w.kv(level + 1, "Started", _time(t.started_at, t.HasField("started_at")))
        w.kv(level + 1, "Finished", _time(t.finished_at, t.HasField("finished_at")))
    elif state.HasField("waiting"):
        w.kv(level, key, "Waiting")
        if state.waiting.reason:
            w.kv(level + 1, "Reason", state.waiting.reason)
        if state.waiting.message:
            w.kv(level + 1, "Message", state.waiting.message)
    else:
        w.kv(level, key, "Waiting" if key == "State" else NONE)


def _probe(p: pod_pb2.Probe) -> str:
    if p.HasField("http_get"):
        h = p.http_get
        action = f"http-get {(h.scheme or 'HTTP').lower()}://{h.host or ''}:{h.port}{h.path or '/'}"
    elif p.HasField("tcp_socket"):
        action = f"tcp-socket {p.tcp_socket.host or ''}:{p.tcp_socket.port}"
    elif p.HasField("exec"):
        action = "exec [" + " ".join(p.exec.command) + "]"
    else:
        action = "<unknown>"
    return (
        f"{action} delay={p.initial_delay_seconds}s timeout={p.timeout_seconds or 1}s "
        f"period={p.period_seconds or 10}s #success={p.success_threshold or 1} "
        f"#failure={p.failure_threshold or 3}"
    )


def _container(w: Writer, c: pod_pb2.Container, status: pod_pb2.ContainerStatus | None) -> None:
    w.line(1, f"{c.name}:")
    w.kv(2, "Container ID", (status.container_id if status else "") or "")
    w.kv(2, "Image", c.image)
    w.kv(2, "Image ID", (status.image_id if status else "") or "")
    if c.ports:
        w.kv(2, "Ports", ", ".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports))
        host_ports = [p.host_port for p in c.ports if p.host_port]
        if host_ports:
            w.kv(2, "Host Ports", ", ".join(f"{hp}/TCP" for hp in host_ports))
    for key, values in (("Command", c.command), ("Args", c.args)):
        if values:
            w.line(2, f"{key}:")
            for v in values:
                w.line(3, v)
    if status is not None:
        _state(w, 2, "State", status.state)
        if status.last_state.HasField("terminated") or status.last_state.HasField("waiting"):
            _state(w, 2, "Last State", status.last_state)
        w.kv(2, "Ready", "True" if status.ready else "False")
        w.kv(2, "Restart Count", status.restart_count)
    else:
        w.kv(2, "State", "Waiting")
        w.kv(2, "Ready", "False")
        w.kv(2, "Restart Count", 0)
    _resources(w, 2, "Limits", c.resources.limits)
    _resources(w, 2, "Requests", c.resources.requests)
    for key, probe_field in (
        ("Liveness", "liveness_probe"),
        ("Readiness", "readiness_probe"),
        ("Startup", "startup_probe"),
    ):
        if c.HasField(probe_field):
            w.kv(2, key, _probe(getattr(c, probe_field)))
    if c.env_from:
        w.line(2, "Environment Variables from:")
        for ef in c.env_from:
            w.line(3, _env_from(ef))
    if c.env:
        w.line(2, "Environment:")
        for e in c.env:
            w.kv(3, e.name, _env_value(e))
    else:
        w.kv(2, "Environment", NONE)
    if c.volume_mounts:
        w.line(2, "Mounts:")
        for m in c.volume_mounts:
            mode = "ro" if m.read_only else "rw"
            w.line(3, f"{m.mount_path} from {m.name} ({mode})")
    else:
        w.kv(2, "Mounts", NONE)


def _env_value(e: pod_pb2.EnvVar) -> str:
    """kubectl's words for where a variable's value comes from (never a Secret's value)."""
    vf = e.value_from
    if not e.HasField("value_from"):
        return e.value
    opt = " Optional: true" if (vf.config_map_key_ref.optional or vf.secret_key_ref.optional) else ""
    if vf.HasField("config_map_key_ref"):
        r = vf.config_map_key_ref
        return f"<set to the key '{r.key}' of config map '{r.name}'>{opt}"
    if vf.HasField("secret_key_ref"):
        r2 = vf.secret_key_ref
        return f"<set to the key '{r2.key}' in secret '{r2.name}'>{opt}"
    if vf.HasField("field_ref"):
        return f"({vf.field_ref.field_path})"
    if vf.HasField("resource_field_ref"):
        return f"({vf.resource_field_ref.resource})"
    return e.value


def _env_from(ef: pod_pb2.EnvFromSource) -> str:
    if ef.HasField("config_map_ref"):
        what, name, optional = "ConfigMap", ef.config_map_ref.name, ef.config_map_ref.optional
    else:
        what, name, optional = "Secret", ef.secret_ref.name, ef.secret_ref.optional
    prefix = f" with prefix '{ef.prefix}'" if ef.prefix else ""
    return f"{name}  {what}{prefix}  Optional: {'true' if optional else 'false'}"


def _meta_head(w: Writer, meta: meta_pb2.ObjectMeta, *, namespaced: bool) -> None:
    w.kv(0, "Name", meta.name)
    if namespaced:
        w.kv(0, "Namespace", meta.namespace or "default")
    _map(w, 0, "Labels", meta.labels)
    _map(w, 0, "Annotations", {k: v for k, v in meta.annotations.items() if k not in HIDDEN_ANNOTATIONS})


def describe_service(svc: service_pb2.Service, ep: service_pb2.Endpoints | None,
                     events: Iterable[event_pb2.Event], now: float) -> str:
    w = Writer()
    _meta_head(w, svc.metadata, namespaced=True)
    _map(w, 0, "Selector", svc.spec.selector)
    w.kv(0, "Type", svc.spec.type or "ClusterIP")
    w.kv(0, "IP", svc.spec.cluster_ip or "None")
    for p in svc.spec.ports:
        w.kv(0, "Port", f"{p.name or '<unset>'}  {p.port}/{p.protocol or 'TCP'}")
        w.kv(0, "TargetPort", f"{p.target_port}/{p.protocol or 'TCP'}")
    w.kv(0, "Endpoints", printers.endpoint_list(ep, limit=10) if ep is not None else NONE)
    events_section(w, events, now)
    return w.render()


def describe_namespace(ns: namespace_pb2.Namespace, events: Iterable[event_pb2.Event], now: float) -> str:
    w = Writer()
    _meta_head(w, ns.metadata, namespaced=False)
    w.kv(0, "Status", ns.status.phase or "Active")
    events_section(w, events, now)
    return w.render()


def describe_configmap(cm: config_pb2.ConfigMap, events: Iterable[event_pb2.Event], now: float) -> str:
    w = Writer()
    _meta_head(w, cm.metadata, namespaced=True)
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for k in sorted(cm.data):
        w.line(0, f"{k}:")
        w.line(0, "----")
        w.line(0, cm.data[k])
        w.line(0, "")
    w.line(0, "")
    w.line(0, "BinaryData")
    w.line(0, "====")
    for k in sorted(cm.binary_data):
        w.line(0, f"{k}: {len(cm.binary_data[k])} bytes")
    w.line(0, "")
    events_section(w, events, now)
    return w.render()


def describe_secret(s: config_pb2.Secret, events: Iterable[event_pb2.Event], now: float) -> str:
    """Key names and sizes only, as kubectl describes a Secret: the values need `-o yaml|json`."""
    w = Writer()
    _meta_head(w, s.metadata, namespaced=True)
    w.line(0, "")
    w.kv(0, "Type", s.type or "Opaque")
    w.line(0, "")
    w.line(0, "Data")
    w.line(0, "====")
    for k in sorted(s.data):
        w.kv(0, k, f"{len(s.data[k])} bytes")
    events_section(w, events, now)
    return w.render()


def describe_pod(pod: pod_pb2.Pod, events: Iterable[event_pb2.Event], now: float) -> str:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    w = Writer()
    w.kv(0, "Name", meta.name)
    w.kv(0, "Namespace", meta.namespace or "default")
    w.kv(0, "Priority", spec.priority)
    if spec.priority_class_name:
        w.kv(0, "Priority Class Name", spec.priority_class_name)
    node = spec.node_name or NONE
    if spec.node_name and status.host_ip:
        node = f"{spec.node_name}/{status.host_ip}"
    w.kv(0, "Node", node)
    w.kv(0, "Start Time", _time(status.start_time, status.HasField("start_time")))
    _map(w, 0, "Labels", meta.labels)
    _map(w, 0, "Annotations", {k: v for k, v in meta.annotations.items() if k not in HIDDEN_ANNOTATIONS})
    shown = printers.pod_status(pod)
    w.kv(0, "Status", shown if shown == "Terminating" else (status.phase or "Pending"))
    if meta.HasField("deletion_timestamp"):
        grace = meta.deletion_grace_period_seconds if meta.HasField("deletion_grace_period_seconds") else 0
        w.kv(0, "Termination Grace Period", f"{grace}s")
    if status.reason:
        w.kv(0, "Reason", status.reason)
    if status.message:
        w.kv(0, "Message", status.message)
    w.kv(0, "IP", status.pod_ip or "")
    if status.nominated_node_name:
        w.kv(0, "Nominated Node Name", status.nominated_node_name)
    by_name = {cs.name: cs for cs in status.container_statuses}
    init_by_name = {cs.name: cs for cs in status.init_container_statuses}
    if spec.init_containers:
        w.line(0, "Init Containers:")
        for c in spec.init_containers:
            _container(w, c, init_by_name.get(c.name))
    w.line(0, "Containers:")
    for c in spec.containers:
        _container(w, c, by_name.get(c.name))
    _conditions(w, list(status.conditions))
    if spec.volumes:
        w.line(0, "Volumes:")
        for v in spec.volumes:
            w.line(1, f"{v.name}:")
            if v.HasField("empty_dir"):
                w.kv(2, "Type", "EmptyDir (a temporary directory that shares a pod's lifetime)")
                w.kv(2, "Medium", v.empty_dir.medium)
                limit = v.empty_dir.size_limit_bytes
                w.kv(2, "SizeLimit", quantity.format_memory(limit) if limit else "<unset>")
            elif v.HasField("host_path"):
                w.kv(2, "Type", f"HostPath (bare host directory volume) {v.host_path.type}".rstrip())
                w.kv(2, "Path", v.host_path.path)
            elif v.HasField("config_map"):
                w.kv(2, "Type", "ConfigMap (a volume populated by a ConfigMap)")
                w.kv(2, "Name", v.config_map.name)
                w.kv(2, "Optional", "true" if v.config_map.optional else "false")
            elif v.HasField("secret"):
                w.kv(2, "Type", "Secret (a volume populated by a Secret)")
                w.kv(2, "SecretName", v.secret.secret_name)
                w.kv(2, "Optional", "true" if v.secret.optional else "false")
    else:
        w.kv(0, "Volumes", NONE)
    w.kv(0, "QoS Class", status.qos_class or NONE)
    _map(w, 0, "Node-Selectors", spec.node_selector)
    tolerations = [
        f"{t.key or '<all>'}"
        + (f"={t.value}" if t.value else "")
        + (f":{t.effect}" if t.effect else "")
        + (f" op={t.operator}" if t.operator == "Exists" and t.key else "")
        + (f" for {t.toleration_seconds}s" if t.HasField("toleration_seconds") else "")
        for t in spec.tolerations
    ]
    _list(w, 0, "Tolerations", tolerations)
    events_section(w, events, now)
    return w.render()


def _list(w: Writer, level: int, key: str, values: Sequence[str]) -> None:
    if not values:
        w.kv(level, key, NONE)
        return
    w.kv(level, key, values[0])
    for v in values[1:]:
        w.cont(level, v)


def describe_node(
    node: node_pb2.Node, pods: Iterable[pod_pb2.Pod], events: Iterable[event_pb2.Event], now: float
) -> str:
    meta, spec, status = node.metadata, node.spec, node.status
    w = Writer()
    w.kv(0, "Name", meta.name)
    w.kv(0, "Roles", printers.node_roles(node))
    _map(w, 0, "Labels", meta.labels)
    _map(w, 0, "Annotations", {k: v for k, v in meta.annotations.items() if k not in HIDDEN_ANNOTATIONS})
    w.kv(0, "CreationTimestamp", _time(meta.creation_timestamp, meta.HasField("creation_timestamp")))
    taints = [f"{t.key}" + (f"={t.value}" if t.value else "") + f":{t.effect}" for t in spec.taints]
    _list(w, 0, "Taints", taints)
    w.kv(0, "Unschedulable", "true" if spec.unschedulable else "false")
    if spec.provider_id:
        w.kv(0, "ProviderID", spec.provider_id)
    _conditions(w, list(status.conditions), node=True)
    w.line(0, "Addresses:")
    for a in status.addresses:
        w.kv(1, a.type, a.address)
    for key, field_name in (("Capacity", "capacity"), ("Allocatable", "allocatable")):
        rl: meta_pb2.ResourceList = getattr(status, field_name)
        _resources(w, 0, key, rl)
    info = status.node_info
    w.line(0, "System Info:")
    for key, value in (
        ("Machine ID", info.machine_id),
        ("Kernel Version", info.kernel_version),
        ("OS Image", info.os_image),
        ("Operating System", info.operating_system),
        ("Architecture", info.architecture),
        ("Container Runtime Version", info.container_runtime_version),
        ("Agent Version", info.agent_version),
    ):
        w.kv(1, key, value)
    if status.daemon_endpoint:
        w.kv(0, "Agent Endpoint", status.daemon_endpoint)
    active = [
        p for p in pods if p.spec.node_name == meta.name and not is_terminal(p.status.phase)
    ]
    alloc = status.allocatable if status.HasField("allocatable") else status.capacity
    w.line(0, f"Non-terminated Pods:          ({len(active)} in total)")
    if active:
        rows = []
        for p in sorted(active, key=lambda p: (p.metadata.namespace, p.metadata.name)):
            cpu = sum(c.resources.requests.cpu_millis for c in p.spec.containers)
            mem = sum(c.resources.requests.memory_bytes for c in p.spec.containers)
            rows.append(
                [
                    p.metadata.namespace or "default",
                    p.metadata.name,
                    f"{quantity.format_cpu(cpu)} ({_percent(cpu, alloc.cpu_millis)})",
                    f"{quantity.format_memory(mem)} ({_percent(mem, alloc.memory_bytes)})",
                    printers.age(
                        p.metadata.creation_timestamp, now, is_set=p.metadata.HasField("creation_timestamp")
                    ),
                ]
            )
        _table(w, 1, ["Namespace", "Name", "CPU Requests", "Memory Requests", "Age"], rows)
    cpu_total = sum(c.resources.requests.cpu_millis for p in active for c in p.spec.containers)
    mem_total = sum(c.resources.requests.memory_bytes for p in active for c in p.spec.containers)
    w.line(0, "Allocated resources:")
    _table(
        w,
        1,
        ["Resource", "Requests"],
        [
            ["cpu", f"{quantity.format_cpu(cpu_total)} ({_percent(cpu_total, alloc.cpu_millis)})"],
            ["memory", f"{quantity.format_memory(mem_total)} ({_percent(mem_total, alloc.memory_bytes)})"],
            ["pods", f"{len(active)}" + (f" ({_percent(len(active), alloc.pods)})" if alloc.pods else "")],
        ],
    )
    events_section(w, events, now)
    return w.render()


def _percent(part: int, whole: int) -> str:
    return f"{part * 100 // whole}%" if whole else "0%"


def describe_vm(vm: vm_pb2.VM, events: Iterable[event_pb2.Event], now: float) -> str:
    meta, spec, status = vm.metadata, vm.spec, vm.status
    w = Writer()
    w.kv(0, "Name", meta.name)
    w.kv(0, "Class", spec.class_name or NONE)
    w.kv(0, "Provider", spec.provider or NONE)
    _map(w, 0, "Labels", meta.labels)
    _map(w, 0, "Annotations", {k: v for k, v in meta.annotations.items() if k not in HIDDEN_ANNOTATIONS})
    w.kv(0, "CreationTimestamp", _time(meta.creation_timestamp, meta.HasField("creation_timestamp")))
    w.kv(0, "Phase", status.phase or "Pending")
    if status.message:
        w.kv(0, "Message", status.message)
    w.kv(0, "CPU", quantity.format_cpu(spec.cpu_millis) if spec.cpu_millis else NONE)
    w.kv(0, "Memory", quantity.format_memory(spec.memory_bytes) if spec.memory_bytes else NONE)
    if spec.image:
        w.kv(0, "Image", spec.image)
    w.kv(0, "Template", "true" if spec.template else "false")
    if spec.paused:
        w.kv(0, "Paused", "true")
    _map(w, 0, "Node Labels", spec.node_labels)
    w.kv(0, "Node", status.node_name or NONE)
    w.kv(0, "IP", status.ip or NONE)
    if status.hostname:
        w.kv(0, "Hostname", status.hostname)
    if status.provider_id:
        w.kv(0, "Provider ID", status.provider_id)
    w.line(0, "Lineage:")
    w.kv(1, "Clone Kind", status.clone_kind or NONE)
    w.kv(1, "Parent", spec.parent or NONE)
    w.kv(1, "Snapped Free", "true" if status.snapped_free else "false")
    _list(w, 1, "Children", list(status.children))
    w.line(0, "Timing:")
    w.kv(1, "Requested", _time(status.requested_at, status.HasField("requested_at")))
    w.kv(1, "Created", _time(status.created_at, status.HasField("created_at")))
    w.kv(1, "Ready", _time(status.ready_at, status.HasField("ready_at")))
    if status.HasField("requested_at") and status.HasField("ready_at"):
        took = (status.ready_at.seconds + status.ready_at.nanos / 1e9) - (
            status.requested_at.seconds + status.requested_at.nanos / 1e9
        )
        w.kv(1, "Requested To Ready", f"{took:.3f}s")
    events_section(w, events, now)
    return w.render()


# --- workloads (Deployment, ReplicaSet, Job, DaemonSet) -------------------------------------------


def _selector_text(sel: pod_pb2.LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted(sel.match_labels.items())]
    parts += [f"{r.key} {r.operator} ({','.join(r.values)})" if r.values else f"{r.key} {r.operator}"
              for r in sel.match_expressions]
    return ",".join(parts) or NONE


def _pod_template(w: Writer, tmpl: workload_pb2.PodTemplateSpec) -> None:
    w.line(0, "Pod Template:")
    _map(w, 1, "Labels", tmpl.metadata.labels)
    w.line(1, "Containers:")
    for c in tmpl.spec.containers:
        w.line(2, f"{c.name}:")
        w.kv(3, "Image", c.image)
        if c.ports:
            w.kv(3, "Ports", ", ".join(f"{p.container_port}/{p.protocol or 'TCP'}" for p in c.ports))
        if c.command:
            w.kv(3, "Command", " ".join(c.command))
        if c.HasField("readiness_probe"):
            w.kv(3, "Readiness", _probe(c.readiness_probe))
    if tmpl.spec.node_selector:
        _map(w, 1, "Node-Selectors", tmpl.spec.node_selector)


def _workload_head(w: Writer, meta: meta_pb2.ObjectMeta, selector: pod_pb2.LabelSelector) -> None:
    _meta_head(w, meta, namespaced=True)
    w.kv(0, "CreationTimestamp", _time(meta.creation_timestamp, meta.HasField("creation_timestamp")))
    w.kv(0, "Selector", _selector_text(selector))


def _conditions_with_reasons(w: Writer, conditions: Sequence[meta_pb2.Condition]) -> None:
    if not conditions:
        w.kv(0, "Conditions", NONE)
        return
    w.line(0, "Conditions:")
    _table(w, 1, ["Type", "Status", "Reason"], [[c.type, c.status, c.reason or NONE] for c in conditions])


def describe_deployment(d: workload_pb2.Deployment, sets: Sequence[workload_pb2.ReplicaSet],
                        events: Iterable[event_pb2.Event], now: float) -> str:
    """kubectl's layout: replicas line, strategy, template, conditions, the old and new sets."""
    spec, st = d.spec, d.status
    w = Writer()
    _workload_head(w, d.metadata, spec.selector)
    w.kv(0, "Replicas", f"{spec.replicas} desired | {st.updated_replicas} updated | {st.replicas} total | "
                        f"{st.available_replicas} available | {st.unavailable_replicas} unavailable")
    w.kv(0, "StrategyType", spec.strategy.type or "RollingUpdate")
    w.kv(0, "MinReadySeconds", spec.min_ready_seconds)
    if spec.strategy.type != "Recreate":
        ru = spec.strategy.rolling_update
        w.kv(0, "RollingUpdateStrategy", f"{ru.max_unavailable} max unavailable, {ru.max_surge} max surge")
    _pod_template(w, spec.template)
    _conditions_with_reasons(w, st.conditions)
    # The new set has the highest revision (the controller renumbers a set that becomes new again).
    ordered = sorted(sets, key=lambda rs: int(rs.metadata.annotations.get(REVISION_ANNOTATION, "0") or 0))
    new = ordered[-1:]
    old = [rs for rs in ordered[:-1] if rs.spec.replicas > 0 or rs.status.replicas > 0]

    def created(rs: workload_pb2.ReplicaSet) -> str:
        return f"{rs.metadata.name} ({rs.status.replicas}/{rs.spec.replicas} replicas created)"

    w.kv(0, "OldReplicaSets", ", ".join(created(rs) for rs in old) or NONE)
    w.kv(0, "NewReplicaSet", ", ".join(created(rs) for rs in new) or NONE)
    events_section(w, events, now)
    return w.render()


def describe_replicaset(rs: workload_pb2.ReplicaSet, events: Iterable[event_pb2.Event], now: float) -> str:
    w = Writer()
    _workload_head(w, rs.metadata, rs.spec.selector)
    owner = next((f"{r.kind}/{r.name}" for r in rs.metadata.owner_references if r.controller), NONE)
    w.kv(0, "Controlled By", owner)
    w.kv(0, "Replicas", f"{rs.status.replicas} current / {rs.spec.replicas} desired")
    w.kv(0, "Pods Status", f"{rs.status.ready_replicas} Ready / {rs.status.available_replicas} Available")
    _pod_template(w, rs.spec.template)
    _conditions_with_reasons(w, rs.status.conditions)
    events_section(w, events, now)
    return w.render()


def describe_job(job: workload_pb2.Job, events: Iterable[event_pb2.Event], now: float) -> str:
    spec, st = job.spec, job.status
    w = Writer()
    _workload_head(w, job.metadata, spec.selector)
    w.kv(0, "Parallelism", spec.parallelism)
    w.kv(0, "Completions", spec.completions)
    w.kv(0, "Backoff Limit", spec.backoff_limit)
    if spec.HasField("active_deadline_seconds"):
        w.kv(0, "Active Deadline Seconds", f"{spec.active_deadline_seconds}s")
    if spec.HasField("ttl_seconds_after_finished"):
        w.kv(0, "TTL Seconds After Finished", spec.ttl_seconds_after_finished)
    w.kv(0, "Start Time", _time(st.start_time, st.HasField("start_time")))
    if st.HasField("completion_time"):
        w.kv(0, "Completed At", _time(st.completion_time, True))
    w.kv(0, "Pods Statuses", f"{st.active} Active ({st.ready} Ready) / {st.succeeded} Succeeded / "
                             f"{st.failed} Failed")
    _pod_template(w, spec.template)
    _conditions_with_reasons(w, st.conditions)
    events_section(w, events, now)
    return w.render()


def describe_daemonset(ds: workload_pb2.DaemonSet, events: Iterable[event_pb2.Event], now: float) -> str:
    st = ds.status
    w = Writer()
    _workload_head(w, ds.metadata, ds.spec.selector)
    selector = ds.spec.template.spec.node_selector
    w.kv(0, "Node-Selector", ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or NONE)
    w.kv(0, "Desired Number of Nodes Scheduled", st.desired_number_scheduled)
    w.kv(0, "Current Number of Nodes Scheduled", st.current_number_scheduled)
    w.kv(0, "Number of Nodes Scheduled with Up-to-date Pods", st.updated_number_scheduled)
    w.kv(0, "Number of Nodes Scheduled with Available Pods", st.number_available)
    w.kv(0, "Number of Nodes Misscheduled", st.number_misscheduled)
    w.kv(0, "Pods Status", f"{st.number_ready} Ready / {st.number_unavailable} Unavailable")
    w.kv(0, "Update Strategy", ds.spec.update_strategy.type or "RollingUpdate")
    _pod_template(w, ds.spec.template)
    events_section(w, events, now)
    return w.render()


# --- endpoints, priority classes, and the generic view (leases, events) -------------------------


def describe_endpoints(ep: service_pb2.Endpoints, events: Iterable[event_pb2.Event], now: float) -> str:
    """kubectl's layout: each subset's ready and not-ready addresses, and its ports."""
    w = Writer()
    _meta_head(w, ep.metadata, namespaced=True)
    if not ep.subsets:
        w.kv(0, "Subsets", "")
    else:
        w.line(0, "Subsets:")
    for s in ep.subsets:
        w.kv(1, "Addresses", ",".join(a.ip for a in s.addresses) or NONE)
        w.kv(1, "NotReadyAddresses", ",".join(a.ip for a in s.not_ready_addresses) or NONE)
        if s.ports:
            w.line(1, "Ports:")
            _table(w, 2, ["Name", "Port", "Protocol"],
                   [[p.name or "<unset>", str(p.port), p.protocol or "TCP"] for p in s.ports])
        w.line(0, "")
    events_section(w, events, now)
    return w.render()


def describe_priorityclass(pc: scheduling_pb2.PriorityClass, events: Iterable[event_pb2.Event],
                           now: float) -> str:
    """kubectl's fields for a PriorityClass (cluster-scoped: no namespace)."""
    w = Writer()
    w.kv(0, "Name", pc.metadata.name)
    w.kv(0, "Value", pc.value)
    w.kv(0, "GlobalDefault", "true" if pc.global_default else "false")
    w.kv(0, "PreemptionPolicy", pc.preemption_policy or "PreemptLowerPriority")
    w.kv(0, "Description", pc.description)
    shown = {k: v for k, v in pc.metadata.annotations.items() if k not in HIDDEN_ANNOTATIONS}
    _map(w, 0, "Annotations", shown)
    events_section(w, events, now)
    return w.render()


# Spelled as Kubernetes spells them when a camelCase field name becomes words.
_ACRONYMS = {"Uid": "UID", "Ip": "IP", "Id": "ID", "Url": "URL", "Api": "API"}
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Shown by the head (Name, Namespace, Labels, Annotations) or bookkeeping nobody reads.
_HEAD_META = frozenset({"name", "namespace", "labels", "annotations", "managedFields"})


def field_words(key: str) -> str:
    """`holderIdentity` -> `Holder Identity`, `uid` -> `UID`: kubectl's generic describer."""
    words = [w[:1].upper() + w[1:] for w in _WORD_BREAK.sub(" ", key).split(" ")]
    return " ".join(_ACRONYMS.get(w, w) for w in words)


def _generic_value(w: Writer, level: int, key: str, value: object) -> None:
    if isinstance(value, dict):
        if not value:
            return
        w.line(level, f"{key}:")
        for k, v in value.items():
            _generic_value(w, level + 1, field_words(str(k)), v)
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            w.kv(level, key, ", ".join(str(v) for v in value) or NONE)
            return
        w.line(level, f"{key}:")
        for v in value:
            if isinstance(v, dict):
                for k, x in v.items():
                    _generic_value(w, level + 1, field_words(str(k)), x)
            else:
                _generic_value(w, level + 1, "-", v)
    elif isinstance(value, bool):
        w.kv(level, key, "true" if value else "false")
    else:
        w.kv(level, key, value)


def describe_generic(obj: Message, events: Iterable[event_pb2.Event], now: float) -> str:
    """Every field of the object as nested `Key: value` lines, as kubectl describes a kind it
    has no describer for (Leases, Events): the head, then API Version, Kind, the rest of the
    metadata and each top-level field in the manifest's order."""
    data = encode_object(obj)
    meta_msg: meta_pb2.ObjectMeta = obj.metadata  # type: ignore[attr-defined]
    w = Writer()
    _meta_head(w, meta_msg, namespaced=bool(meta_msg.namespace))
    meta = {k: v for k, v in data.get("metadata", {}).items() if k not in _HEAD_META}
    for key, value in data.items():
        if key == "metadata":
            _generic_value(w, 0, "Metadata", meta)
        else:
            _generic_value(w, 0, field_words(key), value)
    events_section(w, events, now)
    return w.render()


def describe_lease(lease: lease_pb2.Lease, events: Iterable[event_pb2.Event], now: float) -> str:
    return describe_generic(lease, events, now)


def describe_event(ev: event_pb2.Event, events: Iterable[event_pb2.Event], now: float) -> str:
    return describe_generic(ev, events, now)

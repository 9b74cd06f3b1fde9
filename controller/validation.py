"""Validation: pure functions over protobuf objects, run before anything is stored.

Every problem is reported with its Kubernetes camelCase field path and a reason,
e.g. `spec.containers[0].image: required`. All problems found are reported in one
`Invalid` (the first one's path is the error's `field`), so a user fixes a
manifest in one go.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from controller.specmemo import SpecMemo
from cowpod.api import podfields, quantity
from cowpod.api import validation as rules
from cowpod.api.phases import PodPhase, VMPhase
from cowpod.api.validation import (
    CONDITION_STATUSES,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    ENV_NAME,
    LABEL_NAME,
    LABEL_SELECTOR_OPERATORS,
    LABEL_VALUE,
    NODE_SELECTOR_OPERATORS,
    PORT_NAME,
    RESTART_POLICIES,
    TAINT_EFFECTS,
    VOLUME_SOURCES,
)
from cowpod.errors import Invalid
from cowpod.v1 import event_pb2, lease_pb2, node_pb2, pod_pb2, vm_pb2
from hypervisor import registry

# The patterns and value sets are cowpod.api.validation's (the CLI checks manifests
# with the same ones); "" is added here where a field may be left unset.
PULL_POLICIES = ("", *rules.PULL_POLICIES)
PROTOCOLS = ("", *rules.PROTOCOLS)
TOLERATION_OPERATORS = ("", *rules.TOLERATION_OPERATORS)
POD_PHASES = ("", *(p.value for p in PodPhase))
VM_PHASES = ("", *(p.value for p in VMPhase))
# "" = the controller's provider; otherwise one of hypervisor.registry's.
VM_PROVIDERS = ("", *registry.names())
EVENT_TYPES = ("", *rules.EVENT_TYPES)
MAX_ANNOTATIONS_BYTES = 256 * 1024


class Errors:
    """Collects (path, reason) pairs; `raise_if_any` turns them into one `Invalid`."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, reason: str) -> None:
        self.items.append((path, reason))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        path, reason = self.items[0]
        rest = "; ".join(f"{p}: {r}" for p, r in self.items[1:])
        raise Invalid(path, f"{reason}; {rest}" if rest else reason)


# --- names and labels -----------------------------------------------------------------------------


def dns_subdomain(errs: Errors, path: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            errs.add(path, "required")
        return
    if len(value) > 253:
        errs.add(path, f"must be no more than 253 characters (got {len(value)})")
    elif not DNS1123_SUBDOMAIN.match(value):
        errs.add(path, f"invalid value {value!r}: a lowercase RFC 1123 subdomain must consist of "
                       "lower case alphanumeric characters, '-' or '.', and must start and end "
                       "with an alphanumeric character")


def dns_label(errs: Errors, path: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            errs.add(path, "required")
        return
    if len(value) > 63:
        errs.add(path, f"must be no more than 63 characters (got {len(value)})")
    elif not DNS1123_LABEL.match(value):
        errs.add(path, f"invalid value {value!r}: a lowercase RFC 1123 label must consist of "
                       "lower case alphanumeric characters or '-', and must start and end with an "
                       "alphanumeric character")


def qualified_name(errs: Errors, path: str, key: str) -> None:
    """A label/annotation/taint key: optional DNS-subdomain prefix, '/', name of ≤ 63 chars."""
    if not key:
        errs.add(path, "key must not be empty")
        return
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            errs.add(path, f"key {key!r}: prefix part must not be empty")
        elif len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix):
            errs.add(path, f"key {key!r}: prefix part must be a lowercase RFC 1123 subdomain")
    if not name:
        errs.add(path, f"key {key!r}: name part must not be empty")
    elif len(name) > 63:
        errs.add(path, f"key {key!r}: name part must be no more than 63 characters")
    elif not LABEL_NAME.match(name):
        errs.add(path, f"key {key!r}: name part must consist of alphanumeric characters, '-', '_' "
                       "or '.', and must start and end with an alphanumeric character")


def label_value(errs: Errors, path: str, value: str) -> None:
    if len(value) > 63:
        errs.add(path, f"value {value!r} must be no more than 63 characters")
    elif not LABEL_VALUE.match(value):
        errs.add(path, f"value {value!r} must be empty or consist of alphanumeric characters, '-', "
                       "'_' or '.', and must start and end with an alphanumeric character")


def label_map(errs: Errors, path: str, m: Mapping[str, str]) -> None:
    for k in sorted(m):
        qualified_name(errs, f"{path}[{k}]", k)
        label_value(errs, f"{path}[{k}]", m[k])


def annotation_map(errs: Errors, path: str, m: Mapping[str, str]) -> None:
    total = 0
    for k in sorted(m):
        qualified_name(errs, f"{path}[{k}]", k)
        total += len(k) + len(m[k])
    if total > MAX_ANNOTATIONS_BYTES:
        errs.add(path, f"may not be more than {MAX_ANNOTATIONS_BYTES} bytes in total (got {total})")


def metadata(errs: Errors, meta: Any, *, namespaced: bool, name_label: bool = False) -> None:
    if name_label:
        dns_label(errs, "metadata.name", meta.name)
    else:
        dns_subdomain(errs, "metadata.name", meta.name)
    if namespaced:
        dns_label(errs, "metadata.namespace", meta.namespace)
    labels, annotations = meta.labels, meta.annotations
    if labels:  # an empty map has nothing to find
        label_map(errs, "metadata.labels", labels)
    if annotations:
        annotation_map(errs, "metadata.annotations", annotations)


def check_metadata(meta: Any, *, namespaced: bool) -> None:
    name = meta.name
    if (0 < len(name) <= 253 and DNS1123_SUBDOMAIN.match(name) and not meta.labels and not meta.annotations
            and (not namespaced or _valid_label(meta.namespace))):
        return  # what `metadata` checks, for the common case it has nothing to say about
    errs = Errors()
    metadata(errs, meta, namespaced=namespaced)
    errs.raise_if_any()


def _valid_label(value: str) -> bool:
    """Would `dns_label` (required) find nothing wrong with `value`?"""
    return 0 < len(value) <= 63 and DNS1123_LABEL.match(value) is not None


def one_of(errs: Errors, path: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        shown = ", ".join(f'"{a}"' for a in allowed if a)
        errs.add(path, f"unsupported value {value!r}: supported values: {shown}")


# --- pods -----------------------------------------------------------------------------------------


def _resource_list(errs: Errors, path: str, rl: Any) -> None:
    for f, name in (("cpu_millis", "cpu"), ("memory_bytes", "memory"), ("pods", "pods"),
                    ("ephemeral_storage_bytes", "ephemeral-storage")):
        if getattr(rl, f) < 0:
            errs.add(f"{path}.{name}", f"must be greater than or equal to 0 (got {getattr(rl, f)})")
    for k in sorted(rl.extended):
        if rl.extended[k] < 0:
            errs.add(f"{path}.{k}", f"must be greater than or equal to 0 (got {rl.extended[k]})")


def _resources(errs: Errors, path: str, r: pod_pb2.ResourceRequirements) -> None:
    _resource_list(errs, f"{path}.requests", r.requests)
    _resource_list(errs, f"{path}.limits", r.limits)
    for f, name in (("cpu_millis", "cpu"), ("memory_bytes", "memory"),
                    ("ephemeral_storage_bytes", "ephemeral-storage")):
        req, lim = getattr(r.requests, f), getattr(r.limits, f)
        if lim > 0 and req > lim:
            errs.add(f"{path}.requests.{name}", f"must be less than or equal to {name} limit "
                                                f"({req} > {lim})")
    for k in sorted(r.limits.extended):
        if r.requests.extended.get(k, 0) > r.limits.extended[k] > 0:
            errs.add(f"{path}.requests.{k}", f"must be less than or equal to {k} limit")


def port_name(errs: Errors, path: str, name: str) -> bool:
    """An IANA_SVC_NAME, as containerPort names and the named ports that refer to them are."""
    if len(name) > 15 or not PORT_NAME.match(name):
        errs.add(path, f"invalid port name {name!r}: must be no more than 15 "
                       "lower case alphanumeric characters or '-'")
        return False
    return True


def _port(errs: Errors, path: str, port: int, *, allow_zero: bool = False) -> None:
    if allow_zero and port == 0:
        return
    if not 1 <= port <= 65535:
        errs.add(path, f"must be between 1 and 65535, inclusive (got {port})")


def _handler_ports(errs: Errors, path: str, h: pod_pb2.Probe | pod_pb2.LifecycleHandler,
                   c: pod_pb2.Container) -> None:
    """httpGet/tcpSocket ports of a probe or lifecycle handler: a number, or the name of one
    of the container's ports (`port: http`; resolved into the number at create)."""
    for name, f in (("httpGet", "http_get"), ("tcpSocket", "tcp_socket")):
        if not h.HasField(f):
            continue
        action = getattr(h, f)
        if action.port_name:
            if podfields.named_port(c, action.port_name) is None:
                errs.add(f"{path}.{name}.port", f"no port named {action.port_name!r} in the container's "
                                                "ports")
        else:
            _port(errs, f"{path}.{name}.port", action.port)
    if h.HasField("http_get") and h.http_get.scheme not in ("", "HTTP", "HTTPS"):
        one_of(errs, f"{path}.httpGet.scheme", h.http_get.scheme, ("HTTP", "HTTPS"))


_LIFECYCLE_HANDLERS = (("exec", "exec"), ("httpGet", "http_get"), ("tcpSocket", "tcp_socket"),
                       ("sleep", "sleep"))


def _lifecycle(errs: Errors, path: str, c: pod_pb2.Container) -> None:
    for hook, f in (("postStart", "post_start"), ("preStop", "pre_stop")):
        if not c.lifecycle.HasField(f):
            continue
        h: pod_pb2.LifecycleHandler = getattr(c.lifecycle, f)
        hp = f"{path}.lifecycle.{hook}"
        set_ = [n for n, hf in _LIFECYCLE_HANDLERS if h.HasField(hf)]
        if len(set_) != 1:
            errs.add(hp, "must specify exactly one handler (exec, httpGet, tcpSocket or sleep)"
                         + (f"; got {', '.join(set_)}" if set_ else ""))
        if h.HasField("exec") and not h.exec.command:
            errs.add(f"{hp}.exec.command", "required")
        if h.HasField("sleep") and h.sleep.seconds < 0:
            errs.add(f"{hp}.sleep.seconds", f"must be greater than or equal to 0 (got {h.sleep.seconds})")
        _handler_ports(errs, hp, h, c)


_SECURITY_PROFILES = ("RuntimeDefault",)
# dnsPolicy values served (agent/dns.py): None is refused with its own reason.
DNS_POLICIES = ("", "ClusterFirst", "ClusterFirstWithHostNet", "Default")


def _security_context(errs: Errors, path: str, sc: pod_pb2.SecurityContext | pod_pb2.PodSecurityContext,
                      ) -> None:
    """What a securityContext may ask for here (privileged and capabilities.add are the pod
    security rules', cowpod.auth.podsecurity)."""
    for f, name in (("run_as_user", "runAsUser"), ("run_as_group", "runAsGroup")):
        if sc.HasField(f) and getattr(sc, f) < 0:
            errs.add(f"{path}.{name}", f"must be greater than or equal to 0 (got {getattr(sc, f)})")
    if sc.HasField("run_as_non_root") and sc.run_as_non_root and sc.HasField("run_as_user") \
            and sc.run_as_user == 0:
        errs.add(f"{path}.runAsUser", "must not be 0 when runAsNonRoot is true")
    for f, name in (("seccomp_profile", "seccompProfile"), ("app_armor_profile", "appArmorProfile")):
        if sc.HasField(f):
            kind = getattr(sc, f).type
            if kind not in _SECURITY_PROFILES:
                errs.add(f"{path}.{name}.type", f"unsupported value {kind!r}: only RuntimeDefault (the "
                                                "engine's default profile, always applied) is supported")
    if isinstance(sc, pod_pb2.SecurityContext):
        one_of(errs, f"{path}.procMount", sc.proc_mount, ("", "Default"))
        for i, cap in enumerate(sc.capabilities.drop):
            if not cap:
                errs.add(f"{path}.capabilities.drop[{i}]", "must not be empty")
    else:
        for i, g in enumerate(sc.supplemental_groups):
            if g < 0:
                errs.add(f"{path}.supplementalGroups[{i}]", f"must be greater than or equal to 0 (got {g})")
        if sc.HasField("fs_group") and sc.fs_group < 0:
            errs.add(f"{path}.fsGroup", f"must be greater than or equal to 0 (got {sc.fs_group})")


def _field_refs(errs: Errors, path: str, c: pod_pb2.Container, containers: set[str]) -> None:
    """fieldRef and resourceFieldRef: only what the agent can resolve, refused here, not on the node."""
    for i, e in enumerate(c.env):
        vf = e.value_from
        if vf.HasField("field_ref"):
            fp = f"{path}.env[{i}].valueFrom.fieldRef"
            if vf.field_ref.api_version not in ("", "v1"):
                errs.add(f"{fp}.apiVersion", f"unsupported value {vf.field_ref.api_version!r}: must be v1")
            why = podfields.field_ref_problem(vf.field_ref.field_path)
            if why is not None:
                errs.add(f"{fp}.fieldPath", why)
        if vf.HasField("resource_field_ref"):
            rp = f"{path}.env[{i}].valueFrom.resourceFieldRef"
            ref = vf.resource_field_ref
            if ref.resource not in podfields.RESOURCE_FIELD_REFS:
                errs.add(f"{rp}.resource", f"unsupported value {ref.resource!r}: must be one of "
                                           + ", ".join(podfields.RESOURCE_FIELD_REFS))
            if ref.container_name and ref.container_name not in containers:
                errs.add(f"{rp}.containerName", f"no container named {ref.container_name!r} in the pod")
            if ref.divisor:
                try:
                    if quantity.parse_quantity(ref.divisor) <= 0:
                        errs.add(f"{rp}.divisor", "must be greater than 0")
                except quantity.QuantityError as err:
                    errs.add(f"{rp}.divisor", str(err))


def _probe(errs: Errors, path: str, p: pod_pb2.Probe, c: pod_pb2.Container, *,
           liveness: bool = False) -> None:
    handlers = [n for n, f in (("exec", "exec"), ("httpGet", "http_get"), ("tcpSocket", "tcp_socket"))
                if p.HasField(f)]
    if len(handlers) == 0:
        errs.add(path, "must specify a handler type (exec, httpGet or tcpSocket)")
    elif len(handlers) > 1:
        errs.add(path, f"may not specify more than 1 handler type (got {', '.join(handlers)})")
    if p.HasField("exec") and not p.exec.command:
        errs.add(f"{path}.exec.command", "required")
    _handler_ports(errs, path, p, c)
    for f, name in (("initial_delay_seconds", "initialDelaySeconds"), ("period_seconds", "periodSeconds"),
                    ("timeout_seconds", "timeoutSeconds")):
        if getattr(p, f) < 0:
            errs.add(f"{path}.{name}", f"must be greater than or equal to 0 (got {getattr(p, f)})")
    # 0 means "use the default" (1 and 3) in the proto encoding; negative is nonsense.
    for f, name in (("success_threshold", "successThreshold"), ("failure_threshold", "failureThreshold")):
        if getattr(p, f) < 0:
            errs.add(f"{path}.{name}", f"must be greater than or equal to 1 (got {getattr(p, f)})")
    if liveness and p.success_threshold > 1:
        errs.add(f"{path}.successThreshold", "must be 1 for liveness and startup probes")


def _container(errs: Errors, path: str, c: pod_pb2.Container, volume_names: set[str],
               seen_names: set[str], init: bool) -> None:
    dns_label(errs, f"{path}.name", c.name)
    if c.name:
        if c.name in seen_names:
            errs.add(f"{path}.name", f"duplicate container name {c.name!r}")
        seen_names.add(c.name)
    if not c.image.strip():
        errs.add(f"{path}.image", "required")
    one_of(errs, f"{path}.imagePullPolicy", c.image_pull_policy, PULL_POLICIES)
    port_names: set[str] = set()
    for i, p in enumerate(c.ports):
        pp = f"{path}.ports[{i}]"
        _port(errs, f"{pp}.containerPort", p.container_port)
        _port(errs, f"{pp}.hostPort", p.host_port, allow_zero=True)
        one_of(errs, f"{pp}.protocol", p.protocol, PROTOCOLS)
        if p.name and port_name(errs, f"{pp}.name", p.name):
            if p.name in port_names:
                errs.add(f"{pp}.name", f"duplicate port name {p.name!r}")
            port_names.add(p.name)
    for i, e in enumerate(c.env):
        if not e.name:
            errs.add(f"{path}.env[{i}].name", "required")
        elif not ENV_NAME.match(e.name):
            errs.add(f"{path}.env[{i}].name", f"invalid environment variable name {e.name!r}")
        if e.value and e.HasField("value_from"):
            errs.add(f"{path}.env[{i}].valueFrom", "may not be specified when `value` is not empty")
    _config_env_sources(errs, path, c)
    _resources(errs, f"{path}.resources", c.resources)
    mount_paths: set[str] = set()
    for i, m in enumerate(c.volume_mounts):
        mp = f"{path}.volumeMounts[{i}]"
        if not m.name:
            errs.add(f"{mp}.name", "required")
        elif m.name not in volume_names:
            errs.add(f"{mp}.name", f"volume {m.name!r} not found in spec.volumes")
        if not m.mount_path:
            errs.add(f"{mp}.mountPath", "required")
        elif not m.mount_path.startswith("/"):
            errs.add(f"{mp}.mountPath", f"must be an absolute path (got {m.mount_path!r})")
        elif m.mount_path in mount_paths:
            errs.add(f"{mp}.mountPath", f"must be unique ({m.mount_path!r} is mounted twice)")
        mount_paths.add(m.mount_path)
        if m.sub_path:
            errs.add(f"{mp}.subPath", "not supported: mount the whole volume (mountPath) and use the "
                                      "path inside it")
    probes = (("livenessProbe", "liveness_probe", True), ("readinessProbe", "readiness_probe", False),
              ("startupProbe", "startup_probe", True))
    for name, f, live in probes:
        if c.HasField(f):
            if init:
                errs.add(f"{path}.{name}", "may not be set for init containers")
            else:
                _probe(errs, f"{path}.{name}", getattr(c, f), c, liveness=live)
    _lifecycle(errs, path, c)
    _security_context(errs, f"{path}.securityContext", c.security_context)


def _node_selector_requirement(errs: Errors, path: str, r: pod_pb2.NodeSelectorRequirement) -> None:
    qualified_name(errs, f"{path}.key", r.key)
    if r.operator not in NODE_SELECTOR_OPERATORS:
        one_of(errs, f"{path}.operator", r.operator, NODE_SELECTOR_OPERATORS)
        return
    if r.operator in ("In", "NotIn") and not r.values:
        errs.add(f"{path}.values", f"must be specified when `operator` is {r.operator!r}")
    if r.operator in ("Exists", "DoesNotExist") and r.values:
        errs.add(f"{path}.values", f"may not be specified when `operator` is {r.operator!r}")
    if r.operator in ("Gt", "Lt"):
        if len(r.values) != 1:
            errs.add(f"{path}.values", f"must be specified single value when `operator` is {r.operator!r}")
        else:
            try:
                int(r.values[0])
            except ValueError:
                errs.add(f"{path}.values[0]", f"must be an integer for {r.operator!r} (got {r.values[0]!r})")


def _node_selector_term(errs: Errors, path: str, t: pod_pb2.NodeSelectorTerm) -> None:
    for i, r in enumerate(t.match_expressions):
        _node_selector_requirement(errs, f"{path}.matchExpressions[{i}]", r)


def _affinity(errs: Errors, path: str, a: pod_pb2.Affinity) -> None:
    na = a.node_affinity
    req = na.required_during_scheduling_ignored_during_execution
    rp = f"{path}.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    if na.HasField("required_during_scheduling_ignored_during_execution") and not req.node_selector_terms:
        errs.add(f"{rp}.nodeSelectorTerms", "must have at least one node selector term")
    for i, t in enumerate(req.node_selector_terms):
        _node_selector_term(errs, f"{rp}.nodeSelectorTerms[{i}]", t)
    for i, p in enumerate(na.preferred_during_scheduling_ignored_during_execution):
        pp = f"{path}.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
        if not 1 <= p.weight <= 100:
            errs.add(f"{pp}.weight", f"must be in the range 1-100 (got {p.weight})")
        _node_selector_term(errs, f"{pp}.preference", p.preference)


def _downward_volumes(errs: Errors, spec: pod_pb2.PodSpec, containers: set[str]) -> None:
    """downwardAPI volume items: a safe relative path, exactly one of fieldRef (what a volume
    may hold: podfields.VOLUME_FIELD_REF_PATHS) or resourceFieldRef (naming a container)."""
    for i, v in enumerate(spec.volumes):
        if not v.HasField("downward_api"):
            continue
        vp = f"spec.volumes[{i}].downwardAPI"
        src = v.downward_api
        if src.HasField("default_mode") and not 0 <= src.default_mode <= 0o777:
            errs.add(f"{vp}.defaultMode", f"must be between 0 and 0777 (octal) (got {src.default_mode})")
        paths: set[str] = set()
        for j, item in enumerate(src.items):
            ip = f"{vp}.items[{j}]"
            parts = item.path.split("/")
            if not item.path:
                errs.add(f"{ip}.path", "required")
            elif item.path.startswith("/") or ".." in parts:
                errs.add(f"{ip}.path", f"must be a relative path without '..' (got {item.path!r})")
            elif item.path in paths:
                errs.add(f"{ip}.path", f"duplicate path {item.path!r}")
            paths.add(item.path)
            if item.HasField("mode") and not 0 <= item.mode <= 0o777:
                errs.add(f"{ip}.mode", f"must be between 0 and 0777 (octal) (got {item.mode})")
            if item.HasField("field_ref") == item.HasField("resource_field_ref"):
                errs.add(ip, "must specify exactly one of: fieldRef, resourceFieldRef")
            elif item.HasField("field_ref"):
                why = podfields.volume_field_ref_problem(item.field_ref.field_path)
                if why is not None:
                    errs.add(f"{ip}.fieldRef.fieldPath", why)
            else:
                ref = item.resource_field_ref
                if ref.resource not in podfields.RESOURCE_FIELD_REFS:
                    errs.add(f"{ip}.resourceFieldRef.resource", f"unsupported value {ref.resource!r}")
                if ref.container_name not in containers:
                    errs.add(f"{ip}.resourceFieldRef.containerName",
                             "required: a container of the pod" if not ref.container_name
                             else f"no container named {ref.container_name!r} in the pod")


def _pod_affinity_term(errs: Errors, path: str, t: pod_pb2.PodAffinityTerm) -> None:
    if not t.topology_key:
        errs.add(f"{path}.topologyKey", "required (e.g. kubernetes.io/hostname, cowpod.io/class)")
    else:
        qualified_name(errs, f"{path}.topologyKey", t.topology_key)
    _label_selector(errs, f"{path}.labelSelector", t.label_selector)
    ns_sel = t.namespace_selector
    if ns_sel.match_labels or ns_sel.match_expressions:
        errs.add(f"{path}.namespaceSelector", "only {} (every namespace) is supported; list the "
                                              "namespaces in `namespaces`")
    for i, ns in enumerate(t.namespaces):
        dns_label(errs, f"{path}.namespaces[{i}]", ns)


def _pod_affinity(errs: Errors, path: str, a: pod_pb2.Affinity) -> None:
    """podAffinity and podAntiAffinity (scheduler/plugins/inter_pod_affinity.py)."""
    for name, f in (("podAffinity", "pod_affinity"), ("podAntiAffinity", "pod_anti_affinity")):
        pa: pod_pb2.PodAffinity | pod_pb2.PodAntiAffinity = getattr(a, f)
        for i, t in enumerate(pa.required_during_scheduling_ignored_during_execution):
            _pod_affinity_term(errs, f"{path}.{name}.requiredDuringSchedulingIgnoredDuringExecution[{i}]", t)
        for i, w in enumerate(pa.preferred_during_scheduling_ignored_during_execution):
            wp = f"{path}.{name}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
            if not 1 <= w.weight <= 100:
                errs.add(f"{wp}.weight", f"must be in the range 1-100 (got {w.weight})")
            _pod_affinity_term(errs, f"{wp}.podAffinityTerm", w.pod_affinity_term)


def _toleration(errs: Errors, path: str, t: pod_pb2.Toleration) -> None:
    if t.key:
        qualified_name(errs, f"{path}.key", t.key)
    one_of(errs, f"{path}.operator", t.operator, TOLERATION_OPERATORS)
    if not t.key and t.operator != "Exists":
        errs.add(f"{path}.operator", f"must be 'Exists' when `key` is empty (got {t.operator or 'Equal'!r})")
    if t.operator == "Exists" and t.value:
        errs.add(f"{path}.value", "must be empty when `operator` is 'Exists'")
    if t.operator in ("", "Equal") and t.value:
        label_value(errs, f"{path}.value", t.value)
    one_of(errs, f"{path}.effect", t.effect, ("", *TAINT_EFFECTS))
    if t.HasField("toleration_seconds") and t.effect != "NoExecute":
        errs.add(f"{path}.tolerationSeconds", "may only be set when `effect` is 'NoExecute'")


def _label_selector(errs: Errors, path: str, s: pod_pb2.LabelSelector) -> None:
    label_map(errs, f"{path}.matchLabels", s.match_labels)
    for i, r in enumerate(s.match_expressions):
        rp = f"{path}.matchExpressions[{i}]"
        qualified_name(errs, f"{rp}.key", r.key)
        one_of(errs, f"{rp}.operator", r.operator, LABEL_SELECTOR_OPERATORS)
        if r.operator in ("In", "NotIn") and not r.values:
            errs.add(f"{rp}.values", f"must be specified when `operator` is {r.operator!r}")
        if r.operator in ("Exists", "DoesNotExist") and r.values:
            errs.add(f"{rp}.values", f"may not be specified when `operator` is {r.operator!r}")


def _volumes(errs: Errors, spec: pod_pb2.PodSpec) -> set[str]:
    names: set[str] = set()
    for i, v in enumerate(spec.volumes):
        vp = f"spec.volumes[{i}]"
        dns_label(errs, f"{vp}.name", v.name)
        if v.name in names:
            errs.add(f"{vp}.name", f"duplicate volume name {v.name!r}")
        names.add(v.name)
        if sum(v.HasField(f) for f in VOLUME_SOURCES) > 1:
            errs.add(vp, "may not specify more than 1 volume type")
        if v.HasField("config_map"):
            dns_subdomain(errs, f"{vp}.configMap.name", v.config_map.name)
            _key_paths(errs, f"{vp}.configMap", v.config_map)
        if v.HasField("secret"):
            dns_subdomain(errs, f"{vp}.secret.secretName", v.secret.secret_name)
            _key_paths(errs, f"{vp}.secret", v.secret)
        if v.HasField("host_path"):
            if not v.host_path.path.startswith("/"):
                errs.add(f"{vp}.hostPath.path", "must be an absolute path")
        if v.empty_dir.medium not in ("", "Memory"):
            one_of(errs, f"{vp}.emptyDir.medium", v.empty_dir.medium, ("Memory",))
        if v.empty_dir.size_limit_bytes < 0:
            errs.add(f"{vp}.emptyDir.sizeLimit", "must be greater than or equal to 0")
    return names


MAX_FILE_MODE = 0o777


def _file_mode(errs: Errors, path: str, mode: int) -> None:
    if not 0 <= mode <= MAX_FILE_MODE:
        errs.add(path, f"must be a number between 0 and 0777 (octal), both inclusive (got {mode})")


def _key_paths(errs: Errors, path: str,
               src: pod_pb2.ConfigMapVolumeSource | pod_pb2.SecretVolumeSource) -> None:
    """items (key -> relative path, mode) and defaultMode of a configMap/secret volume."""
    if src.HasField("default_mode"):
        _file_mode(errs, f"{path}.defaultMode", src.default_mode)
    seen: set[str] = set()
    for i, item in enumerate(src.items):
        ip = f"{path}.items[{i}]"
        if not item.key:
            errs.add(f"{ip}.key", "required")
        parts = item.path.split("/")
        if not item.path:
            errs.add(f"{ip}.path", "required")
        elif item.path.startswith("/") or ".." in parts or item.path.startswith(".."):
            errs.add(f"{ip}.path", f"must be a relative path without '..' (got {item.path!r})")
        elif item.path in seen:
            errs.add(f"{ip}.path", f"duplicate path {item.path!r}")
        seen.add(item.path)
        if item.HasField("mode"):
            _file_mode(errs, f"{ip}.mode", item.mode)


def _config_env_sources(errs: Errors, path: str, c: pod_pb2.Container) -> None:
    """env[].valueFrom (one source of fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef); envFrom."""
    for i, e in enumerate(c.env):
        if not e.HasField("value_from"):
            continue
        vf = e.value_from
        vp = f"{path}.env[{i}].valueFrom"
        if sum(vf.HasField(f) for f in ("field_ref", "resource_field_ref", "config_map_key_ref",
                                         "secret_key_ref")) != 1:
            errs.add(vp, "must specify exactly one of: fieldRef, resourceFieldRef, configMapKeyRef, "
                         "secretKeyRef")
        for f, name in (("config_map_key_ref", "configMapKeyRef"), ("secret_key_ref", "secretKeyRef")):
            if vf.HasField(f):
                ref = getattr(vf, f)
                dns_subdomain(errs, f"{vp}.{name}.name", ref.name)
                if not ref.key:
                    errs.add(f"{vp}.{name}.key", "required")
    for i, ef in enumerate(c.env_from):
        ep = f"{path}.envFrom[{i}]"
        if ef.HasField("config_map_ref") == ef.HasField("secret_ref"):
            errs.add(ep, "must specify exactly one of: configMapRef, secretRef")
        if ef.HasField("config_map_ref"):
            dns_subdomain(errs, f"{ep}.configMapRef.name", ef.config_map_ref.name)
        if ef.HasField("secret_ref"):
            dns_subdomain(errs, f"{ep}.secretRef.name", ef.secret_ref.name)
        if ef.prefix and not ENV_NAME.match(ef.prefix):
            errs.add(f"{ep}.prefix", f"invalid environment variable name prefix {ef.prefix!r}")


def pod_spec(errs: Errors, spec: pod_pb2.PodSpec) -> None:
    volume_names = _volumes(errs, spec)
    if not spec.containers:
        errs.add("spec.containers", "required: a pod needs at least one container")
    seen: set[str] = set()
    for i, c in enumerate(spec.init_containers):
        _container(errs, f"spec.initContainers[{i}]", c, volume_names, seen, init=True)
    for i, c in enumerate(spec.containers):
        _container(errs, f"spec.containers[{i}]", c, volume_names, seen, init=False)
    for kind, cs in (("initContainers", spec.init_containers), ("containers", spec.containers)):
        for i, c in enumerate(cs):
            _field_refs(errs, f"spec.{kind}[{i}]", c, seen)
    _security_context(errs, "spec.securityContext", spec.security_context)
    _pod_affinity(errs, "spec.affinity", spec.affinity)
    _downward_volumes(errs, spec, seen)
    for i, alias in enumerate(spec.host_aliases):
        ap = f"spec.hostAliases[{i}]"
        try:
            ipaddress.ip_address(alias.ip)
        except ValueError:
            errs.add(f"{ap}.ip", f"must be a valid IP address (got {alias.ip!r})")
        if not alias.hostnames:
            errs.add(f"{ap}.hostnames", "required")
        for j, h in enumerate(alias.hostnames):
            dns_subdomain(errs, f"{ap}.hostnames[{j}]", h)
    if spec.dns_policy == "None":
        errs.add("spec.dnsPolicy", "None needs spec.dnsConfig, which is not supported: use ClusterFirst "
                                   "(the cluster's DNS, the default) or Default (the VM's resolvers)")
    else:
        one_of(errs, "spec.dnsPolicy", spec.dns_policy, DNS_POLICIES)
    host_ports: set[tuple[str, int]] = set()
    for i, c in enumerate(spec.containers):
        for j, p in enumerate(c.ports):
            if p.host_port:
                hp = (p.protocol or "TCP", p.host_port)
                if hp in host_ports:
                    errs.add(f"spec.containers[{i}].ports[{j}].hostPort",
                             f"duplicate host port {p.host_port}/{hp[0]}")
                host_ports.add(hp)
    if spec.restart_policy:
        one_of(errs, "spec.restartPolicy", spec.restart_policy, RESTART_POLICIES)
    if spec.node_name:
        dns_subdomain(errs, "spec.nodeName", spec.node_name)
    label_map(errs, "spec.nodeSelector", spec.node_selector)
    _affinity(errs, "spec.affinity", spec.affinity)
    for i, t in enumerate(spec.tolerations):
        _toleration(errs, f"spec.tolerations[{i}]", t)
    if spec.HasField("termination_grace_period_seconds") and spec.termination_grace_period_seconds < 0:
        errs.add("spec.terminationGracePeriodSeconds", "must be greater than or equal to 0")
    if spec.HasField("active_deadline_seconds") and spec.active_deadline_seconds <= 0:
        errs.add("spec.activeDeadlineSeconds", "must be greater than 0")
    for i, tsc in enumerate(spec.topology_spread_constraints):
        tp = f"spec.topologySpreadConstraints[{i}]"
        if tsc.max_skew <= 0:
            errs.add(f"{tp}.maxSkew", f"must be greater than 0 (got {tsc.max_skew})")
        if not tsc.topology_key:
            errs.add(f"{tp}.topologyKey", "required")
        else:
            qualified_name(errs, f"{tp}.topologyKey", tsc.topology_key)
        one_of(errs, f"{tp}.whenUnsatisfiable", tsc.when_unsatisfiable, ("DoNotSchedule", "ScheduleAnyway"))
        _label_selector(errs, f"{tp}.labelSelector", tsc.label_selector)
    if spec.hostname:
        dns_label(errs, "spec.hostname", spec.hostname)
    if spec.scheduler_name:
        dns_subdomain(errs, "spec.schedulerName", spec.scheduler_name)


def pod_status(errs: Errors, status: pod_pb2.PodStatus) -> None:
    conds = status.conditions
    phase = status.phase
    if not conds and phase in POD_PHASES:  # a new pod's status: nothing to find
        return
    one_of(errs, "status.phase", phase, POD_PHASES)
    conditions(errs, "status.conditions", conds)


def conditions(errs: Errors, path: str, conds: Iterable[Any]) -> None:
    seen: set[str] = set()
    for i, c in enumerate(conds):
        if not c.type:
            errs.add(f"{path}[{i}].type", "required")
        elif c.type in seen:
            errs.add(f"{path}[{i}].type", f"duplicate condition type {c.type!r}")
        seen.add(c.type)
        one_of(errs, f"{path}[{i}].status", c.status, CONDITION_STATUSES)


# What `pod_spec` found, by the spec's deterministic bytes (controller.specmemo): every
# replica of a workload has the same spec, and checking one costs ~50 µs of Python.
_SPEC_FINDINGS: SpecMemo[tuple[tuple[str, str], ...]] = SpecMemo()


def pod_spec_cached(errs: Errors, spec: pod_pb2.PodSpec, key: bytes | None = None) -> None:
    """`pod_spec`, remembered for specs seen before. `key`: the spec's deterministic bytes,
    when the caller has them already."""
    if key is None:
        key = spec.SerializeToString(deterministic=True)
    found = _SPEC_FINDINGS.get(key)
    if found is None:
        sub = Errors()
        pod_spec(sub, spec)
        found = tuple(sub.items)
        _SPEC_FINDINGS.put(key, found)
    errs.items.extend(found)


def validate_pod(pod: pod_pb2.Pod, *, metadata_checked: bool = False, spec_key: bytes | None = None) -> None:
    """Every problem of `pod` in one `Invalid`. `metadata_checked`: its metadata passed
    `check_metadata` and has not changed since (a create: `Resource.prepare_new` checks it
    first), so checking it again could add nothing. `spec_key`: the spec's deterministic
    bytes, when the caller has them already."""
    errs = Errors()
    if not metadata_checked:
        metadata(errs, pod.metadata, namespaced=True)
    pod_spec_cached(errs, pod.spec, spec_key)
    pod_status(errs, pod.status)
    errs.raise_if_any()


def validate_pod_status(pod: pod_pb2.Pod) -> None:
    errs = Errors()
    pod_status(errs, pod.status)
    errs.raise_if_any()


# --- nodes ----------------------------------------------------------------------------------------


def taints(errs: Errors, path: str, ts: Iterable[node_pb2.Taint]) -> None:
    seen: set[tuple[str, str]] = set()
    for i, t in enumerate(ts):
        qualified_name(errs, f"{path}[{i}].key", t.key)
        if t.value:
            label_value(errs, f"{path}[{i}].value", t.value)
        if not t.effect:
            errs.add(f"{path}[{i}].effect", "required")
        else:
            one_of(errs, f"{path}[{i}].effect", t.effect, TAINT_EFFECTS)
        if (t.key, t.effect) in seen:
            errs.add(f"{path}[{i}]", f"duplicate taint {t.key}:{t.effect}")
        seen.add((t.key, t.effect))


def node_status(errs: Errors, status: node_pb2.NodeStatus) -> None:
    _resource_list(errs, "status.capacity", status.capacity)
    _resource_list(errs, "status.allocatable", status.allocatable)
    conditions(errs, "status.conditions", status.conditions)


def validate_node(node: node_pb2.Node) -> None:
    errs = Errors()
    metadata(errs, node.metadata, namespaced=False)
    taints(errs, "spec.taints", node.spec.taints)
    node_status(errs, node.status)
    errs.raise_if_any()


def validate_node_status(node: node_pb2.Node) -> None:
    errs = Errors()
    node_status(errs, node.status)
    errs.raise_if_any()


# --- vms ------------------------------------------------------------------------------------------


def vm_spec(errs: Errors, spec: vm_pb2.VMSpec) -> None:
    if spec.cpu_millis < 0:
        errs.add("spec.cpuMillis", "must be greater than or equal to 0")
    if spec.memory_bytes < 0:
        errs.add("spec.memoryBytes", "must be greater than or equal to 0")
    one_of(errs, "spec.provider", spec.provider, VM_PROVIDERS)
    if spec.parent:
        dns_label(errs, "spec.parent", spec.parent)
    label_map(errs, "spec.nodeLabels", spec.node_labels)
    if spec.class_name:
        dns_subdomain(errs, "spec.className", spec.class_name)


def validate_vm(vm: vm_pb2.VM) -> None:
    errs = Errors()
    # A VM's name becomes a container name and hostname: a DNS label.
    metadata(errs, vm.metadata, namespaced=False, name_label=True)
    vm_spec(errs, vm.spec)
    one_of(errs, "status.phase", vm.status.phase, VM_PHASES)
    errs.raise_if_any()


def validate_vm_status(vm: vm_pb2.VM) -> None:
    errs = Errors()
    one_of(errs, "status.phase", vm.status.phase, VM_PHASES)
    errs.raise_if_any()


# --- leases and events ----------------------------------------------------------------------------


def validate_lease(lease: lease_pb2.Lease) -> None:
    errs = Errors()
    metadata(errs, lease.metadata, namespaced=True)
    if lease.spec.lease_duration_seconds < 0:
        errs.add("spec.leaseDurationSeconds", "must be greater than or equal to 0")
    if lease.spec.lease_transitions < 0:
        errs.add("spec.leaseTransitions", "must be greater than or equal to 0")
    errs.raise_if_any()


def validate_event(ev: event_pb2.Event) -> None:
    errs = Errors()
    if ev.metadata.name:
        dns_subdomain(errs, "metadata.name", ev.metadata.name)
    if not ev.involved_object.kind:
        errs.add("involvedObject.kind", "required")
    if not ev.involved_object.name:
        errs.add("involvedObject.name", "required")
    if not ev.reason:
        errs.add("reason", "required")
    one_of(errs, "type", ev.type, EVENT_TYPES)
    if ev.count < 0:
        errs.add("count", "must be greater than or equal to 0")
    errs.raise_if_any()

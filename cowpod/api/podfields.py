"""Kubernetes Pod fields cowpod accepts, and what each means here: one rule each.

Read by the controller (validation at create, warnings in the answer), the CLI
(warnings printed by `apply`, as kubectl prints the server's) and the agent
(fieldRef values, the effective securityContext), so the three never disagree.

- `pod_warnings`: fields accepted with no effect (`serviceAccountName`,
  `imagePullSecrets`, ...), one line each, path first.
  docs/api.md lists them.
- `FIELD_REF_PATHS` / `field_ref_problem`: the `fieldRef` paths the agent can
  resolve; anything else is refused at create, not on the node.
- `RESOURCE_FIELD_REFS`: the `resourceFieldRef` resources.
- `effective_security`: a container's securityContext over its pod's, as
  Kubernetes merges them (the container's field wins when set).
- `named_port`: `port: http` against a container's ports.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction

from cowpod.api import quantity
from cowpod.v1 import pod_pb2, service_pb2

DEFAULT_SERVICE_ACCOUNT = "default"
"""Every pod's service account: cowpod has no others (no API tokens are mounted)."""

# fieldRef paths the agent resolves (agent/podspec.py `field_value`), plus the two
# label/annotation forms matched by _KEYED.
FIELD_REF_PATHS: tuple[str, ...] = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.podIPs",
    "status.hostIP",
    "status.hostIPs",
)
_KEYED = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")

RESOURCE_FIELD_REFS: tuple[str, ...] = ("limits.cpu", "limits.memory", "requests.cpu", "requests.memory",
                                        "limits.ephemeral-storage", "requests.ephemeral-storage")


# What a downwardAPI volume file may hold (Kubernetes allows only these there: no node or IP).
VOLUME_FIELD_REF_PATHS: tuple[str, ...] = (
    "metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations",
)


def volume_field_ref_problem(path: str) -> str | None:
    """Why a downwardAPI volume file cannot hold `fieldRef.fieldPath: path`, or None."""
    if path in VOLUME_FIELD_REF_PATHS or _KEYED.fullmatch(path):
        return None
    return (f"unsupported fieldPath {path!r} in a downwardAPI volume: use one of "
            f"{', '.join(VOLUME_FIELD_REF_PATHS)}, metadata.labels['KEY'] or metadata.annotations['KEY']")


def volume_field_value(pod: pod_pb2.Pod, path: str) -> str:
    """A downwardAPI volume file's content for a fieldRef: whole label/annotation maps are
    `key="value"` lines, sorted, as Kubernetes writes them."""
    md = pod.metadata
    if path in ("metadata.labels", "metadata.annotations"):
        src = md.labels if path == "metadata.labels" else md.annotations
        return "\n".join(f"{k}={json.dumps(src[k])}" for k in sorted(src))
    simple = {"metadata.name": md.name, "metadata.namespace": md.namespace or "default",
              "metadata.uid": md.uid}
    if path in simple:
        return simple[path]
    m = _KEYED.fullmatch(path)
    if m is None:
        raise ValueError(volume_field_ref_problem(path))
    src = md.labels if m.group(1) == "labels" else md.annotations
    return src.get(m.group(2), "")


def resource_field_value(spec: pod_pb2.PodSpec, c: pod_pb2.Container,
                         ref: pod_pb2.ResourceFieldSelector) -> str:
    """A `resourceFieldRef` value, as Kubernetes computes it: the request or limit of `c` (or
    of `containerName`) divided by the divisor (default 1: cores, bytes), rounded up. An unset
    value reads as 0 (Kubernetes gives the node's allocatable for an unset limit). Raises
    ValueError for what validation refuses at create."""
    target = c
    if ref.container_name:
        found = [x for x in [*spec.init_containers, *spec.containers] if x.name == ref.container_name]
        if not found:
            raise ValueError(f"resourceFieldRef: no container named {ref.container_name!r}")
        target = found[0]
    kind, _, res = ref.resource.partition(".")
    rl = target.resources.limits if kind == "limits" else target.resources.requests
    if res == "cpu":
        value = Fraction(rl.cpu_millis, 1000)
    elif res == "memory":
        value = Fraction(rl.memory_bytes)
    elif res == "ephemeral-storage":
        value = Fraction(rl.ephemeral_storage_bytes)
    else:
        raise ValueError(f"resourceFieldRef {ref.resource!r} is not supported")
    try:
        divisor = quantity.parse_quantity(ref.divisor) if ref.divisor else Fraction(1)
    except quantity.QuantityError as err:
        raise ValueError(f"resourceFieldRef divisor {ref.divisor!r}: {err}") from None
    if divisor <= 0:
        raise ValueError(f"resourceFieldRef divisor {ref.divisor!r} must be greater than 0")
    return str(math.ceil(value / divisor))


def field_ref_problem(path: str) -> str | None:
    """Why the agent could not resolve `fieldRef.fieldPath: path`, or None."""
    if path in FIELD_REF_PATHS or _KEYED.fullmatch(path):
        return None
    return (f"unsupported fieldPath {path!r}: use one of {', '.join(FIELD_REF_PATHS)}, "
            "metadata.labels['KEY'] or metadata.annotations['KEY']")


def service_account_of(spec: pod_pb2.PodSpec) -> str:
    """What `fieldRef: spec.serviceAccountName` reads: the name written, else `default`."""
    return spec.service_account_name or spec.service_account or DEFAULT_SERVICE_ACCOUNT


def named_port(c: pod_pb2.Container, name: str) -> int | None:
    """The containerPort of `c`'s port called `name`, or None."""
    for p in c.ports:
        if p.name == name:
            return int(p.container_port)
    return None


def effective_security(pod: pod_pb2.PodSpec, c: pod_pb2.Container) -> pod_pb2.SecurityContext:
    """The container's securityContext with the pod's runAsUser, runAsGroup, runAsNonRoot,
    seccompProfile and appArmorProfile filled in where the container leaves them unset."""
    out = pod_pb2.SecurityContext()
    out.CopyFrom(c.security_context)
    psc = pod.security_context
    for f in ("run_as_user", "run_as_group", "run_as_non_root"):
        if not out.HasField(f) and psc.HasField(f):
            setattr(out, f, getattr(psc, f))
    for f in ("seccomp_profile", "app_armor_profile"):
        if not out.HasField(f) and psc.HasField(f):
            getattr(out, f).CopyFrom(getattr(psc, f))
    return out


def open_volumes(spec: pod_pb2.PodSpec) -> list[str]:
    """The disk emptyDir volumes the agent makes world-writable (0777, as Kubernetes makes
    every emptyDir), by name: those of a pod that asks to run as a non-root user
    (`runAsUser` > 0 or `runAsNonRoot`, pod or container). The engine creates them root-owned
    0755; tmpfs ones (`medium: Memory`) are 1777 already."""
    disk = [v.name for v in spec.volumes if v.HasField("empty_dir") and v.empty_dir.medium != "Memory"]
    if not disk:
        return []
    for c in [*spec.init_containers, *spec.containers]:
        sc = effective_security(spec, c)
        if (sc.HasField("run_as_user") and sc.run_as_user > 0) or sc.run_as_non_root:
            return disk
    return []


KUBELET_HOSTS = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def hosts_file(base: str, aliases: list[pod_pb2.HostAlias]) -> str:
    """A pod's /etc/hosts with its hostAliases: `base` (the VM's hosts, or kubelet's header and
    the pod's own line), then the aliases as kubelet appends them."""
    lines = [base.rstrip("\n"), "", "# Entries added by HostAliases."]
    lines += [f"{a.ip}\t{chr(9).join(a.hostnames)}" for a in aliases]
    return "\n".join(lines) + "\n"


def supplemental_groups(pod: pod_pb2.PodSpec) -> list[int]:
    """Extra groups every container's process gets: fsGroup, then supplementalGroups."""
    psc = pod.security_context
    groups = [int(psc.fs_group)] if psc.HasField("fs_group") else []
    groups += [int(g) for g in psc.supplemental_groups if g not in groups]
    return groups


_SA = ("ignored: cowpod has no service accounts and mounts no API token; "
       "fieldRef spec.serviceAccountName reads this name")


def _containers(spec: pod_pb2.PodSpec, prefix: str) -> list[tuple[str, pod_pb2.Container]]:
    return ([(f"{prefix}.initContainers[{i}]", c) for i, c in enumerate(spec.init_containers)]
            + [(f"{prefix}.containers[{i}]", c) for i, c in enumerate(spec.containers)])


def pod_warnings(spec: pod_pb2.PodSpec, prefix: str = "spec") -> list[str]:
    """One `path: why` line for every field of `spec` that is accepted but has no effect.

    `prefix` is where the spec sits (`spec.template.spec` in a workload)."""
    out: list[str] = []
    if spec.HasField("enable_service_links"):
        out.append(f"{prefix}.enableServiceLinks: ignored: no Service environment variables are set; "
                   "use the Service's DNS name")
    if spec.service_account_name:
        out.append(f"{prefix}.serviceAccountName: {_SA}")
    if spec.service_account:
        out.append(f"{prefix}.serviceAccount: deprecated alias of serviceAccountName; {_SA}")
    if spec.HasField("automount_service_account_token"):
        out.append(f"{prefix}.automountServiceAccountToken: ignored: no service account token is "
                   "ever mounted")
    if spec.image_pull_secrets:
        out.append(f"{prefix}.imagePullSecrets: ignored: no registry credentials are used; images must "
                   "be on the node already or pullable without credentials")
    if spec.subdomain:
        out.append(f"{prefix}.subdomain: ignored: pods get no per-pod DNS records")
    if spec.runtime_class_name:
        out.append(f"{prefix}.runtimeClassName: ignored: every pod runs on the node's one runtime (Docker)")
    psc = spec.security_context
    if psc.HasField("fs_group"):
        out.append(f"{prefix}.securityContext.fsGroup: added as a supplementary group; volume "
                   "ownership is not changed")
    if psc.fs_group_change_policy:
        out.append(f"{prefix}.securityContext.fsGroupChangePolicy: ignored: volume ownership is "
                   "never changed")
    if psc.HasField("se_linux_options"):
        out.append(f"{prefix}.securityContext.seLinuxOptions: ignored: no SELinux labels are applied")
    if psc.sysctls:
        out.append(f"{prefix}.securityContext.sysctls: ignored: a pod's kernel settings are its VM's")
    for path, c in _containers(spec, prefix):
        if c.termination_message_path:
            out.append(f"{path}.terminationMessagePath: ignored: a terminated container's message "
                       "is not read from a file")
        if c.termination_message_policy:
            out.append(f"{path}.terminationMessagePolicy: ignored: a terminated container's "
                       "message is its exit reason")
        if c.stdin_once:
            out.append(f"{path}.stdinOnce: ignored")
        for probe_name, probe in (("livenessProbe", c.liveness_probe), ("startupProbe", c.startup_probe),
                                  ("readinessProbe", c.readiness_probe)):
            if probe.HasField("termination_grace_period_seconds"):
                out.append(f"{path}.{probe_name}.terminationGracePeriodSeconds: ignored: a container a "
                           "probe restarts gets the pod's terminationGracePeriodSeconds")
        if c.security_context.HasField("se_linux_options"):
            out.append(f"{path}.securityContext.seLinuxOptions: ignored: no SELinux labels are applied")
    return out


def resolve_named_ports(spec: pod_pb2.PodSpec) -> None:
    """Fill in the number of every probe and lifecycle `port: NAME` that names one of its
    container's ports (the name stays, for output); unknown names are left for validation."""
    for c in [*spec.init_containers, *spec.containers]:
        # Only handlers that are set can name a port: asking first keeps upb from creating the
        # five empty handler messages (and their ten actions) of a container without probes.
        has = c.HasField
        if not (has("liveness_probe") or has("readiness_probe") or has("startup_probe") or has("lifecycle")):
            continue
        handlers: list[pod_pb2.Probe | pod_pb2.LifecycleHandler] = [
            getattr(c, f) for f in _PROBES if has(f)]
        if has("lifecycle"):
            lc = c.lifecycle
            handlers += [getattr(lc, f) for f in _LIFECYCLE_HANDLERS if lc.HasField(f)]
        for h in handlers:
            for action in (h.http_get, h.tcp_socket):
                if action.port_name:
                    number = named_port(c, action.port_name)
                    if number is not None:
                        action.port = number


_PROBES = ("liveness_probe", "readiness_probe", "startup_probe")
_LIFECYCLE_HANDLERS = ("post_start", "pre_stop")


LOAD_BALANCER_WARNING = ("spec.type: LoadBalancer: no load balancer is provisioned here (EXTERNAL-IP stays "
                         "<pending>); the Service works as a headless ClusterIP one")


def object_warnings(obj: object) -> list[str]:
    """`pod_warnings` for a Pod, or for the pod template of a workload (`spec.template.spec`);
    for a Service, that a LoadBalancer gets no load balancer."""
    if isinstance(obj, service_pb2.Service):
        return [LOAD_BALANCER_WARNING] if obj.spec.type == "LoadBalancer" else []
    spec = getattr(obj, "spec", None)
    if isinstance(spec, pod_pb2.PodSpec):
        return pod_warnings(spec)
    template = getattr(spec, "template", None)
    if isinstance(getattr(template, "spec", None), pod_pb2.PodSpec):
        return pod_warnings(template.spec, "spec.template.spec")  # type: ignore[union-attr]
    return []

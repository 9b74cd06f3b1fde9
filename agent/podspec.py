"""From a pod's container spec to the runtime's `CreateSpec`: names, labels,
command and args (Kubernetes `command` is the entrypoint, `args` the cmd),
env with `fieldRef` and `$(VAR)` expansion, resources, volumes, and the
network/cgroup nesting that makes a pod live inside its VM.

    VM container (cgroup /docker/<vm>, network of the VM)
      └─ sandbox "pause"  network_mode=container:<vm>  cgroup_parent=/docker/<vm>
           └─ app / init  network_mode=container:<sandbox>, ipc=container:<sandbox>

    A single-container pod on a VM (no sandbox; `desired.needs_sandbox`):
      └─ app              network_mode=container:<vm>, its own IPC namespace

Without a VM container the sandbox gets the engine's default network.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent import labels as L
from agent.config import DROPPED_CAPABILITIES, AgentConfig
from agent.configvolumes import CONFIG_DIR, Snapshot, env_from, env_source_value, is_config_volume
from agent.desired import grace_of, spec_hash
from agent.dns import CLUSTER_FIRST
from agent.hostpath import not_allowed, prefix_for
from agent.runtime import CreateSpec, Kind, Mount, VMInfo
from cowpod.api import podfields
from cowpod.auth.podsecurity import host_path_violation
from cowpod.images import internal_image_violation
from cowpod.v1 import pod_pb2


class ConfigError(Exception):
    """The pod's spec cannot be turned into a container (CreateContainerConfigError)."""


@dataclass(frozen=True)
class PodContext:
    """What a container spec needs that is not in the pod: where it runs."""

    node_name: str
    pod_ip: str
    host_ip: str
    sandbox_id: str
    vm_id: str = ""
    cgroup_parent: str = ""
    vm_host_files: tuple[tuple[str, str], ...] = ()
    # The engine's path of the pod's own resolv.conf (cluster DNS), bound over the VM's.
    resolv_conf: str = ""
    # The engine's path of the pod's own /etc/hosts (hostAliases), bound over the VM's.
    hosts_file: str = ""
    # The ConfigMaps/Secrets the pod references, as fetched for this create (env).
    configs: Snapshot = field(default_factory=dict)


def pod_files(cfg: AgentConfig, pod_uid: str) -> pathlib.Path:
    """Where the agent writes files for one pod's containers (its resolv.conf)."""
    return pathlib.Path(cfg.pod_files_dir) / pod_uid


def engine_path(vm: VMInfo | None, path: str) -> str:
    """The engine's path of a file the agent wrote at `path`: the same path when the agent
    shares the engine's filesystem; inside a VM container, through the bind mount it is under."""
    if vm is None:
        return path
    for source, target in sorted(vm.mounts, key=lambda m: len(m[1]), reverse=True):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            return source.rstrip("/") + path[len(target.rstrip("/")):]
    raise ConfigError(f"{path} is not under a directory the VM container binds from the engine's host "
                      "(set --pod-files-dir under one)")


def uses_cluster_dns(pod: pod_pb2.Pod, cfg: AgentConfig) -> bool:
    """Kubernetes' dnsPolicy: ClusterFirst (the default) gets the cluster's DNS; Default keeps
    the VM's resolvers."""
    return bool(cfg.cluster_dns) and pod.spec.dns_policy in CLUSTER_FIRST


def docker_name(pod: pod_pb2.Pod, container: str, attempt: int) -> str:
    md = pod.metadata
    raw = f"cowpod_{container}_{md.name}_{md.namespace or 'default'}_{md.uid}_{attempt}"
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", raw)


def volume_name(pod_uid: str, volume: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"cowpod-{pod_uid}-{volume}")


def base_labels(pod: pod_pb2.Pod, cfg: AgentConfig) -> dict[str, str]:
    md = pod.metadata
    return {
        **cfg.extra_docker_labels,
        L.MANAGED: "1",
        L.NODE: cfg.node_name,
        L.POD_UID: md.uid,
        L.POD_NAME: md.name,
        L.POD_NAMESPACE: md.namespace or "default",
        L.GRACE: str(grace_of(pod)),
    }


OPEN_DIR = "/.cowpod-emptydir"
"""Where the sandbox mounts the emptyDir volumes it opens (podfields.open_volumes)."""


def sandbox_spec(
    pod: pod_pb2.Pod, cfg: AgentConfig, attempt: int, vm_id: str, cgroup_parent: str
) -> CreateSpec:
    lab = base_labels(pod, cfg) | {
        L.CONTAINER_NAME: L.SANDBOX_NAME,
        L.CONTAINER_KIND: Kind.SANDBOX.value,
        L.ATTEMPT: str(attempt),
        L.BACKOFF_STREAK: "0",
    }
    ports: dict[str, int] = {}
    for c in pod.spec.containers:
        for p in c.ports:
            if p.host_port:
                ports[f"{p.container_port}/{(p.protocol or 'TCP').lower()}"] = p.host_port
    return CreateSpec(
        name=docker_name(pod, L.SANDBOX_NAME, attempt),
        image=cfg.pause_image,
        labels=lab,
        network_mode=f"container:{vm_id}" if vm_id else "",
        ipc_mode="shareable",
        cgroup_parent=cgroup_parent,
        hostname="" if vm_id else (pod.spec.hostname or pod.metadata.name)[:63],
        published_ports={} if vm_id else ports,
        # Each configMap/secret volume, where agent/configvolumes.py writes its files through;
        # each emptyDir a non-root pod needs writable, where the executor opens it (0777).
        mounts=[*(Mount("volume", volume_name(pod.metadata.uid, v.name), f"{CONFIG_DIR}/{v.name}")
                  for v in pod.spec.volumes if is_config_volume(v)),
                *(Mount("volume", volume_name(pod.metadata.uid, name), f"{OPEN_DIR}/{name}")
                  for name in podfields.open_volumes(pod.spec))],
        pids_limit=cfg.pids_limit,
        cap_drop=DROPPED_CAPABILITIES,
    )


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` is a
    literal `$`, unknown references stay as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR.sub(sub, text)


def field_value(pod: pod_pb2.Pod, path: str, ctx: PodContext) -> str:
    """A `fieldRef` value: every path in cowpod.api.podfields.FIELD_REF_PATHS (the controller
    refuses the others at create; pods stored before that are caught here)."""
    md = pod.metadata
    simple = {
        "metadata.name": md.name,
        "metadata.namespace": md.namespace or "default",
        "metadata.uid": md.uid,
        "spec.nodeName": pod.spec.node_name or ctx.node_name,
        "spec.serviceAccountName": podfields.service_account_of(pod.spec),
        "status.podIP": ctx.pod_ip,
        "status.podIPs": ctx.pod_ip,
        "status.hostIP": ctx.host_ip,
        "status.hostIPs": ctx.host_ip,
    }
    if path in simple:
        return simple[path]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        src = md.labels if m.group(1) == "labels" else md.annotations
        return src.get(m.group(2), "")
    raise ConfigError(f"fieldRef {path!r} is not supported")


def resource_value(pod: pod_pb2.Pod, c: pod_pb2.Container, ref: pod_pb2.ResourceFieldSelector) -> str:
    """A `resourceFieldRef` value (cowpod.api.podfields.resource_field_value)."""
    try:
        return podfields.resource_field_value(pod.spec, c, ref)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_env(pod: pod_pb2.Pod, c: pod_pb2.Container, ctx: PodContext) -> dict[str, str]:
    # envFrom first, env over it (Kubernetes' order); configvolumes.ConfigError when missing.
    env: dict[str, str] = env_from(c, ctx.configs)
    for i, e in enumerate(c.env):
        if e.HasField("value_from"):
            vf = e.value_from
            if vf.HasField("config_map_key_ref") or vf.HasField("secret_key_ref"):
                value = env_source_value(vf, ctx.configs)
                if value is not None:
                    env[e.name] = value
                continue
            if e.value_from.HasField("resource_field_ref"):
                env[e.name] = resource_value(pod, c, e.value_from.resource_field_ref)
                continue
            if not e.value_from.HasField("field_ref"):
                raise ConfigError(f"env[{i}] {e.name}: only valueFrom.fieldRef is supported")
            env[e.name] = field_value(pod, e.value_from.field_ref.field_path, ctx)
        else:
            env[e.name] = expand(e.value, env)
    return env


def mounts_for(pod: pod_pb2.Pod, c: pod_pb2.Container, cfg: AgentConfig) -> list[Mount]:
    vols = {v.name: v for v in pod.spec.volumes}
    out: list[Mount] = []
    for vm in c.volume_mounts:
        v = vols.get(vm.name)
        if v is None:
            raise ConfigError(f"volumeMount {vm.name!r}: no volume of that name in spec.volumes")
        if vm.sub_path:
            raise ConfigError(f"volumeMount {vm.name!r}: subPath is not supported")
        if v.HasField("host_path"):
            path = v.host_path.path
            why = host_path_violation(path) or not_allowed(path, cfg.host_path_prefixes)
            if why is not None:
                raise ConfigError(f"volume {v.name!r}: hostPath {path!r}: {why}")
            prefix = prefix_for(path, cfg.host_path_prefixes)
            assert prefix is not None
            # Read-only unless the admin made the prefix writable, whatever the pod asks.
            out.append(Mount("bind", path, vm.mount_path, vm.read_only or not prefix.writable,
                             host_prefix=prefix.path))
        else:
            # configMap/secret/downwardAPI volumes are read-only, as on Kubernetes: the agent owns
            # their files.
            config = is_config_volume(v)
            out.append(Mount("volume", volume_name(pod.metadata.uid, v.name), vm.mount_path,
                             vm.read_only or config))
    return out


def container_spec(
    pod: pod_pb2.Pod,
    c: pod_pb2.Container,
    kind: Kind,
    attempt: int,
    streak: int,
    cfg: AgentConfig,
    ctx: PodContext,
) -> CreateSpec:
    why = internal_image_violation(c.image)  # admission refuses these; pods stored before it are caught here
    if why is not None:
        raise ConfigError(f"image {c.image!r}: {why}")
    env = resolve_env(pod, c, ctx)
    sc = podfields.effective_security(pod.spec, c)
    if sc.privileged or sc.capabilities.add:  # admission refuses these; pods stored before it
        raise ConfigError("privileged containers and capabilities.add are refused by the pod security rules")
    res = c.resources
    cpu_limit = res.limits.cpu_millis
    cpu_request = res.requests.cpu_millis or cpu_limit
    lab = base_labels(pod, cfg) | {
        L.CONTAINER_NAME: c.name,
        L.CONTAINER_KIND: kind.value,
        L.ATTEMPT: str(attempt),
        L.BACKOFF_STREAK: str(streak),
        L.SPEC_HASH: spec_hash(c),
    }
    mounts = mounts_for(pod, c, cfg)
    # Joining the VM's network, the engine binds the VM's own hosts, resolv.conf and
    # hostname files read-write: one pod could redirect the agent's and every other
    # pod's name lookups. The same files, read-only, take their place.
    taken = {m.target for m in mounts}
    if ctx.resolv_conf and "/etc/resolv.conf" not in taken:
        mounts.append(Mount("bind", ctx.resolv_conf, "/etc/resolv.conf", True))
        taken.add("/etc/resolv.conf")
    if ctx.hosts_file and "/etc/hosts" not in taken:
        mounts.append(Mount("bind", ctx.hosts_file, "/etc/hosts", True))
        taken.add("/etc/hosts")
    vm_files = [Mount("bind", src, at, True) for src, at in ctx.vm_host_files if at not in taken]
    if ctx.sandbox_id:
        network_mode = ipc_mode = f"container:{ctx.sandbox_id}"
    elif ctx.vm_id:
        network_mode, ipc_mode = f"container:{ctx.vm_id}", ""
    else:
        raise ConfigError("no sandbox and no VM to join")  # the planner never asks for this
    return CreateSpec(
        name=docker_name(pod, c.name, attempt),
        image=c.image,
        labels=lab,
        entrypoint=[expand(x, env) for x in c.command] if c.command else None,
        cmd=[expand(x, env) for x in c.args] if c.args else None,
        env=env,
        working_dir=c.working_dir,
        network_mode=network_mode,
        ipc_mode=ipc_mode,
        # shareProcessNamespace: one PID namespace, the sandbox's (its pause is PID 1), as Kubernetes.
        pid_mode=f"container:{ctx.sandbox_id}" if ctx.sandbox_id and pod.spec.share_process_namespace else "",
        cgroup_parent=ctx.cgroup_parent,
        nano_cpus=cpu_limit * 1_000_000,
        cpu_shares=max(2, cpu_request * 1024 // 1000) if cpu_request else 0,
        memory_limit=res.limits.memory_bytes,
        mounts=[*mounts, *vm_files],
        tty=c.tty,
        stdin_open=c.stdin,
        pids_limit=cfg.pids_limit,
        cap_drop=tuple(dict.fromkeys([*DROPPED_CAPABILITIES, *(x.upper() for x in sc.capabilities.drop)])),
        run_as_user=sc.run_as_user if sc.HasField("run_as_user") else None,
        run_as_group=sc.run_as_group if sc.HasField("run_as_group") else None,
        group_add=tuple(podfields.supplemental_groups(pod.spec)),
        read_only_rootfs=sc.read_only_root_filesystem,
        no_new_privileges=sc.HasField("allow_privilege_escalation") and not sc.allow_privilege_escalation,
        run_as_non_root=sc.run_as_non_root,
    )

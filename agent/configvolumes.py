"""ConfigMaps and Secrets in pods: env (`configMapKeyRef`, `secretKeyRef`, `envFrom`) and
`configMap` / `secret` volumes, as the kubelet does them.

    controller ──Get (node-authorized: only what pods bound here reference)──► ConfigCache (TTL)
                                                                                 │ snapshot(pod)
       env at container create (podspec.resolve_env) ◄───────────────────────────┤
       volume files ◄── ConfigVolumes.sync (at container create, then every worker resync)

Files are written the way Kubernetes' AtomicWriter writes them, so a reader never sees
half an update: the payload goes into a new directory `..<timestamp>` of the volume,
`..data` is a symlink to it, each top-level name is a symlink into `..data`; an update
writes a new directory and renames a fresh symlink over `..data` (one rename(2), atomic),
then removes the old directory. The writes go through the pod's sandbox, which mounts
every configMap/secret volume under `CONFIG_DIR` (the agent in a VM cannot see the
engine's volume directories): `put_files` (the engine's archive upload) for the payload,
an exec of the sandbox's busybox for the rename.

Env is resolved once, when a container is created (later changes reach files, not env),
and a missing object or key that is not `optional` holds the container in
`CreateContainerConfigError` until it appears (the executor's back-off retries). Secret
values are never logged nor put in events: errors name the object and the key only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from agent.runtime import Runtime
from cowpod.api import podfields
from cowpod.api.validation import ENV_NAME
from cowpod.clock import Clock
from cowpod.configrefs import Ref, RefKind, refs_of
from cowpod.v1 import pod_pb2

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A referenced ConfigMap/Secret or key is missing (not optional), or cannot be used:
    the container waits in CreateContainerConfigError (podspec.ConfigError's sibling)."""

# Where the sandbox mounts each configMap/secret volume (by volume name).
CONFIG_DIR = "/.cowpod-config"
DEFAULT_MODE = 0o644
BUSYBOX = "/bin/busybox"
# How long a fetched object is reused before it is asked for again: bounds both the load on
# the controller and how late an update reaches the files (plus the worker's resync).
DEFAULT_TTL = 5.0
# A missing object is asked for again sooner: a pod waiting for it should start soon after.
MISSING_TTL = 1.0
# Expired entries are dropped once the cache holds this many objects.
MAX_CACHED = 10_000
_SAFE_NAME = re.compile(r"^[-._a-zA-Z0-9]+$")

Data = Mapping[str, bytes]
# (kind, name) -> the object's data, or None when it does not exist.
Snapshot = Mapping[tuple[RefKind, str], Data | None]
# kind, namespace, name -> data, or None when not found (the agent's ControlPlane.get_config).
Reader = Callable[[RefKind, str, str], Awaitable[Data | None]]


def kind_word(kind: RefKind) -> str:
    return "configmap" if kind is RefKind.CONFIGMAP else "secret"


def is_config_volume(v: pod_pb2.Volume) -> bool:
    """A volume whose files the agent writes: configMap, secret, downwardAPI."""
    return v.HasField("config_map") or v.HasField("secret") or v.HasField("downward_api")


def has_config_volumes(spec: pod_pb2.PodSpec) -> bool:
    return any(is_config_volume(v) for v in spec.volumes)


class ConfigCache:
    """Fetched ConfigMaps/Secrets by (namespace, kind, name), reused for `ttl` seconds."""

    def __init__(self, reader: Reader, clock: Clock, *, ttl: float = DEFAULT_TTL,
                 missing_ttl: float = MISSING_TTL) -> None:
        self.reader = reader
        self.clock = clock
        self.ttl = ttl
        self.missing_ttl = missing_ttl
        self._items: dict[tuple[str, RefKind, str], tuple[float, Data | None]] = {}

    async def get(self, namespace: str, kind: RefKind, name: str) -> Data | None:
        key = (namespace, kind, name)
        now = self.clock.monotonic()
        hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            data = await self.reader(kind, namespace, name)
        except Exception as err:  # the controller unreachable, a timeout: any reader failure
            if hit is not None:
                # What was read last stays in force (running pods keep their files; a restart
                # gets the same env) until the controller answers again.
                log.info("reading %s %s/%s: %s; using what was read before", kind_word(kind), namespace,
                         name, type(err).__name__)
                return hit[1]
            raise ConfigError(f"cannot read {kind_word(kind)} \"{name}\" from the controller: "
                              f"{type(err).__name__}") from None
        if len(self._items) > MAX_CACHED:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
        self._items[key] = (now + (self.ttl if data is not None else self.missing_ttl), data)
        return data

    async def snapshot(self, pod: pod_pb2.Pod) -> Snapshot:
        """Every object the pod references, as fetched now (or lately)."""
        ns = pod.metadata.namespace or "default"
        out: dict[tuple[RefKind, str], Data | None] = {}
        for ref in refs_of(pod.spec):
            if (ref.kind, ref.name) not in out:
                out[(ref.kind, ref.name)] = await self.get(ns, ref.kind, ref.name)
        return out



# -------------------------------------------------------------------------------- env


def _decode(value: bytes, what: str) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text and cannot be an environment variable") from None


def key_ref_value(ref: Ref, key: str, snap: Snapshot) -> str | None:
    """The value of `key` of the referenced object; None when it may be left unset (optional)."""
    data = snap.get((ref.kind, ref.name))
    word = kind_word(ref.kind)
    if data is None:
        if ref.optional:
            return None
        raise ConfigError(f'{word} "{ref.name}" not found')
    if key not in data:
        if ref.optional:
            return None
        raise ConfigError(f'couldn\'t find key {key} in {word} "{ref.name}"')
    return _decode(data[key], f'key {key} of {word} "{ref.name}"')


def env_from(c: pod_pb2.Container, snap: Snapshot) -> dict[str, str]:
    """`envFrom`: every key that is a valid variable name, prefixed; later sources win."""
    out: dict[str, str] = {}
    for ef in c.env_from:
        if ef.HasField("config_map_ref"):
            ref = Ref(RefKind.CONFIGMAP, ef.config_map_ref.name, ef.config_map_ref.optional)
        else:
            ref = Ref(RefKind.SECRET, ef.secret_ref.name, ef.secret_ref.optional)
        data = snap.get((ref.kind, ref.name))
        if data is None:
            if ref.optional:
                continue
            raise ConfigError(f'{kind_word(ref.kind)} "{ref.name}" not found')
        for k in sorted(data):
            name = ef.prefix + k
            if ENV_NAME.match(name):  # Kubernetes skips (and reports) the others
                out[name] = _decode(data[k], f'key {k} of {kind_word(ref.kind)} "{ref.name}"')
    return out


def env_source_value(vf: pod_pb2.EnvVarSource, snap: Snapshot) -> str | None:
    """A configMapKeyRef/secretKeyRef value (None: optional and missing, leave unset)."""
    if vf.HasField("config_map_key_ref"):
        r = vf.config_map_key_ref
        return key_ref_value(Ref(RefKind.CONFIGMAP, r.name, r.optional), r.key, snap)
    s = vf.secret_key_ref
    return key_ref_value(Ref(RefKind.SECRET, s.name, s.optional), s.key, snap)


# -------------------------------------------------------------------------------- volumes


@dataclass(frozen=True)
class Payload:
    """What one configMap/secret volume holds: relative path -> (bytes, mode)."""

    files: Mapping[str, tuple[bytes, int]]

    def digest(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            data, mode = self.files[path]
            h.update(f"{path}\0{mode}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()

    def top_names(self) -> list[str]:
        return sorted({p.split("/", 1)[0] for p in self.files})


VolumeSource = pod_pb2.ConfigMapVolumeSource | pod_pb2.SecretVolumeSource


def volume_source(v: pod_pb2.Volume) -> tuple[Ref, VolumeSource]:
    if v.HasField("config_map"):
        return Ref(RefKind.CONFIGMAP, v.config_map.name, v.config_map.optional), v.config_map
    return Ref(RefKind.SECRET, v.secret.secret_name, v.secret.optional), v.secret


def payload(v: pod_pb2.Volume, snap: Snapshot) -> Payload:
    """The files of a configMap/secret volume: every key, or only `items` (key -> path), with
    `items[].mode` or `defaultMode` (0644). A missing object or item key is an error unless
    the volume is `optional` (then the volume is empty, or lacks that file)."""
    ref, src = volume_source(v)
    data = snap.get((ref.kind, ref.name))
    word = kind_word(ref.kind)
    if data is None:
        if ref.optional:
            return Payload({})
        raise ConfigError(f'volume "{v.name}": {word} "{ref.name}" not found')
    default = src.default_mode if src.HasField("default_mode") else DEFAULT_MODE
    files: dict[str, tuple[bytes, int]] = {}
    if src.items:
        for item in src.items:
            if item.key not in data:
                if ref.optional:
                    continue
                raise ConfigError(f'volume "{v.name}": {word} "{ref.name}" has no key {item.key}')
            files[item.path] = (data[item.key], item.mode if item.HasField("mode") else default)
    else:
        files = {k: (data[k], default) for k in data}
    for path in files:
        if not all(_SAFE_NAME.match(part) and part not in (".", "..") for part in path.split("/")):
            raise ConfigError(f'volume "{v.name}": path {path!r} is not one this node writes')
    return Payload(files)


def downward_payload(pod: pod_pb2.Pod, v: pod_pb2.Volume) -> Payload:
    """The files of a downwardAPI volume: each item's fieldRef (cowpod.api.podfields) or
    resourceFieldRef value, with its mode or `defaultMode` (0644)."""
    src = v.downward_api
    default = src.default_mode if src.HasField("default_mode") else DEFAULT_MODE
    files: dict[str, tuple[bytes, int]] = {}
    for item in src.items:
        if not all(_SAFE_NAME.match(part) and part not in (".", "..") for part in item.path.split("/")):
            raise ConfigError(f'volume "{v.name}": path {item.path!r} is not one this node writes')
        try:
            if item.HasField("resource_field_ref"):
                ref = item.resource_field_ref
                target = next((c for c in pod.spec.containers if c.name == ref.container_name),
                              pod.spec.containers[0])
                text = podfields.resource_field_value(pod.spec, target, ref)
            else:
                text = podfields.volume_field_value(pod, item.field_ref.field_path)
        except ValueError as err:
            raise ConfigError(f'volume "{v.name}": {err}') from None
        files[item.path] = (text.encode(), item.mode if item.HasField("mode") else default)
    return Payload(files)


def swap_script(directory: str, version: str, names: list[str]) -> str:
    """Shell (busybox ash) run in the sandbox: point `..data` at `version` with one rename,
    link each top-level name into `..data`, drop links to names that are gone, old versions."""
    bb = BUSYBOX
    keep = " ".join(names)
    return (
        f"cd {directory} && {bb} ln -sfn {version} ..data_tmp && {bb} mv -T ..data_tmp ..data"
        f" && for k in {keep or '..none'}; do [ -e \"$k\" ] || [ -L \"$k\" ] || [ \"$k\" = ..none ]"
        f" || {bb} ln -s \"..data/$k\" \"$k\"; done"
        f" && for f in * .[!.]* ..?*; do [ -L \"$f\" ] || continue; [ \"$f\" = ..data ] && continue;"
        f" case \" {keep} \" in *\" $f \"*) continue;; esac; {bb} rm -f \"$f\"; done"
        f" && for d in ..[0-9]*; do [ -d \"$d\" ] || continue;"
        f" [ \"$d\" = {version} ] || {bb} rm -rf \"$d\"; done"
    )


class ConfigVolumes:
    """Keeps each configMap/secret volume of running pods equal to its object."""

    def __init__(self, runtime: Runtime, cache: ConfigCache) -> None:
        self.runtime = runtime
        self.cache = cache
        self.clock = cache.clock
        # (pod uid, volume) -> (sandbox container id, digest) written; a new sandbox (its volumes
        # may be new tmpfs mounts) is written afresh.
        self._written: dict[tuple[str, str], tuple[str, str]] = {}

    async def sync(self, pod: pod_pb2.Pod, sandbox_id: str, snap: Snapshot) -> list[str]:
        """Write what changed; the names of the volumes written. Raises ConfigError for a
        volume whose required object or key is missing (nothing of that volume is written)."""
        written: list[str] = []
        for v in pod.spec.volumes:
            if not is_config_volume(v):
                continue
            p = downward_payload(pod, v) if v.HasField("downward_api") else payload(v, snap)
            digest = p.digest()
            key = (pod.metadata.uid, v.name)
            if self._written.get(key) == (sandbox_id, digest):
                continue
            await self._write(sandbox_id, f"{CONFIG_DIR}/{v.name}", p)
            self._written[key] = (sandbox_id, digest)
            written.append(v.name)
        return written

    async def _write(self, sandbox_id: str, directory: str, p: Payload) -> None:
        now = self.clock.now()
        version = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime(now)) + f".{int(now * 1e9) % 10**9:09d}"
        by_mode: dict[int, dict[str, bytes]] = {}
        for path, (data, mode) in p.files.items():
            by_mode.setdefault(mode, {})[f"{version}/{path}"] = data
        if not by_mode:
            by_mode[DEFAULT_MODE] = {}
        for mode, files in by_mode.items():
            await self.runtime.put_files(sandbox_id, directory, files, mode=mode)
        if not p.files:
            # An empty (optional, missing) volume: still a version directory for ..data.
            res = await self.runtime.exec(sandbox_id, [BUSYBOX, "mkdir", "-p", f"{directory}/{version}"],
                                          timeout=30)
            if res.exit_code != 0:
                raise ConfigError(f"writing {directory}: mkdir exited {res.exit_code}")
        res = await self.runtime.exec(
            sandbox_id, [BUSYBOX, "sh", "-c", swap_script(directory, version, p.top_names())], timeout=30)
        if res.exit_code != 0:
            raise ConfigError(f"updating {directory}: exit {res.exit_code}: "
                              f"{res.stderr.decode(errors='replace')[:200]}")

    def forget_pod(self, pod_uid: str) -> None:
        """The pod is gone (finalized): what was written for it no longer matters."""
        for key in [k for k in self._written if k[0] == pod_uid]:
            del self._written[key]

"""ConfigMaps and Secrets as stored objects: kinds, validation, CRUD and servicers.

Rules, as Kubernetes core/v1 has them:
- keys are `[-._a-zA-Z0-9]+`, at most 253 characters, never `.` or `..` (a key
  becomes a file name in a volume); a ConfigMap key is in `data` or
  `binaryData`, not both; an object holds at most `MAX_DATA_BYTES` (1 MiB) of
  keys and values, so etcd and every watch stay small.
- Secret `stringData` is write-only: merged into `data` on create and update
  (winning over `data` for the same key), never stored. `type` defaults to
  `Opaque` and cannot change; the well-known types must carry their keys.
- `immutable: true` freezes the data (labels and annotations may still change)
  and cannot be undone: delete and recreate, as in Kubernetes.

Secrets are stored in etcd as they are unless the controller runs with
`--encryption-config` (controller/encryption.py: the etcd store encrypts them,
so nothing here sees ciphertext); docs/security.md says who may read them.
Nothing here logs a value.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from controller import validation
from controller.kinds import Kind
from controller.metrics import Metrics
from controller.resource import Resource
from controller.rpc import Ctx
from cowpod.errors import Invalid
from cowpod.v1 import config_pb2, meta_pb2

CONFIGMAPS: Kind[config_pb2.ConfigMap] = Kind(
    "configmaps", "ConfigMap", "v1", True, config_pb2.ConfigMap, config_pb2.ConfigMapList,
    config_pb2.ConfigMapWatchEvent,
)
SECRETS: Kind[config_pb2.Secret] = Kind(
    "secrets", "Secret", "v1", True, config_pb2.Secret, config_pb2.SecretList, config_pb2.SecretWatchEvent,
    fields={"type": lambda o: str(o.type)},
)

MAX_DATA_BYTES = 1024 * 1024
_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
OPAQUE = "Opaque"
# Well-known Secret types and the keys each must have (any one of a tuple's names).
REQUIRED_SECRET_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "kubernetes.io/tls": (("tls.crt",), ("tls.key",)),
    "kubernetes.io/basic-auth": (("username", "password"),),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",),),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",),),
    "kubernetes.io/dockercfg": ((".dockercfg",),),
}


def key_error(key: str) -> str | None:
    """Why `key` cannot be a ConfigMap/Secret key (it may become a file name), or None."""
    if not key:
        return "key must not be empty"
    if len(key) > 253:
        return f"key must be no more than 253 characters (got {len(key)})"
    if key in (".", "..") or not _KEY.match(key):
        return (f"invalid key {key!r}: a valid config key must consist of alphanumeric characters, "
                "'-', '_' or '.', and may not be '.' or '..'")
    return None


def _keys(errs: validation.Errors, path: str, keys: Mapping[str, Any]) -> None:
    for k in sorted(keys):
        why = key_error(k)
        if why is not None:
            errs.add(f"{path}[{k}]", why)


def _size(errs: validation.Errors, *maps: Mapping[str, str | bytes]) -> None:
    total = sum(len(k) + len(v) for m in maps for k, v in m.items())
    if total > MAX_DATA_BYTES:
        errs.add("data", f"must be no more than {MAX_DATA_BYTES} bytes in total (got {total})")


def validate_configmap(cm: config_pb2.ConfigMap) -> None:
    errs = validation.Errors()
    validation.metadata(errs, cm.metadata, namespaced=True)
    _keys(errs, "data", cm.data)
    _keys(errs, "binaryData", cm.binary_data)
    for k in sorted(set(cm.data) & set(cm.binary_data)):
        errs.add(f"binaryData[{k}]", "duplicate of a key in data")
    _size(errs, cm.data, cm.binary_data)
    errs.raise_if_any()


def validate_secret(s: config_pb2.Secret) -> None:
    errs = validation.Errors()
    validation.metadata(errs, s.metadata, namespaced=True)
    _keys(errs, "data", s.data)
    _size(errs, s.data)
    if len(s.type) > 253:
        errs.add("type", "must be no more than 253 characters")
    for names in REQUIRED_SECRET_KEYS.get(s.type, ()):
        if not any(n in s.data for n in names):
            errs.add(f"data[{names[0]}]", f"required for a Secret of type {s.type!r}"
                     + (f" (or {', '.join(names[1:])})" if len(names) > 1 else ""))
    errs.raise_if_any()


def fold_string_data(s: config_pb2.Secret) -> None:
    """Merge write-only `stringData` into `data` (it wins), as the Kubernetes API server does."""
    errs = validation.Errors()
    _keys(errs, "stringData", s.string_data)
    errs.raise_if_any()
    for k, v in s.string_data.items():
        s.data[k] = v.encode()
    s.ClearField("string_data")


M = TypeVar("M", bound=Message)


class ConfigObjects(Generic[M]):
    """CRUD for ConfigMaps or Secrets: the two differ only in their data fields and rules."""

    def __init__(self, res: Resource[M], validate: Callable[[M], None], data_fields: tuple[str, ...],
                 normalize: Callable[[M], None], check_update: Callable[[M, M], None] | None = None) -> None:
        self.res = res
        self.validate = validate
        self.data_fields = data_fields
        self.normalize = normalize
        # A rule of one kind between the stored object and the request (Secret: `type` stays).
        self.check_update = check_update

    async def create(self, obj: M) -> M:
        self.normalize(obj)
        self.res.prepare_new(obj)
        self.validate(obj)
        return await self.res.create(obj)

    async def update(self, req: M) -> M:
        self.normalize(req)
        kind = self.res.kind.kind

        want: Any = req

        def mutate(cur_m: M) -> M:
            cur: Any = cur_m
            new: Any = type(cur_m)()
            new.CopyFrom(cur)
            req = want
            if self.check_update is not None:
                self.check_update(want, cur_m)
            new.metadata.labels.clear()
            new.metadata.labels.update(req.metadata.labels)
            new.metadata.annotations.clear()
            new.metadata.annotations.update(req.metadata.annotations)
            changed = any(getattr(req, f) != getattr(cur, f) for f in self.data_fields)
            if cur.immutable:
                if changed:
                    raise Invalid(self.data_fields[0], f"field is immutable when `immutable` is set: "
                                  f"delete and recreate the {kind}")
                if req.HasField("immutable") and not req.immutable:
                    raise Invalid("immutable", "field is immutable when `immutable` is set")
            for f in self.data_fields:
                new.ClearField(f)
                getattr(new, f).update(getattr(req, f))
            if req.HasField("immutable"):
                new.immutable = req.immutable
            if changed:
                new.metadata.generation = cur.metadata.generation + 1
            self.validate(new)
            out: M = new
            return out

        ns, name = self.res.names(want.metadata.namespace, want.metadata.name)
        return await self.res.update(ns, name, want.metadata.resource_version, mutate)

    async def delete(self, opts: meta_pb2.DeleteOptions) -> M:
        ns, name = self.res.names(opts.key.namespace, opts.key.name)
        return await self.res.remove(ns, name, opts.resource_version)


def _no_change(cm: config_pb2.ConfigMap) -> None:
    return None


def _secret_defaults(s: config_pb2.Secret) -> None:
    fold_string_data(s)
    if not s.type:
        s.type = OPAQUE


def _secret_type_kept(req: config_pb2.Secret, cur: config_pb2.Secret) -> None:
    if req.type != cur.type:
        raise Invalid("type", f"field is immutable (is {cur.type!r}): delete and recreate the Secret")


def configmaps(res: Resource[config_pb2.ConfigMap]) -> ConfigObjects[config_pb2.ConfigMap]:
    return ConfigObjects(res, validate_configmap, ("data", "binary_data"), _no_change)


def secrets(res: Resource[config_pb2.Secret]) -> ConfigObjects[config_pb2.Secret]:
    return ConfigObjects(res, validate_secret, ("data",), _secret_defaults, _secret_type_kept)


class ConfigObjectServicer(Generic[M]):
    """ConfigMapService or SecretService."""

    def __init__(self, objects: ConfigObjects[M], list_message: Callable[..., Any], metrics: Metrics) -> None:
        self.objects = objects
        self.res = objects.res
        self.list_message = list_message
        self.metrics = metrics

    async def Create(self, req: M, ctx: Ctx) -> M:
        return await self.objects.create(req)

    async def Get(self, req: meta_pb2.ObjectKey, ctx: Ctx) -> M:
        return await self.res.get_key(req)

    async def List(self, req: meta_pb2.ListOptions, ctx: Ctx) -> Any:
        items, rev = await self.res.list(req)
        return self.list_message(items=items, resource_version=rev)

    async def Update(self, req: M, ctx: Ctx) -> M:
        return await self.objects.update(req)

    async def Delete(self, req: meta_pb2.DeleteOptions, ctx: Ctx) -> M:
        return await self.objects.delete(req)

    async def Watch(self, req: meta_pb2.WatchOptions, ctx: Ctx) -> AsyncIterator[bytes]:
        with self.metrics.watch_open(self.res.kind.resource):
            async for b in self.res.watch(req):
                yield b

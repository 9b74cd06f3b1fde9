"""`cowpod apply` and `cowpod create`: send manifests to the controller.

The whole input is decoded and checked before the first object is sent, so a
typo in document 3 leaves documents 1 and 2 unapplied too.

`apply` is declarative, as in kubectl: it records the manifest it applied in
the `cowpod.io/last-applied-configuration` annotation and, on the next apply,
changes only what the manifest says (top-level spec fields the manifest sets
are replaced; ones it stopped setting are cleared; fields the server filled,
such as `nodeName`, are kept). The same manifest again is `unchanged`.

What the server owns is ignored in an applied manifest, as kubectl users expect: the
object's `status` and server-set metadata (uid, resourceVersion, generation,
creationTimestamp, ...; `cowpod.manifest.user_owned`). So `cowpod get KIND NAME -o yaml`
applies back, and is `unchanged` when nothing the user owns differs from the stored object:
then nothing is written, not even this annotation (unless the object has none yet: made by
`create` or a controller, it is `configured` once to record it; docs/api.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from typing import Any

import grpc

from cowpod.api import podfields
from cowpod.api.labels import LAST_APPLIED_ANNOTATION
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, code_of, is_not_found, rpc_error, rpc_message
from cowpod.cli.kinds import entry
from cowpod.cli.progress import Progress
from cowpod.cli.readiness import Readiness
from cowpod.cli.resources import CONFLICT_ATTEMPTS, pause_after_conflict, ref, service, what
from cowpod.cli.safe_text import printable
from cowpod.cli.waiting import poll_until
from cowpod.manifest import Document, KindInfo, encode_object, load_paths, user_owned
from cowpod.manifest.kinds import EVENT, NAMESPACE, NODE, POD, SECRET, Obj
from cowpod.manifest.schema import input_names
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2

APPLY_EXAMPLES = """
  cowpod apply -f examples/hello.yaml            # pod/hello created
  cowpod apply -f examples/hello.yaml            # pod/hello unchanged
  cowpod apply -f examples/ --wait               # every manifest in a directory; wait until running
  cat web.yaml | cowpod apply -f -               # from stdin
  cowpod apply -f pods.yaml --dry-run            # only check the manifests
"""

CREATE_EXAMPLES = """
  cowpod create -f examples/hello.yaml           # fails if pod/hello exists
  cowpod create -f job.yaml                      # metadata.generateName: job- gives job-x7k2p
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file (YAML or JSON, several documents), directory, or - for stdin",
    )
    p.add_argument("--dry-run", action="store_true", help="check the manifests, send nothing")
    p.add_argument(
        "--wait", action="store_true", help="wait until pods run (or finish) and VMs have Ready nodes"
    )
    p.add_argument(
        "--timeout", type=parse_duration, default=300.0, metavar="DURATION", help="for --wait (300s)"
    )


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "apply",
        parents,
        help="create or update objects from manifests",
        description="Create each object in the manifests, or update it to match; prints created, "
        "configured or unchanged for each.",
        examples=APPLY_EXAMPLES,
    )
    _common(p)
    p.set_defaults(func=run_apply)
    c = add_command(
        sub,
        "create",
        parents,
        help="create objects from manifests (error if they exist)",
        description="Create each object in the manifests; an object that already exists is an error.",
        examples=CREATE_EXAMPLES,
    )
    _common(c)
    c.set_defaults(func=run_create)


def _prepare(ctx: Ctx, docs: list[Document], explicit_ns: str | None) -> None:
    """Give namespaced objects their namespace, refusing a clash with an explicit -n."""
    for doc in docs:
        meta = doc.obj.metadata
        if not doc.info.namespaced:
            continue
        if meta.namespace and explicit_ns and meta.namespace != explicit_ns:
            raise CliError(
                f'{doc.where}: the namespace in the manifest ("{meta.namespace}") does not match '
                f'-n "{explicit_ns}"',
                exit_code=2,
            )
        if not meta.namespace:
            meta.namespace = ctx.namespace


def _scoped_key(doc: Document) -> meta_pb2.ObjectKey:
    meta = doc.obj.metadata
    return meta_pb2.ObjectKey(namespace=meta.namespace, name=meta.name)


async def run_apply(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _run(ctx, args, create_only=False)


async def run_create(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _run(ctx, args, create_only=True)


async def _run(ctx: Ctx, args: argparse.Namespace, *, create_only: bool) -> int:
    # Namespaces first, as kubectl orders them: the rest of the file may live in them.
    docs = sorted(load_paths(args.filename, ctx.stdin), key=lambda d: d.info is not NAMESPACE)
    _prepare(ctx, docs, getattr(args, "namespace", None))
    if not create_only:
        for doc in docs:
            if not doc.name:
                raise CliError(f"{doc.where}: metadata.name: required by apply (use create for generateName)")
    if args.dry_run:
        for doc in docs:
            _warn(ctx, doc)
            ctx.print(f"{ref(doc.info, doc.name or doc.obj.metadata.generate_name)} checked (dry run)")
        return 0
    failures = 0
    applied: list[tuple[KindInfo, Obj]] = []
    # Pods to create go together in PodService.CreateBatch calls (one round trip for many
    # documents); everything else, and updates, one by one. Results print in document order.
    several_pods = sum(1 for d in docs if d.info is POD) > 1
    outcomes: list[tuple[str, Obj] | CliError | None] = []
    deferred: list[int] = []
    for doc in docs:
        try:
            if create_only and several_pods and doc.info is POD:
                outcome: tuple[str, Obj] | None = None
            elif create_only:
                outcome = ("created", await _create(ctx, doc.info, doc.obj))
            else:
                outcome = await apply_one(ctx, doc, create=not (several_pods and doc.info is POD))
        except CliError as e:
            outcomes.append(e)
            continue
        if outcome is None:
            deferred.append(len(outcomes))
        outcomes.append(outcome)
    if deferred:
        created = await _create_pods(ctx, [docs[i] for i in deferred])
        for i, out in zip(deferred, created, strict=True):
            if isinstance(out, _Exists) and not create_only:
                try:  # created by someone else since we looked: apply over it
                    outcomes[i] = await apply_one(ctx, docs[i])
                except CliError as e:
                    outcomes[i] = e
            else:
                outcomes[i] = out if isinstance(out, CliError) else ("created", out)
    for doc, result in zip(docs, outcomes, strict=True):
        if isinstance(result, CliError):
            ctx.err.write(printable(f"error: {doc.where}: {result.message}") + "\n")
            failures += 1
            continue
        assert result is not None
        verb, obj = result
        _warn(ctx, doc)
        ctx.print(f"{ref(doc.info, obj.metadata.name or doc.name)} {verb}")
        ctx.out.flush()
        applied.append((doc.info, obj))
    if args.wait and applied and not failures:
        await wait_applied(ctx, applied, timeout=args.timeout)
    return 1 if failures else 0


def _warn(ctx: Ctx, doc: Document) -> None:
    """Fields of an applied object accepted with no effect, one `Warning:` line each, as kubectl
    prints the server's warnings with the answer (the server sends the same lines,
    podfields.pod_warnings, in its answer's trailing metadata, for API clients)."""
    for w in podfields.object_warnings(doc.obj):
        ctx.err.write(printable(f"Warning: {ref(doc.info, doc.name)}: {w}") + "\n")


# Pods per CreateBatch call (the controller takes requests up to 4 MiB).
CREATE_BATCH = 200


class _ItemError(grpc.RpcError):
    """One item's failure in a batch answer, shaped like the RpcError of a single call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._c, self._d = code, details

    def code(self) -> grpc.StatusCode:
        return self._c

    def details(self) -> str:
        return self._d


class _Exists(CliError):
    """A pod that already existed when the batch was created."""


async def _create_pods(ctx: Ctx, docs: list[Document]) -> list[Obj | CliError]:
    """Create the pods of `docs` in CreateBatch calls; falls back to one Create each against
    a controller without CreateBatch."""
    out: list[Obj | CliError] = []
    svc = ctx.client.pods
    codes = {c.value[0]: c for c in grpc.StatusCode}
    for start in range(0, len(docs), CREATE_BATCH):
        chunk = docs[start: start + CREATE_BATCH]
        req = pod_pb2.CreatePodsRequest(pods=[d.obj for d in chunk])
        try:
            resp = await svc.CreateBatch(req, timeout=60)
        except grpc.RpcError as e:
            if code_of(e) != grpc.StatusCode.UNIMPLEMENTED:
                raise rpc_error(e, address=ctx.config.controller, what=f"{len(chunk)} pods") from e
            for d in chunk:
                try:
                    out.append(await _create(ctx, d.info, d.obj))
                except CliError as err:
                    out.append(err)
            continue
        for d, r in zip(chunk, resp.results, strict=True):
            name = r.pod.name or d.name
            if not r.ok:
                code = codes.get(r.code, grpc.StatusCode.UNKNOWN)
                msg = rpc_message(_ItemError(code, r.message), address=ctx.config.controller,
                                  what=what(d.info, name))
                out.append(_Exists(msg) if code == grpc.StatusCode.ALREADY_EXISTS else CliError(msg))
                continue
            obj = pod_pb2.Pod()
            obj.CopyFrom(d.obj)
            obj.metadata.name, obj.metadata.namespace = name, r.pod.namespace
            obj.metadata.uid, obj.metadata.resource_version = r.uid, r.resource_version
            out.append(obj)
    return out


def last_applied(doc: Document) -> str:
    """The canonical JSON of what the user asked for (no status, no server-set metadata),
    stored on the object."""
    data = user_owned(encode_object(doc.obj))
    if doc.info is SECRET:
        # Only digests of a Secret's values: the annotation is readable wherever the object is
        # (kubectl stores the values themselves here).
        for field in ("data", "stringData"):
            if field in data:
                data[field] = {k: "sha256:" + hashlib.sha256(str(v).encode()).hexdigest()
                               for k, v in data[field].items()}
    return json.dumps(_without_record(data), sort_keys=True, separators=(",", ":"))


def _without_record(data: dict[str, Any]) -> dict[str, Any]:
    """An encoded object without the last-applied annotation (nor an annotations map it
    leaves empty), changed in place."""
    meta = data.get("metadata", {})
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k != LAST_APPLIED_ANNOTATION}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return data


async def _create(ctx: Ctx, info: KindInfo, obj: Obj) -> Obj:
    svc = service(ctx, info)
    name = obj.metadata.name or obj.metadata.generate_name
    if info is NODE:
        created: Obj = await ctx.call(svc.Register, obj, what=what(info, name))
    elif not hasattr(svc, "Create"):
        raise CliError(f"{what(info, name)}: {info.plural} are kept by the controller and cannot be "
                       "applied (for Endpoints: give the Service a selector)", exit_code=2)
    else:
        created = await ctx.call(svc.Create, obj, what=what(info, name))
    return created


def _spec_fields(msg: Obj, spec: Any) -> set[str]:
    """Proto names of the top-level `spec` fields a manifest mapping sets."""
    if not isinstance(spec, dict) or "spec" not in [f.name for f in msg.DESCRIPTOR.fields]:
        return set()
    names = input_names(msg.spec.DESCRIPTOR)
    return {names[k].fd.name for k in spec if k in names and spec[k] is not None}


def merge(existing: Obj, desired: Obj, desired_raw: dict[str, Any], previous: dict[str, Any] | None) -> Obj:
    """`existing` changed as far as the manifest says: labels, annotations, mentioned spec fields."""
    merged = type(existing)()
    merged.CopyFrom(existing)
    meta, want = merged.metadata, desired.metadata
    prev_meta = (previous or {}).get("metadata", {})
    # Keys the last apply set and this one does not are removed; keys others set (an agent's
    # node labels) are kept; the manifest's own are set.
    for field in ("labels", "annotations"):
        current, wanted = getattr(meta, field), getattr(want, field)
        dropped = set(prev_meta.get(field, {})) | {LAST_APPLIED_ANNOTATION}
        kept = {k: v for k, v in current.items() if k not in dropped}
        current.clear()
        current.update(kept)
        current.update(wanted)
    # Kinds without a spec (ConfigMap, Secret): their top-level fields, the same way.
    mentioned_top = {f.name for f in _top_fields(desired) if f.json_name in desired_raw}
    before_top = {f.name for f in _top_fields(desired) if f.json_name in (previous or {})} - mentioned_top
    for name in mentioned_top:
        merged.ClearField(name)
        merged.MergeFrom(_only(desired, name))
    for name in before_top:
        merged.ClearField(name)
    if "spec" in [f.name for f in existing.DESCRIPTOR.fields]:
        spec, want_spec = merged.spec, desired.spec
        mentioned = _spec_fields(desired, desired_raw.get("spec"))
        before = _spec_fields(desired, (previous or {}).get("spec")) - mentioned
        for name in mentioned:
            spec.ClearField(name)
            only = type(want_spec)()
            only.CopyFrom(want_spec)
            for other in only.DESCRIPTOR.fields:
                if other.name != name:
                    only.ClearField(other.name)
            spec.MergeFrom(only)
        for name in before:
            spec.ClearField(name)
    return merged


_NOT_TOP = frozenset({"api_version", "kind", "metadata", "spec", "status"})


def _top_fields(msg: Obj) -> list[Any]:
    return [f for f in msg.DESCRIPTOR.fields if f.name not in _NOT_TOP]


def _only(msg: Obj, name: str) -> Obj:
    """A copy of `msg` with every field but `name` cleared."""
    only = type(msg)()
    only.CopyFrom(msg)
    for other in only.DESCRIPTOR.fields:
        if other.name != name:
            only.ClearField(other.name)
    return only


async def apply_one(ctx: Ctx, doc: Document, *, create: bool = True) -> tuple[str, Obj] | None:
    """Create or update one object; returns ("created"|"configured"|"unchanged", object).
    With `create` False an object that does not exist is left to the caller (None)."""
    info = doc.info
    if not entry(info).can_get_one and info is not EVENT:  # apply compares with the stored object
        raise CliError(f"{info.plural} cannot be applied, as they cannot be read back by name; "
                       f"use `cowpod create -f`", exit_code=2)
    svc = service(ctx, info)
    meta = doc.obj.metadata
    stamp = last_applied(doc)
    meta.annotations[LAST_APPLIED_ANNOTATION] = stamp
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            found = await _read(svc, info, _scoped_key(doc))
        except grpc.RpcError as e:
            raise rpc_error(e, address=ctx.config.controller, what=what(info, doc.name)) from e
        if found is None:
            if not create:
                return None
            return "created", await _create(ctx, info, doc.obj)
        existing: Obj = found
        previous_text = existing.metadata.annotations.get(LAST_APPLIED_ANNOTATION)
        if previous_text == stamp:
            return "unchanged", existing
        try:
            previous = json.loads(previous_text) if previous_text else None
        except ValueError:
            previous = None
        merged = merge(existing, doc.obj, doc.raw, previous)
        if _same_but_annotation(merged, existing) and (previous_text or not entry(info).can_change):
            # Nothing the user owns differs (the manifest may be `get -o yaml` output, every
            # default spelled out): no write, so the stored object and its version stay. An
            # object with no record yet (made by `create` or a controller) is given one, as
            # kubectl does, so the next apply knows what this one set.
            return "unchanged", existing
        if not entry(info).can_change:
            raise CliError(
                f"{ref(info, doc.name)}: {info.plural} cannot be changed after creation; "
                f"delete it and apply again"
            )
        try:
            updated: Obj = await svc.Update(merged, timeout=30)
        except grpc.RpcError as e:
            if code_of(e) == grpc.StatusCode.ABORTED:
                await pause_after_conflict(attempt + 1)
                continue  # someone else wrote meanwhile: read again and re-merge
            raise rpc_error(e, address=ctx.config.controller, what=what(info, doc.name)) from e
        return "configured", updated
    raise CliError(f"{ref(info, doc.name)} keeps changing under us; try again")


async def _read(svc: Any, info: KindInfo, key: meta_pb2.ObjectKey) -> Obj | None:
    """The stored object apply compares with, None if there is none. A kind read only by
    listing (Events) is found in its namespace's list, as `get event NAME` finds it."""
    if info is EVENT:
        resp = await svc.List(event_pb2.ListEventsRequest(list=meta_pb2.ListOptions(namespace=key.namespace)),
                              timeout=30)
        return next((o for o in resp.items if o.metadata.name == key.name), None)
    try:
        obj: Obj = await svc.Get(key, timeout=30)
    except grpc.RpcError as e:
        if is_not_found(e):
            return None
        raise
    return obj


def _same_but_annotation(a: Obj, b: Obj) -> bool:
    """Equal as a manifest says them, the last-applied annotation aside: compared in the
    manifest shape, since that is all a manifest can say (times to the second, as Kubernetes
    writes them; a probe's `port: http` however the server resolved it)."""
    return _without_record(encode_object(a)) == _without_record(encode_object(b))


async def wait_applied(ctx: Ctx, applied: list[tuple[KindInfo, Obj]], *, timeout: float) -> None:
    watched = [(info, obj) for info, obj in applied if entry(info).readiness is not None]
    if not watched:
        return
    pending = {(info.kind, o.metadata.namespace, o.metadata.name): info for info, o in watched}

    async def check() -> tuple[bool, str]:
        states: list[str] = []
        for (kind, ns, name), info in list(pending.items()):
            r = await readiness_of(ctx, info, ns, name)
            if r.failure:
                raise CliError(r.failure)
            if r.done:
                del pending[(kind, ns, name)]
                ctx.err.write(f"{ref(info, name)} {r.status}\n")
            else:
                states.append(f"{ref(info, name)} {r.status}")
        return (not pending, ", ".join(states))

    await poll_until(
        ctx,
        check,
        timeout=timeout,
        what=f"{len(watched)} object(s)",
        progress=Progress(ctx.err),
        hint="see `cowpod describe` and `cowpod get events`",
    )


async def readiness_of(ctx: Ctx, info: KindInfo, namespace: str, name: str) -> Readiness:
    """The kind's readiness (its entry in cowpod.cli.kinds) of the stored object, given its node
    when it runs one (a VM's `status.nodeName`)."""
    judge = entry(info).readiness
    key = meta_pb2.ObjectKey(namespace=namespace, name=name)
    obj: Any = await ctx.call(service(ctx, info).Get, key, what=what(info, name), retry=True)
    if judge is None:
        return Readiness(True, "created")
    status = getattr(obj, "status", None)
    node_name = getattr(status, "node_name", "") if status is not None else ""
    node = None
    if node_name:
        try:
            node = await ctx.client.nodes.Get(meta_pb2.ObjectKey(name=node_name), timeout=10)
        except grpc.RpcError:
            node = None  # not registered yet: the VM is not there yet
    return judge(obj, node)

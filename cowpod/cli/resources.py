"""One table of how each kind is read, listed, watched, created and deleted.

Commands speak in kinds (`pods`, `vm`) and names; this module maps them to the
services in `cowpod.client.Client`, so `get`, `describe`, `delete`, `wait` and
`apply` share one implementation per verb instead of one per kind.
"""

from __future__ import annotations

import asyncio
from typing import Any

from google.protobuf.message import Message

from cowpod.backoff import Backoff
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.kinds import all_kinds, entry
from cowpod.manifest import KindInfo, by_alias
from cowpod.manifest.kinds import EVENT
from cowpod.v1 import event_pb2, meta_pb2

# A write that lost a race (ABORTED: the object changed since it was read) is read, merged
# and sent again, as client-go's RetryOnConflict does, with a short growing pause between
# tries: a workload's controller writes its status several times in the ~100 ms after a
# change, so `cowpod apply` right after another apply (the docs' deployment.yaml, then
# deployment-update.yaml) must outlast that burst rather than retry into it at once.
CONFLICT_ATTEMPTS = 8
CONFLICT_BACKOFF = Backoff(initial=0.02, cap=0.5, jitter=0.5)


async def pause_after_conflict(conflicts: int) -> None:
    """Wait before the next try after `conflicts` lost races in a row (1 = the first)."""
    await asyncio.sleep(CONFLICT_BACKOFF.delay(conflicts))

# Every kind `get` takes (each has an entry in cowpod.cli.kinds).
GETTABLE = all_kinds()


def resolve_kind(name: str, allowed: tuple[KindInfo, ...] = GETTABLE) -> KindInfo:
    info = by_alias(name)
    choices = ", ".join(k.plural for k in allowed)
    if info is None:
        raise CliError(f'unknown resource type "{name}" (one of: {choices})', exit_code=2)
    if info not in allowed:
        raise CliError(f"this command does not take {info.plural} (it takes: {choices})", exit_code=2)
    return info


def what(info: KindInfo, name: str) -> str:
    """How errors name an object: `pod "web"`."""
    return f'{info.singular} "{name}"'


def ref(info: KindInfo, name: str) -> str:
    """How results name an object: `pod/web`."""
    return f"{info.singular}/{name}"


def namespace_for(info: KindInfo, ctx: Ctx, all_namespaces: bool = False) -> str:
    if not info.namespaced or all_namespaces:
        return ""
    return ctx.namespace


def service(ctx: Ctx, info: KindInfo) -> Any:
    """The kind's stub on the client (`ctx.client.pods`, ...), as the kinds table names it."""
    return getattr(ctx.client, entry(info).client_attr)


async def get_object(ctx: Ctx, info: KindInfo, name: str) -> Message:
    ns = namespace_for(info, ctx)
    if not entry(info).can_get_one:  # events: only a List
        for ev in await list_objects(ctx, info):
            if ev.metadata.name == name:
                found: Message = ev
                return found
        raise CliError(f"{what(info, name)} not found")
    key = meta_pb2.ObjectKey(namespace=ns, name=name)
    obj: Message = await ctx.call(service(ctx, info).Get, key, what=what(info, name), retry=True)
    return obj


def list_options(
    ctx: Ctx, info: KindInfo, *, all_namespaces: bool = False, selector: str = "", field_selector: str = ""
) -> meta_pb2.ListOptions:
    return meta_pb2.ListOptions(
        namespace=namespace_for(info, ctx, all_namespaces),
        label_selector=selector,
        field_selector=field_selector,
    )


async def list_objects(
    ctx: Ctx,
    info: KindInfo,
    *,
    all_namespaces: bool = False,
    selector: str = "",
    field_selector: str = "",
    involved: event_pb2.ObjectReference | None = None,
) -> list[Any]:
    opts = list_options(
        ctx, info, all_namespaces=all_namespaces, selector=selector, field_selector=field_selector
    )
    svc = service(ctx, info)
    if info is EVENT:
        req = event_pb2.ListEventsRequest(list=opts, involved_object=involved)
        resp = await ctx.call(svc.List, req, what=info.plural, retry=True)
    else:
        resp = await ctx.call(svc.List, opts, what=info.plural, retry=True)
    items = list(resp.items)
    return sorted(items, key=lambda o: (o.metadata.namespace, o.metadata.name))


async def events_for(ctx: Ctx, info: KindInfo, obj: Any) -> list[event_pb2.Event]:
    """Events about one object; filtered here too, in case the server ignores the filter."""
    meta = obj.metadata
    involved = event_pb2.ObjectReference(kind=info.kind, namespace=meta.namespace, name=meta.name)
    try:
        events = await list_objects(ctx, EVENT, all_namespaces=not info.namespaced, involved=involved)
    except CliError:
        return []  # describe still shows the object when events cannot be listed
    return [
        e
        for e in events
        if e.involved_object.name == meta.name
        and e.involved_object.kind.lower() in (info.kind.lower(), "")
        and (not info.namespaced or e.involved_object.namespace in (meta.namespace, ""))
    ]


def delete_options(
    ctx: Ctx, info: KindInfo, name: str, *, grace: int | None = None, cascade: bool = False
) -> meta_pb2.DeleteOptions:
    opts = meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(namespace=namespace_for(info, ctx), name=name))
    if grace is not None:
        opts.grace_period_seconds = grace
    opts.cascade = cascade
    return opts


async def delete_object(
    ctx: Ctx, info: KindInfo, name: str, *, grace: int | None = None, cascade: bool = False
) -> None:
    rpc = entry(info).delete_rpc
    if rpc is None:
        why = "they expire on their own" if info is EVENT else "the controller keeps them; delete the owner"
        raise CliError(f"{info.plural} cannot be deleted; {why}", exit_code=2)
    opts = delete_options(ctx, info, name, grace=grace, cascade=cascade)
    await ctx.call(getattr(service(ctx, info), rpc), opts, what=what(info, name))

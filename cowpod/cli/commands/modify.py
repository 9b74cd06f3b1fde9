"""`cowpod label`, `annotate`, `patch` and `edit`: change one stored object in place.

All four read the object, change it and write it back with its resource_version,
so a concurrent writer is never overwritten: on ABORTED they read again and redo
the change (`edit` instead says so and keeps the user's file, as kubectl does).
`patch` takes a JSON merge patch (RFC 7386) over the object as a manifest prints
it; the result is decoded like any manifest, so a typo in it is refused with the
field's path before anything is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from typing import Any

import grpc
import yaml

from cowpod.cli.commands.common import Subparsers, add_command, split_type_name
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, code_of, rpc_error
from cowpod.cli.kinds import kinds_where, type_help
from cowpod.cli.resources import (
    CONFLICT_ATTEMPTS,
    get_object,
    pause_after_conflict,
    ref,
    resolve_kind,
    service,
    what,
)
from cowpod.manifest import FieldError, KindInfo, decode_object, dump_yaml, encode_object

LABEL_EXAMPLES = """
  cowpod label pod web tier=frontend            # add a label
  cowpod label pod web tier=backend --overwrite # change one that is set
  cowpod label node vm-1 disk=ssd               # nodes too (nodeSelector picks them)
  cowpod label deploy/web tier-                 # remove a label (KEY-)
"""
ANNOTATE_EXAMPLES = """
  cowpod annotate pod web owner=team-a
  cowpod annotate svc web description='the web tier' --overwrite
  cowpod annotate pod web owner-                # remove it
"""
PATCH_EXAMPLES = """
  cowpod patch deploy web -p '{"spec":{"replicas":3}}'
  cowpod patch pod web -p '{"metadata":{"labels":{"tier":null}}}'   # null removes a key
  cowpod patch configmap game -p '{"data":{"lives":"5"}}'
"""
EDIT_EXAMPLES = """
  cowpod edit deploy web                        # opens $EDITOR on the Deployment as YAML
  EDITOR=nano cowpod edit configmap game
"""


# Kinds these verbs change: those whose service has an Update (not VMs, events or endpoints).
CHANGEABLE = kinds_where(lambda e: e.can_change)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("type", metavar="TYPE", help=type_help(CHANGEABLE))


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    for verb, field, examples in (("label", "labels", LABEL_EXAMPLES), ("annotate", "annotations",
                                                                          ANNOTATE_EXAMPLES)):
        p = add_command(sub, verb, parents, help=f"add, change or remove {field} of an object",
                        description=f"Set {field} with KEY=VALUE, remove them with KEY-. A key that is "
                                    "already set keeps its value unless --overwrite.",
                        examples=examples)
        _target(p)
        p.add_argument("args", nargs="+", metavar="NAME|KEY=VALUE|KEY-")
        p.add_argument("--overwrite", action="store_true", help="allow changing a key that is set")
        p.set_defaults(func=run_label if verb == "label" else run_annotate)
    p = add_command(sub, "patch", parents, help="change fields of an object with a JSON merge patch",
                    description="Apply a JSON merge patch (RFC 7386) to an object as `get -o json` "
                                "prints it: objects merge, other values replace, null deletes.",
                    examples=PATCH_EXAMPLES)
    _target(p)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-p", "--patch", required=True, help="the patch, JSON (or YAML)")
    p.add_argument("--type", default="merge", choices=("merge",),
                   help="merge (the only one: strategic merge patches need Kubernetes' schemas)")
    p.set_defaults(func=run_patch)
    p = add_command(sub, "edit", parents, help="edit an object in $EDITOR and save it back",
                    description="Open the object as YAML in $EDITOR (else vi); saving writes it back "
                                "if nothing else changed it meanwhile.",
                    examples=EDIT_EXAMPLES)
    _target(p)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.set_defaults(func=run_edit)


def _one(args: argparse.Namespace, rest: list[str]) -> tuple[KindInfo, str, list[str]]:
    """(kind, name, the remaining arguments) from `TYPE NAME ...` or `TYPE/NAME ...`."""
    kind, names = split_type_name(args.type, rest)
    info = resolve_kind(kind, CHANGEABLE)
    if not names:
        raise CliError(f"name the {info.singular}: cowpod {args.verb} {info.singular} NAME ...", exit_code=2)
    return info, names[0], names[1:]


async def change(ctx: Ctx, info: KindInfo, name: str,
                 mutate: Callable[[Any], Any | None]) -> tuple[bool, Any]:
    """Read, `mutate` (a changed copy, or None for no change) and write back, retrying
    on a concurrent write. Returns (changed, the stored object)."""
    svc = service(ctx, info)
    for attempt in range(CONFLICT_ATTEMPTS):
        obj: Any = await get_object(ctx, info, name)
        new = mutate(obj)
        if new is None:
            return False, obj
        new.metadata.resource_version = obj.metadata.resource_version
        try:
            updated = await svc.Update(new, timeout=30)
        except grpc.RpcError as e:
            if code_of(e) == grpc.StatusCode.ABORTED:
                await pause_after_conflict(attempt + 1)
                continue
            raise rpc_error(e, address=ctx.config.controller, what=what(info, name)) from e
        return True, updated
    raise CliError(f"{ref(info, name)} keeps changing under us; try again")


def parse_changes(pairs: list[str], what_: str) -> tuple[dict[str, str], list[str]]:
    sets: dict[str, str] = {}
    removes: list[str] = []
    for pair in pairs:
        if "=" in pair:
            k, _, v = pair.partition("=")
            if not k:
                raise CliError(f"invalid {what_} {pair!r}: expected KEY=VALUE or KEY-", exit_code=2)
            sets[k] = v
        elif pair.endswith("-") and len(pair) > 1:
            removes.append(pair[:-1])
        else:
            raise CliError(f"invalid {what_} {pair!r}: expected KEY=VALUE or KEY-", exit_code=2)
    return sets, removes


async def _map_verb(ctx: Ctx, args: argparse.Namespace, field: str, word: str) -> int:
    info, name, rest = _one(args, list(args.args))
    sets, removes = parse_changes(rest, word)
    if not sets and not removes:
        raise CliError(f"give at least one {word}: KEY=VALUE or KEY-", exit_code=2)

    def mutate(obj: Any) -> Any | None:
        current = getattr(obj.metadata, field)
        for k, v in sets.items():
            if k in current and current[k] != v and not args.overwrite:
                raise CliError(f"'{k}' already has a value ({current[k]}), and --overwrite is false")
        if all(current.get(k) == v for k, v in sets.items()) and not any(k in current for k in removes):
            return None
        new = type(obj)()
        new.CopyFrom(obj)
        target = getattr(new.metadata, field)
        target.update(sets)
        for k in removes:
            target.pop(k, None)
        return new

    changed, _ = await change(ctx, info, name, mutate)
    ctx.print(f"{ref(info, name)} {'labeled' if field == 'labels' else 'annotated'}"
              if changed else f"{ref(info, name)} not {'labeled' if field == 'labels' else 'annotated'}")
    return 0


async def run_label(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _map_verb(ctx, args, "labels", "label")


async def run_annotate(ctx: Ctx, args: argparse.Namespace) -> int:
    return await _map_verb(ctx, args, "annotations", "annotation")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _decode(info: KindInfo, data: Any, where: str) -> Any:
    try:
        got, obj = decode_object(data)
    except FieldError as e:
        raise CliError(f"{where}: {e.path}: {e.reason}" if e.path else f"{where}: {e.reason}") from None
    if got is not info:
        raise CliError(f"{where}: kind cannot change (from {info.kind} to {got.kind})")
    return obj


async def run_patch(ctx: Ctx, args: argparse.Namespace) -> int:
    info, name, _ = _one(args, list(args.names))
    try:
        patch = yaml.safe_load(args.patch)
    except yaml.YAMLError as e:
        raise CliError(f"--patch is not JSON or YAML: {e}", exit_code=2) from None
    if not isinstance(patch, dict):
        raise CliError("--patch must be an object, e.g. '{\"spec\":{\"replicas\":3}}'", exit_code=2)

    def mutate(obj: Any) -> Any | None:
        before = encode_object(obj)
        after = merge_patch(before, patch)
        if after == before:
            return None
        return _decode(info, after, "the patched object")

    changed, _ = await change(ctx, info, name, mutate)
    ctx.print(f"{ref(info, name)} {'patched' if changed else 'patched (no change)'}")
    return 0


def _edit_in_editor(editor: str, name: str, text: str) -> tuple[str, str]:
    """Write `text` to a temporary file, run `editor` on it, return (path, what was saved)."""
    fd, path = tempfile.mkstemp(prefix=f"cowpod-edit-{name}-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    rc = subprocess.call([*shlex.split(editor), path])
    if rc != 0:
        raise CliError(f"the editor {editor!r} exited {rc}; nothing was changed (your file: {path})")
    with open(path) as f:
        return path, f.read()


async def run_edit(ctx: Ctx, args: argparse.Namespace) -> int:
    info, name, _ = _one(args, list(args.names))
    obj: Any = await get_object(ctx, info, name)
    original = dump_yaml(encode_object(obj))
    header = (f"# Edit the {info.kind} below and save to apply; an unchanged or empty file cancels.\n"
              f"# {ref(info, name)}, resource version {obj.metadata.resource_version}\n")
    editor = ctx.env.get("EDITOR") or "vi"
    path, text = await asyncio.to_thread(_edit_in_editor, editor, f"{info.singular}-{name}",
                                         header + original)
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    if not body.strip() or body == original:
        os.unlink(path)
        ctx.print("Edit cancelled, no changes made.")
        return 0
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as e:
        raise CliError(f"{path}: not valid YAML: {e}; nothing was changed") from None
    new = _decode(info, data, path)
    if new.metadata.name != name:
        raise CliError(f"{path}: metadata.name cannot change (from {name!r}); nothing was changed")
    new.metadata.resource_version = obj.metadata.resource_version
    try:
        await service(ctx, info).Update(new, timeout=30)
    except grpc.RpcError as e:
        if code_of(e) == grpc.StatusCode.ABORTED:
            raise CliError(f"{ref(info, name)} was changed by someone else while you edited; your "
                           f"version is in {path}: run `cowpod edit` again") from None
        where = f"{what(info, name)} (your file: {path})"
        raise rpc_error(e, address=ctx.config.controller, what=where) from e
    os.unlink(path)
    ctx.print(f"{ref(info, name)} edited")
    return 0

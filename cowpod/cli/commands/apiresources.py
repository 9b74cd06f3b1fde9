"""`cowpod api-resources`: the kinds this CLI knows, their names and the verbs each takes.

kubectl asks the server's discovery API; here the answer is compiled in: the
kinds table (`cowpod.cli.kinds`) and, for the verbs, the RPCs of each kind's
gRPC service, so what it prints is exactly what `get`, `delete`, `-w` and the
others accept. It needs no controller.
"""

from __future__ import annotations

import argparse

from cowpod.cli import printers
from cowpod.cli.commands.common import Subparsers, add_command
from cowpod.cli.context import Ctx
from cowpod.cli.kinds import CliKind, all_kinds, entry
from cowpod.manifest import KindInfo

EXAMPLES = """
  cowpod api-resources                     # NAME SHORTNAMES APIVERSION NAMESPACED KIND
  cowpod api-resources -o wide             # ... and the VERBS each kind takes
  cowpod api-resources --namespaced=false  # cluster-wide kinds (nodes, vms, namespaces, priorityclasses)
  cowpod api-resources -o name             # pods, nodes, ...
"""

# kubectl's verb for each RPC of a kind's service (patch is an Update here: a merge patch is
# applied by the CLI and written with the object's resourceVersion).
_VERBS = {"Create": ("create",), "Register": ("create",), "Delete": ("delete",), "Destroy": ("delete",),
          "Get": ("get",), "List": ("list",), "Update": ("patch", "update"), "Watch": ("watch",)}


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "api-resources",
        parents,
        help="list the kinds, their short names and the verbs each takes",
        description="Print the kinds this CLI knows (from its compiled protos; no controller is "
        "contacted), as kubectl api-resources does.",
        examples=EXAMPLES,
    )
    p.add_argument("-o", "--output", metavar="FORMAT", choices=("wide", "name"), help="wide | name")
    p.add_argument("--namespaced", choices=("true", "false"), help="only namespaced (true) or cluster-wide "
                   "(false) kinds")
    p.add_argument("--no-headers", action="store_true", help="omit the table header")
    p.set_defaults(func=run)


def verbs(e: CliKind) -> list[str]:
    """kubectl's words for what the kind's service can do, sorted as kubectl prints them."""
    return sorted({v for rpc in e.rpcs for v in _VERBS.get(rpc, ())})


def short_names(info: KindInfo) -> list[str]:
    return [a for a in info.aliases if a not in (info.singular, info.plural)]


def table(kinds: list[KindInfo], *, wide: bool) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"] + (["VERBS"] if wide else [])
    rows = []
    for k in kinds:
        row = [k.plural, ",".join(short_names(k)), k.api_version, "true" if k.namespaced else "false", k.kind]
        if wide:
            row.append(",".join(verbs(entry(k))))
        rows.append(row)
    return headers, rows


async def run(ctx: Ctx, args: argparse.Namespace) -> int:
    kinds = [k for k in all_kinds() if args.namespaced is None or k.namespaced == (args.namespaced == "true")]
    kinds.sort(key=lambda k: k.plural)
    if args.output == "name":
        for k in kinds:
            ctx.print(k.plural)
        return 0
    headers, rows = table(kinds, wide=args.output == "wide")
    text = printers.render_table(headers, rows)
    if args.no_headers:
        text = "".join(text.splitlines(keepends=True)[1:])
    ctx.out.write(text)
    return 0

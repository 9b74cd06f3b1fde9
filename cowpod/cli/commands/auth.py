"""`cowpod token` (create, list, revoke bearer tokens) and `cowpod config`
(which cluster and user the CLI talks as; switch contexts; add a token user)."""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib

from cowpod.auth.config import (
    ENV_CONFIG,
    ConfigError,
    ContextEntry,
    UserConfig,
    UserEntry,
    default_config_path,
    load_config,
)
from cowpod.auth.tokens import ROLES
from cowpod.cli import printers
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration, sub_examples
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.v1 import auth_pb2, auth_pb2_grpc, meta_pb2

TOKEN_EXAMPLES = """\
  cowpod token create --role view                 # read-only, expires in 90 days (the default)
  cowpod token create --role edit --ttl 24h --description "ci"
  cowpod token create --role bootstrap --ttl 1h   # for `cowpod-agent --bootstrap-token-file`
  cowpod token list
  cowpod token revoke abcd1234
"""

CONFIG_EXAMPLES = """\
  cowpod config                                   # which cluster and user, and who the controller says we are
  cowpod config view                              # the current context (what `cowpod config` shows)
  cowpod config get-contexts
  cowpod config set-token viewer --token abcd1234.xxxx --use
  cowpod config use-context local
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    token = add_command(
        sub, "token", parents,
        help="create, list and revoke bearer tokens (admin)",
        description="Bearer tokens for people and scripts (roles admin, edit, view) and for agents "
        "joining the cluster (bootstrap). The secret is shown once, at creation; the controller "
        "keeps only its sha256.",
        examples=TOKEN_EXAMPLES,
    )
    tsub = token.add_subparsers(dest="token_verb", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create a token and print it (once)")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--ttl", type=parse_duration, default=0.0, metavar="DURATION",
                        help="lifetime, e.g. 1h, 24h (default: the controller's --default-token-ttl, "
                             "90 days unless set; bootstrap: 1h)")
    create.add_argument("--single-use", action="store_true", help="bootstrap tokens: consumed by one join")
    create.add_argument("--node", default="", help="bootstrap tokens: the only node name that may join")
    create.add_argument("--description", default="")
    create.set_defaults(func=run_token_create)
    lst = tsub.add_parser("list", help="list tokens (ids, roles, expiry; never secrets)")
    lst.set_defaults(func=run_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=run_token_revoke)

    config = add_command(
        sub, "config", parents,
        help="show or change which cluster and user the CLI uses",
        description="The user config file ($COWPOD_CONFIG, else <data-dir>/config, i.e. ~/.cowpod/config) "
        "holds clusters, users (client certificate or bearer token) and contexts, like a kubeconfig. "
        "`cowpod up` writes the `local` context.",
        examples=CONFIG_EXAMPLES,
    )
    config.set_defaults(func=run_config_show)
    csub = config.add_subparsers(dest="config_verb", metavar="ACTION")
    show = csub.add_parser("view", help="show the current context (the default action)")
    show.set_defaults(func=run_config_show)
    ctxs = csub.add_parser("get-contexts", help="list the contexts")
    ctxs.set_defaults(func=run_config_contexts)
    use = csub.add_parser("use-context", help="make a context current")
    use.add_argument("name")
    use.set_defaults(func=run_config_use)
    st = csub.add_parser("set-token", help="add a user with a bearer token and a context for it")
    st.add_argument("name", help="name of the user and of its context")
    g = st.add_mutually_exclusive_group(required=True)
    g.add_argument("--token")
    g.add_argument("--token-file")
    st.add_argument("--cluster", default="", help="cluster of the context (default: the current one's)")
    st.add_argument("--use", action="store_true", help="make the new context current")
    st.set_defaults(func=run_config_set_token)
    sub_examples(token, "token", TOKEN_EXAMPLES)
    sub_examples(config, "config", CONFIG_EXAMPLES)


# --- token -----------------------------------------------------------------------------------------


def _tokens(ctx: Ctx) -> auth_pb2_grpc.TokenServiceStub:
    return auth_pb2_grpc.TokenServiceStub(ctx.client.channel)


async def run_token_create(ctx: Ctx, args: argparse.Namespace) -> int:
    req = auth_pb2.CreateTokenRequest(
        role=args.role, ttl_seconds=int(args.ttl), single_use=args.single_use,
        node_name=args.node, description=args.description,
    )
    created = await ctx.call(_tokens(ctx).Create, req, what="creating a token")
    ctx.print(created.token)
    expiry = _expiry(created)
    ctx.err.write(f"token {created.metadata.name} ({created.spec.role}, expires {expiry}); "
                  "this is the only time its secret is shown\n")
    return 0


def _expiry(t: auth_pb2.Token) -> str:
    if not t.spec.HasField("expires_at"):
        return "never"
    return dt.datetime.fromtimestamp(t.spec.expires_at.seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def run_token_list(ctx: Ctx, args: argparse.Namespace) -> int:
    resp = await ctx.call(_tokens(ctx).List, meta_pb2.ListOptions(), what="listing tokens", retry=True)
    rows = [
        [t.metadata.name, t.spec.role, _expiry(t), "yes" if t.spec.single_use else "",
         t.spec.node_name, t.spec.description]
        for t in resp.items
    ]
    ctx.out.write(printers.render_table(["ID", "ROLE", "EXPIRES", "SINGLE-USE", "NODE", "DESCRIPTION"], rows))
    return 0


async def run_token_revoke(ctx: Ctx, args: argparse.Namespace) -> int:
    t = await ctx.call(_tokens(ctx).Revoke, auth_pb2.RevokeTokenRequest(name=args.id), what="revoking")
    ctx.print(f"token {t.metadata.name} revoked")
    return 0


# --- config ----------------------------------------------------------------------------------------


def _config_path(ctx: Ctx) -> pathlib.Path:
    if ctx.env.get(ENV_CONFIG):
        return default_config_path(ctx.env)
    return ctx.config.data_dir / "config"


def _load(ctx: Ctx) -> tuple[pathlib.Path, UserConfig]:
    path = _config_path(ctx)
    try:
        return path, load_config(path)
    except ConfigError as e:
        raise CliError(str(e)) from None


async def run_config_show(ctx: Ctx, args: argparse.Namespace) -> int:
    path, cfg = _load(ctx)
    ctx.print(f"config:   {path}")
    try:
        ctx.print(cfg.describe())
    except ConfigError as e:
        ctx.print(f"({e})")
    conn = ctx.config.connection
    how = "plaintext, INSECURE" if conn.insecure else "TLS"
    ctx.print(f"using:    {ctx.config.controller} ({how}; from {ctx.config.controller_source})")
    who = await ctx.call(
        auth_pb2_grpc.IdentityServiceStub(ctx.client.channel).WhoAmI, auth_pb2.WhoAmIRequest(),
        what="asking the controller who we are", timeout=10,
    )
    groups = f" groups {', '.join(who.groups)}" if who.groups else ""
    ctx.print(f"identity: {who.user} (role {who.role}, by {who.authenticated_by}){groups}")
    return 0


async def run_config_contexts(ctx: Ctx, args: argparse.Namespace) -> int:
    _, cfg = _load(ctx)
    rows = [["*" if c.name == cfg.current_context else "", c.name, c.cluster, c.user] for c in cfg.contexts]
    ctx.out.write(printers.render_table(["CURRENT", "NAME", "CLUSTER", "USER"], rows))
    return 0


async def run_config_use(ctx: Ctx, args: argparse.Namespace) -> int:
    path, cfg = _load(ctx)
    try:
        cfg.use_context(args.name).save(path)
    except ConfigError as e:
        raise CliError(str(e)) from None
    ctx.print(f'switched to context "{args.name}"')
    return 0


async def run_config_set_token(ctx: Ctx, args: argparse.Namespace) -> int:
    path, cfg = _load(ctx)
    cluster = args.cluster or next((c.cluster for c in cfg.contexts if c.name == cfg.current_context), "")
    if not cluster or all(c.name != cluster for c in cfg.clusters):
        raise CliError("no such cluster in the config; pass --cluster (see `cowpod config get-contexts`)")
    user = UserEntry(args.name, token=args.token or "", token_file=args.token_file or "")
    cfg = cfg.with_user(user).with_context(ContextEntry(args.name, cluster, args.name), use=args.use)
    cfg.save(path)
    ctx.print(f'user and context "{args.name}" saved in {path}' + (" (current)" if args.use else ""))
    return 0

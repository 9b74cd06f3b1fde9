"""`cowpod`: the command line, kubectl-like.

    cowpod up -d --vms 1
    cowpod apply -f examples/hello.yaml
    cowpod get pods -o wide

`main(argv)` parses, builds a `Ctx` (config from flags, env and the state file
of `cowpod up`), runs the verb's coroutine and turns every expected failure
into ONE line on stderr and a non-zero exit code; `--debug` adds the
traceback. Verbs live in `cowpod.cli.commands`, one module per family.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO, cast

import grpc

from cowpod.auth.config import ConfigError
from cowpod.cli.commands import (
    apiresources,
    apply,
    auth,
    cluster,
    delete,
    describe,
    drain,
    get,
    logs,
    modify,
    node,
    rollout,
    version,
    vm,
)
from cowpod.cli.commands import wait as wait_cmd
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError, rpc_message
from cowpod.cli.safe_text import PrintableWriter, printable
from cowpod.clock import Clock, RealClock
from cowpod.config import load_config
from cowpod.local.state import StateError
from cowpod.manifest import ManifestError

DESCRIPTION = """\
cowpod runs containers on a fleet of VMs, the Kubernetes way: write pod
manifests, apply them, and cowpod schedules them onto VMs that it can
instant-clone when it needs more room.
"""

EPILOG = """\
getting started:
  cowpod up --detach --vms 1             start a local cluster with one VM
  cowpod apply -f examples/hello.yaml    run a pod
  cowpod get pods                        see it
  cowpod logs hello                      read what it printed
  cowpod down                            stop everything
  cowpod api-resources -o wide           the kinds, and the verbs each takes

global options go before or after the verb. Environment: COWPOD_CONTROLLER,
COWPOD_DATA_DIR, COWPOD_NAMESPACE. Every verb has --help with examples.
"""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting: one error line, exit 2."""

    def error(self, message: str) -> NoReturn:
        verb = self.prog.removeprefix("cowpod").strip()
        m = re.match(r"argument (\S+): invalid choice: '([^']*)'", message)
        if m is not None:
            choices = re.findall(r"'([^']*)'", message.partition("choose from")[2])
            close = difflib.get_close_matches(m.group(2), choices, n=1)
            message = f'unknown {m.group(1).lower()} "{m.group(2)}"' + (
                f' (did you mean "{close[0]}"?)' if close else f" (one of: {', '.join(choices)})"
            )
        hint = f"`cowpod {verb} --help`" if verb else "`cowpod --help`"
        raise CliError(f"{message} (see {hint})", exit_code=2)


def _global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """The same options on the top parser and every verb, so they work in either place.

    On verbs the defaults are SUPPRESS, so a verb's parser does not overwrite a
    value given before the verb.
    """
    p = _Parser(add_help=False)
    d = argparse.SUPPRESS if suppress else None
    g = p.add_argument_group("global options")
    g.add_argument(
        "--controller",
        metavar="ADDR",
        default=d,
        help="controller address, host:port or unix:///path (env COWPOD_CONTROLLER; "
        "default: from `cowpod up`, else 127.0.0.1:7070)",
    )
    g.add_argument(
        "--data-dir", metavar="DIR", default=d, help="local cluster data (env COWPOD_DATA_DIR; ~/.cowpod)"
    )
    g.add_argument("-n", "--namespace", metavar="NS", default=d, help="namespace (default: default)")
    g.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show tracebacks and debug logs",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cowpod",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(suppress=False)],
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    parents = [_global_options(suppress=True)]
    for module in (cluster, apply, get, describe, delete, modify, logs, wait_cmd, rollout, node, drain, vm,
                   auth, apiresources, version):
        module.add_parser(sub, parents)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse, with everything after the first `--` kept verbatim as the command of `exec`.

    (argparse of Python 3.11 mishandles `--` below subcommands, so it never sees it.)
    """
    argv = list(argv)
    tail: list[str] | None = None
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1 :]
    args = parser.parse_args(argv)
    if tail is not None:
        if getattr(args, "verb", None) != "exec":
            raise CliError(f"unexpected arguments after --: {' '.join(tail)}", exit_code=2)
        args.command = [*args.command, *tail]
    return args


async def _run(ctx: Ctx, args: argparse.Namespace) -> int:
    try:
        code: int = await args.func(ctx, args)
        return code
    finally:
        await ctx.aclose()


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
    clock: Clock | None = None,
) -> int:
    """The console script. Returns the exit code (the console wrapper passes it to sys.exit)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    environ = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out):  # --help goes where the caller said
            args = parse_args(parser, argv)
    except CliError as e:
        err.write(f"error: {e.message}\n")
        return e.exit_code
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    if args.verb is None:
        parser.print_help(out)
        return 0
    if not hasattr(args, "func"):  # a verb with sub-verbs given none
        err.write(f"error: cowpod {args.verb} needs a sub-command (see `cowpod {args.verb} --help`)\n")
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    try:
        config = load_config(
            env=environ,
            controller=args.controller,
            data_dir=args.data_dir,
            namespace=args.namespace,
            debug=args.debug,
        )
    except (StateError, ConfigError) as e:
        _explain(err, str(e), e, debug)
        return 1
    ctx = Ctx(
        config=config, out=cast(TextIO, PrintableWriter(out)), err=err, stdin=stdin or sys.stdin, env=environ,
        clock=clock or RealClock(),
    )
    try:
        return asyncio.run(_run(ctx, args))
    except KeyboardInterrupt:
        err.write("\n")
        return 130
    except CliError as e:
        _explain(err, e.message, e, debug)
        return e.exit_code
    except (ManifestError, StateError, ConfigError) as e:
        _explain(err, str(e), e, debug)
        return 1
    except grpc.RpcError as e:
        _explain(err, rpc_message(e, address=config.controller), e, debug)
        return 1
    except BrokenPipeError:
        # `cowpod get pods | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's final flush does not complain about the closed pipe.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    except Exception as e:
        _explain(err, f"unexpected {type(e).__name__}: {e} (run with --debug for details)", e, debug)
        return 1


def _explain(err: TextIO, message: str, exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(exc, file=err)
    # Error messages quote what the controller said, which quotes names and values users chose.
    text = printable(" ".join(message.split()) if "\n" in message else message)
    if text:
        err.write(f"error: {text}\n")
    err.flush()


if __name__ == "__main__":
    sys.exit(main())

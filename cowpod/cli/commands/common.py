"""Argparse helpers shared by the verbs."""

from __future__ import annotations

import argparse
import re
from typing import Any

from cowpod.cli.errors import CliError

Subparsers = Any  # argparse._SubParsersAction is private; its type is not exported


def add_command(
    sub: Subparsers,
    name: str,
    parents: list[argparse.ArgumentParser],
    *,
    help: str,
    description: str,
    examples: str,
    aliases: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        parents=parents,
        help=help,
        description=description,
        epilog="examples:\n" + examples.strip("\n").rstrip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        aliases=list(aliases),
    )
    return parser


def sub_examples(parser: argparse.ArgumentParser, verb: str, examples: str) -> None:
    """Give each sub-verb of `verb` (`cowpod vm clone`) the lines of the verb's examples that
    use it, so `cowpod vm clone --help` teaches by example too, from one list."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for name, sub in action.choices.items():
            mine = [line for line in examples.strip("\n").splitlines()
                    if re.search(rf"cowpod {re.escape(verb)} {re.escape(name)}(\s|$)", line)]
            if mine:
                sub.epilog = "examples:\n" + "\n".join(mine)
                sub.formatter_class = argparse.RawDescriptionHelpFormatter


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """`90`, `90s`, `2m`, `1h30m` -> seconds (kubectl's --timeout style)."""
    m = _DURATION.match(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (e.g. 30s, 2m, 1h, or seconds)")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mins * 60 + secs


def split_type_name(kind: str, names: list[str]) -> tuple[str, list[str]]:
    """`pod/web` or `pod web` -> ("pod", ["web"])."""
    if "/" in kind:
        t, _, n = kind.partition("/")
        if not t or not n:
            raise CliError(f'expected TYPE/NAME, got "{kind}"', exit_code=2)
        return t, [n, *names]
    return kind, names


def parse_labels(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        for item in pair.split(","):
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise CliError(f'expected KEY=VALUE, got "{item}"', exit_code=2)
            out[k] = v
    return out

"""The part of kubectl's JSONPath that `get -o jsonpath=` and `wait --for=jsonpath=` need.

Supported: `{.a.b}`, `{.items[0].x}`, `{.items[*].metadata.name}`,
`{.status.conditions[?(@.type=="Ready")].status}`, and literal text around
the braces. Evaluated against the Kubernetes-shaped mapping of an object
(`cowpod.manifest.encode_object`), so field names are the manifest's.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_\-/]+)
      |\[(?P<index>-?\d+|\*)\]
      |\[\?\(@\.(?P<fpath>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<fval>"[^"]*"|'[^']*'|[^)\s]+)\)\]
      |\.\*""",
    re.VERBOSE,
)


class JsonPathError(ValueError):
    pass


def _steps(expr: str) -> list[re.Match[str]]:
    expr = expr.strip()
    if expr in ("", "."):
        return []
    if not expr.startswith((".", "[")):
        expr = "." + expr
    steps = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise JsonPathError(f"cannot parse JSONPath at {expr[pos:]!r}")
        steps.append(m)
        pos = m.end()
    return steps


def _lookup(value: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _literal(text: str) -> Any:
    if text[:1] in ("'", '"'):
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def evaluate(data: Any, expr: str) -> list[Any]:
    """All values `expr` (without braces) selects in `data`."""
    current = [data]
    for m in _steps(expr):
        nxt: list[Any] = []
        for v in current:
            if m["field"] is not None:
                if isinstance(v, dict) and m["field"] in v:
                    nxt.append(v[m["field"]])
            elif m["index"] is not None:
                if not isinstance(v, list):
                    continue
                if m["index"] == "*":
                    nxt.extend(v)
                else:
                    i = int(m["index"])
                    if -len(v) <= i < len(v):
                        nxt.append(v[i])
            elif m["fpath"] is not None:
                want = _literal(m["fval"])
                items = v if isinstance(v, list) else [v]
                for item in items:
                    got = _lookup(item, m["fpath"])
                    match = got == want or (isinstance(got, bool) and str(got).lower() == str(want))
                    if match == (m["op"] == "=="):
                        nxt.append(item)
            else:  # .*
                if isinstance(v, dict):
                    nxt.extend(v.values())
                elif isinstance(v, list):
                    nxt.extend(v)
        current = nxt
    return current


def format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def render(data: Any, template: str) -> str:
    """A kubectl JSONPath template: text with `{expr}` parts replaced by their values."""
    out: list[str] = []
    pos = 0
    for m in re.finditer(r"\{([^{}]*)\}", template):
        out.append(template[pos : m.start()])
        inner = m.group(1)
        if inner.startswith('"') and inner.endswith('"'):
            out.append(json.loads(inner))
        else:
            out.append(" ".join(format_value(v) for v in evaluate(data, inner)))
        pos = m.end()
    out.append(template[pos:])
    if pos == 0 and "{" not in template:
        # A bare path without braces, as kubectl also accepts.
        return " ".join(format_value(v) for v in evaluate(data, template))
    return "".join(out)

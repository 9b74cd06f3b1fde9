"""Structured label selectors (`matchLabels` + `matchExpressions`), as workloads carry them.

The string form (`app=web,tier in (a,b)`) used by list options lives in
`controller.selectors`; this is the protobuf `LabelSelector` a ReplicaSet names
its pods with. Pure functions, so the ReplicaSet planner stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from cowpod.v1 import pod_pb2


def is_empty(sel: pod_pb2.LabelSelector) -> bool:
    return not sel.match_labels and not sel.match_expressions


def matches(sel: pod_pb2.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics: every matchLabels pair and every expression must hold.
    An empty selector matches everything (callers that must not allow that check first)."""
    for k, v in sel.match_labels.items():
        if labels.get(k) != v:
            return False
    for r in sel.match_expressions:
        present = r.key in labels
        if r.operator == "In" and not (present and labels[r.key] in r.values):
            return False
        if r.operator == "NotIn" and present and labels[r.key] in r.values:
            return False
        if r.operator == "Exists" and not present:
            return False
        if r.operator == "DoesNotExist" and present:
            return False
    return True


def to_string(sel: pod_pb2.LabelSelector) -> str:
    """The list-option string form (`app=web,env in (a,b)`), for `List` calls and printing."""
    parts = [f"{k}={v}" for k, v in sorted(sel.match_labels.items())]
    for r in sel.match_expressions:
        values = ",".join(sorted(r.values))
        if r.operator == "In":
            parts.append(f"{r.key} in ({values})")
        elif r.operator == "NotIn":
            parts.append(f"{r.key} notin ({values})")
        elif r.operator == "Exists":
            parts.append(r.key)
        elif r.operator == "DoesNotExist":
            parts.append(f"!{r.key}")
    return ",".join(parts)

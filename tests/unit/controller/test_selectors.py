"""Label and field selectors in Kubernetes syntax."""

from __future__ import annotations

import pytest

from controller.kinds import PODS
from controller.selectors import parse_field_selector, parse_label_selector
from cowpod.errors import Invalid
from cowpod.v1 import pod_pb2

LABEL_CASES = [
    # selector, labels, matches
    ("", {}, True),
    ("app=web", {"app": "web"}, True),
    ("app==web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {}, True),
    ("app!=web", {"app": "web"}, False),
    ("env in (a,b)", {"env": "b"}, True),
    ("env in (a, b)", {"env": "c"}, False),
    ("env in (a,b)", {}, False),
    ("env notin (a,b)", {"env": "c"}, True),
    ("env notin (a,b)", {}, True),
    ("env notin (a,b)", {"env": "a"}, False),
    ("legacy", {"legacy": ""}, True),
    ("legacy", {}, False),
    ("!legacy", {}, True),
    ("!legacy", {"legacy": "1"}, False),
    ("app=web,tier!=db,env in (a,b),!legacy", {"app": "web", "tier": "fe", "env": "a"}, True),
    ("app=web,tier!=db,env in (a,b),!legacy", {"app": "web", "env": "a", "legacy": "y"}, False),
    ("example.com/app=web", {"example.com/app": "web"}, True),
]


@pytest.mark.parametrize(("sel", "labels", "want"), LABEL_CASES)
def test_label_selector(sel: str, labels: dict[str, str], want: bool) -> None:
    assert parse_label_selector(sel).matches(labels) is want


@pytest.mark.parametrize("bad", ["app in (a", "app=web)", "=web", "app in ()", "a b", "app=we b", "-x=1"])
def test_bad_label_selector(bad: str) -> None:
    with pytest.raises(Invalid) as e:
        parse_label_selector(bad)
    assert e.value.field == "labelSelector"


def _pod(node: str = "", phase: str = "Pending", name: str = "p") -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = name
    p.spec.node_name = node
    p.status.phase = phase
    return p


FIELD_CASES = [
    ("spec.nodeName=n1", _pod("n1"), True),
    ("spec.nodeName=n1", _pod("n2"), False),
    ("spec.nodeName=", _pod(""), True),
    ("spec.nodeName=", _pod("n1"), False),
    ("spec.nodeName!=", _pod("n1"), True),
    ("status.phase=Running", _pod(phase="Running"), True),
    ("status.phase!=Running,spec.nodeName=n1", _pod("n1", "Pending"), True),
    ("metadata.name=p", _pod(), True),
    ("metadata.name==q", _pod(), False),
]


@pytest.mark.parametrize(("sel", "obj", "want"), FIELD_CASES)
def test_field_selector(sel: str, obj: pod_pb2.Pod, want: bool) -> None:
    assert parse_field_selector(sel, PODS.all_fields()).matches(obj) is want


def test_field_selector_rejects_unknown_fields() -> None:
    with pytest.raises(Invalid, match=r"field 'spec\.color' is not supported"):
        parse_field_selector("spec.color=red", PODS.all_fields())
    with pytest.raises(Invalid, match="expected field=value"):
        parse_field_selector("spec.nodeName", PODS.all_fields())


def test_required_value_for_indexing() -> None:
    sel = parse_field_selector("status.phase!=Failed,spec.nodeName=n1", PODS.all_fields())
    assert sel.required("spec.nodeName") == "n1"
    assert sel.required("status.phase") is None

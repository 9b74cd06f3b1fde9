"""A pod that preempted (status.nominatedNodeName set) waits for its victims' room: the
autoscaler does not clone a VM for it, but still does for the pods beside it."""

from __future__ import annotations

from controller.autoscaler.actions import ScaleUp
from cowpod.api.ids import ClassName, VMName
from tests.unit.autoscaler.test_plan import Case, pending, refs, run


def test_a_nominated_pod_triggers_no_scale_up() -> None:
    waiting = pending("urgent")
    waiting.status.nominated_node_name = "n1"
    assert [a for a in run(Case("nominated", want=[], pods=[waiting])) if isinstance(a, ScaleUp)] == []
    got = run(Case("nominated and not", want=[], pods=[waiting, pending("web-1")]))
    assert [a for a in got if isinstance(a, ScaleUp)] == [
        ScaleUp(ClassName("small"), 1, VMName("small-parent"), refs("web-1"))
    ]

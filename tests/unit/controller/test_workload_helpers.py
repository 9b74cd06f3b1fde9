"""Pure helpers of the workload kinds: int-or-percent, the rollout limits, template hashes."""

from __future__ import annotations

import pytest

from controller import validation
from controller.podowner import template_hash
from controller.workload_api import check_int_or_percent, check_rolling_update, resolve_int_or_percent
from cowpod.v1 import workload_pb2


@pytest.mark.parametrize(("value", "total", "up", "want"), [
    ("25%", 4, True, 1), ("25%", 5, True, 2), ("25%", 5, False, 1), ("0%", 10, True, 0),
    ("100%", 3, False, 3), ("2", 10, True, 2), ("10%", 1, False, 0), ("10%", 1, True, 1),
])
def test_resolve_int_or_percent(value: str, total: int, up: bool, want: int) -> None:
    assert resolve_int_or_percent(value, total, round_up=up) == want


@pytest.mark.parametrize(("value", "error"), [
    ("", None), ("0", None), ("3", None), ("25%", None), ("100%", None),
    ("101%", "must not be greater than 100%"), ("-1", "whole number or a percent"),
    ("1.5", "whole number or a percent"), ("25 %", "whole number or a percent"), ("abc", "whole number"),
])
def test_check_int_or_percent(value: str, error: str | None) -> None:
    errs = validation.Errors()
    check_int_or_percent(errs, "spec.x", value)
    if error is None:
        assert errs.items == []
    else:
        [(path, reason)] = errs.items
        assert path == "spec.x" and error in reason


def test_surge_and_unavailable_may_not_both_be_zero() -> None:
    errs = validation.Errors()
    check_rolling_update(errs, "spec.strategy.rollingUpdate", "0%", "0")
    assert [p for p, _ in errs.items] == ["spec.strategy.rollingUpdate.maxUnavailable"]


def test_template_hash_is_stable_and_ignores_its_own_label() -> None:
    t = workload_pb2.PodTemplateSpec()
    t.metadata.labels["app"] = "web"
    t.spec.containers.add(name="c", image="web:1")
    h = template_hash(t)
    assert h == template_hash(t) and len(h) == 10 and h.isalnum()
    labelled = workload_pb2.PodTemplateSpec()
    labelled.CopyFrom(t)
    labelled.metadata.labels["pod-template-hash"] = h
    assert template_hash(labelled, drop_label="pod-template-hash") == h
    t.spec.containers[0].image = "web:2"
    assert template_hash(t) != h

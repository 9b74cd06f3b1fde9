"""The cluster config file: VM classes and bounds, with errors that name the field."""

from __future__ import annotations

import pathlib

import pytest

from cowpod.clusterconfig import ClusterConfig, VMClass, load, loads, parse_duration
from cowpod.errors import Invalid

GOOD = """
vmClasses:
  - name: small
    cpu: 1
    memory: 1Gi
    labels: {tier: small}
    min: 0
    max: 10
    parent: true
  - name: large
    cpu: "4"
    memory: 4096Mi
    max: 3
    parent: false
    cost: 5
maxVMs: 20
maxTotalCPU: 16
maxTotalMemory: 32Gi
scaleDownUnneeded: 10m
cooldown: 30s
instantClones: true
"""


def test_a_full_file_parses() -> None:
    cfg = loads(GOOD)
    assert cfg.vm_classes == (
        VMClass("small", 1000, 1024**3, {"tier": "small"}, 0, 10, True),
        VMClass("large", 4000, 4 * 1024**3, {}, 0, 3, False, cost=5.0),
    )
    assert (cfg.max_vms, cfg.max_total_cpu_millis, cfg.max_total_memory_bytes) == (20, 16000, 32 * 1024**3)
    assert (cfg.scale_down_unneeded_s, cfg.cooldown_s, cfg.instant_clones) == (600.0, 30.0, True)
    assert cfg.vm_class("large") is cfg.vm_classes[1]
    assert cfg.vm_class("medium") is None


def test_defaults_match_cluster_autoscaler_and_the_agent() -> None:
    cfg = loads("")
    assert cfg == ClusterConfig()
    assert cfg.scale_down_unneeded_s == 600
    assert (cfg.reserve_cpu_millis, cfg.reserve_memory_bytes) == (100, 64 * 1024**2)


def test_price_defaults_to_size() -> None:
    assert VMClass("s", 2000, 2 * 1024**3).price == 4.0
    assert VMClass("s", 2000, 2 * 1024**3, cost=1.5).price == 1.5


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("vmClasses: [{name: s, cpu: 1}]", "vmClasses[0].memory", "required"),
        ("vmClasses: [{name: s, cpu: 1, memory: 1Gi, colour: red}]", "vmClasses[0].colour", "unknown field"),
        ("vmClasses: [{name: s, cpu: lots, memory: 1Gi}]", "vmClasses[0].cpu", "invalid CPU quantity"),
        ("vmClasses: [{name: s, cpu: 1, memory: 1Qi}]", "vmClasses[0].memory", "unknown memory suffix"),
        ("vmClasses: [{name: S_1, cpu: 1, memory: 1Gi}]", "vmClasses[0].name", "lowercase"),
        ("vmClasses: [{name: s, cpu: 1, memory: 1Gi, min: 3, max: 2}]", "vmClasses[0].max", "less than min"),
        ("vmClasses: [{name: s, cpu: 1, memory: 1Gi, min: -1}]", "vmClasses[0].min", "at least 0"),
        (
            "vmClasses: [{name: s, cpu: 1, memory: 1Gi, parent: yes please}]",
            "vmClasses[0].parent",
            "true or false",
        ),
        (
            "vmClasses: [{name: s, cpu: 1, memory: 1Gi}, {name: s, cpu: 2, memory: 2Gi}]",
            "vmClasses[1].name",
            "duplicate",
        ),
        ("vmClasses: [{name: s, cpu: 50m, memory: 1Gi}]", "vmClasses[0]", "reserve"),
        ("vmClasses: {name: s}", "vmClasses", "expected a list"),
        ("maxVMs: many", "maxVMs", "expected an integer"),
        ("scaleDownUnneeded: soon", "scaleDownUnneeded", "invalid duration"),
        ("cooldown: -5", "cooldown", "negative"),
        ("parentIdlePause: soon", "parentIdlePause", "duration"),
        ("instantclones: true", "instantclones", "unknown field"),
        ("[1, 2]", "", "expected a mapping"),
        ("a: [", "", "not valid YAML"),
    ],
)
def test_bad_input_names_the_field(text: str, field: str, reason: str) -> None:
    with pytest.raises(Invalid) as err:
        loads(text)
    assert err.value.field == field
    assert reason in err.value.reason


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600), ("1h30m", 5400), ("500ms", 0.5), ("45", 45), ("2.5s", 2.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


def test_load_reads_a_file_and_names_a_missing_one(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "cluster.yaml"
    p.write_text(GOOD)
    assert load(p).max_vms == 20
    with pytest.raises(Invalid, match="cannot read cluster config"):
        load(tmp_path / "missing.yaml")

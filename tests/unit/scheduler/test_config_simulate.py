"""Config parsing (errors name the field) and the autoscaler's fits_on."""

from __future__ import annotations

import pytest
import yaml

from cowpod.errors import Invalid
from scheduler.config import SchedulerConfig, build_profile, parse
from scheduler.framework.status import Code
from scheduler.plugins import PluginContext
from scheduler.simulate import fits_on
from tests.unit.scheduler.builders import make_node, make_pod


def test_defaults() -> None:
    cfg = parse(None)
    assert cfg == SchedulerConfig()
    p = build_profile(cfg, PluginContext())
    assert [f.name for f in p.filters][-3:] == ["NodeResourcesFit", "PodTopologySpread", "InterPodAffinity"]
    assert p.binder is None


def test_plugins_and_weights_from_yaml() -> None:
    cfg = parse(
        yaml.safe_load(
            """
            percentageOfNodesToScore: 20
            podMaxBackoffSeconds: 5
            popFromBackoffWhenIdle: false
            plugins:
              filter: [NodeResourcesFit]
              score:
                - {name: NodeResourcesMostAllocated, weight: 3}
                - PodTopologySpreadScore
            leaderElection: {leaseDurationSeconds: 4}
            """
        )
    )
    assert cfg.filters == ("NodeResourcesFit",)
    assert cfg.scores == (("NodeResourcesMostAllocated", 3.0), ("PodTopologySpreadScore", 1.0))
    assert cfg.percentage_of_nodes_to_score == 20 and cfg.max_backoff_s == 5.0
    assert cfg.leader_election.lease_duration_s == 4.0
    assert cfg.pop_from_backoff is False and SchedulerConfig().pop_from_backoff is True


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"plugins": {"filter": ["NoSuch"]}}, "plugins.filter[0]"),
        ({"plugins": {"score": [{"name": "NodeResourcesFit", "weight": "x"}]}}, "plugins.score[0].weight"),
        ({"plugins": {"preBind": []}}, "plugins.preBind"),
        ({"percentageOfNodesToScore": 101}, "percentageOfNodesToScore"),
        ({"bogus": 1}, "bogus"),
        ({"popFromBackoffWhenIdle": "yes"}, "popFromBackoffWhenIdle"),
        ({"leaderElection": {"x": 1}}, "leaderElection.x"),
    ],
)
def test_bad_config_names_the_field(doc: object, field: str) -> None:
    with pytest.raises(Invalid) as e:
        parse(doc)
    assert e.value.field == field


def test_filter_plugin_in_score_list_is_refused() -> None:
    cfg = parse({"plugins": {"score": ["NodeResourcesFit"]}})
    with pytest.raises(Invalid) as e:
        build_profile(cfg, PluginContext())
    assert e.value.field == "plugins.score[0]"


def test_fits_on_a_fresh_vm() -> None:
    small = make_node("template").alloc(cpu="2", memory="4Gi").label("class", "small").build()
    assert fits_on(make_pod().req(cpu="1", memory="1Gi").build(), small).ok
    st = fits_on(make_pod().req(cpu="4", memory="8Gi").build(), small)
    assert st.code == Code.UNSCHEDULABLE
    assert st.reasons == ("Insufficient cpu", "Insufficient memory")
    assert st.plugin == "NodeResourcesFit"
    st = fits_on(make_pod().selector("class", "large").build(), small)
    assert st.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE and st.plugin == "NodeAffinity"
    gpu = make_node("gpu").taint("dedicated", "gpu").build()
    assert fits_on(make_pod().toleration("dedicated", "Exists").build(), gpu).ok
    assert not fits_on(make_pod().build(), gpu).ok


def test_fits_on_accepts_protos() -> None:
    from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

    node = node_pb2.Node(
        metadata=meta_pb2.ObjectMeta(name="t"),
        status=node_pb2.NodeStatus(
            allocatable=meta_pb2.ResourceList(cpu_millis=1000, memory_bytes=1 << 30),
            conditions=[meta_pb2.Condition(type="Ready", status="True")],
        ),
    )
    pod = pod_pb2.Pod(
        metadata=meta_pb2.ObjectMeta(name="p", uid="u"),
        spec=pod_pb2.PodSpec(
            containers=[
                pod_pb2.Container(
                    name="c",
                    resources=pod_pb2.ResourceRequirements(requests=meta_pb2.ResourceList(cpu_millis=1500)),
                )
            ]
        ),
    )
    st = fits_on(pod, node)
    assert st.reasons == ("Insufficient cpu",)

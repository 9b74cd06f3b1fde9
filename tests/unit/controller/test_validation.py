# mypy: disable-error-code="func-returns-value"
"""Validation: table-driven; each case names the field path and reason a user sees."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controller import validation
from cowpod.errors import Invalid
from cowpod.v1 import event_pb2, lease_pb2, node_pb2, pod_pb2, vm_pb2


def pod(mutate: Callable[[pod_pb2.Pod], object] | None = None) -> pod_pb2.Pod:
    p = pod_pb2.Pod()
    p.metadata.name = "web"
    p.metadata.namespace = "default"
    c = p.spec.containers.add(name="main", image="cowpod/busybox:latest")
    c.ports.add(container_port=80)
    if mutate:
        mutate(p)
    return p


def _c(p: pod_pb2.Pod) -> pod_pb2.Container:
    return p.spec.containers[0]


BAD_PODS: list[tuple[str, Callable[[pod_pb2.Pod], object], str]] = [
    ("name required", lambda p: setattr(p.metadata, "name", ""), "metadata.name: required"),
    ("name uppercase", lambda p: setattr(p.metadata, "name", "Web"), "metadata.name: invalid value 'Web'"),
    ("name too long", lambda p: setattr(p.metadata, "name", "a" * 254),
     "metadata.name: must be no more than 253"),
    ("namespace bad", lambda p: setattr(p.metadata, "namespace", "a.b"), "metadata.namespace: invalid value"),
    ("label key bad", lambda p: p.metadata.labels.update({"-x": "1"}), "metadata.labels[-x]: key '-x'"),
    ("label key prefix bad", lambda p: p.metadata.labels.update({"Ex.com/x": "1"}), "prefix part"),
    ("label value long", lambda p: p.metadata.labels.update({"x": "v" * 64}), "must be no more than 63"),
    ("label value bad", lambda p: p.metadata.labels.update({"x": "a b"}), "metadata.labels[x]: value 'a b'"),
    ("no containers", lambda p: p.spec.ClearField("containers"), "spec.containers: required"),
    ("image required", lambda p: setattr(_c(p), "image", ""), "spec.containers[0].image: required"),
    ("container name required", lambda p: setattr(_c(p), "name", ""), "spec.containers[0].name: required"),
    ("duplicate container", lambda p: p.spec.containers.add(name="main", image="x"),
     "spec.containers[1].name: duplicate container name 'main'"),
    ("port zero", lambda p: setattr(_c(p).ports[0], "container_port", 0),
     "spec.containers[0].ports[0].containerPort: must be between 1 and 65535"),
    ("port too big", lambda p: setattr(_c(p).ports[0], "container_port", 70000), "between 1 and 65535"),
    ("host port too big", lambda p: setattr(_c(p).ports[0], "host_port", 65536),
     "spec.containers[0].ports[0].hostPort"),
    ("protocol", lambda p: setattr(_c(p).ports[0], "protocol", "HTTP"),
     "spec.containers[0].ports[0].protocol: unsupported value 'HTTP'"),
    ("restart policy", lambda p: setattr(p.spec, "restart_policy", "Sometimes"),
     "spec.restartPolicy: unsupported value 'Sometimes'"),
    ("negative cpu", lambda p: setattr(_c(p).resources.requests, "cpu_millis", -1),
     "spec.containers[0].resources.requests.cpu: must be greater than or equal to 0"),
    ("limit below request", lambda p: (setattr(_c(p).resources.requests, "memory_bytes", 200),
                                       setattr(_c(p).resources.limits, "memory_bytes", 100)),
     "spec.containers[0].resources.requests.memory: must be less than or equal to memory limit"),
    ("mount of unknown volume", lambda p: _c(p).volume_mounts.add(name="data", mount_path="/d"),
     "spec.containers[0].volumeMounts[0].name: volume 'data' not found"),
    ("relative mount path", lambda p: (p.spec.volumes.add(name="data"),
                                       _c(p).volume_mounts.add(name="data", mount_path="d")),
     "spec.containers[0].volumeMounts[0].mountPath: must be an absolute path"),
    ("probe without handler", lambda p: _c(p).liveness_probe.SetInParent(),
     "spec.containers[0].livenessProbe: must specify a handler type"),
    ("probe negative threshold", lambda p: (_c(p).readiness_probe.exec.command.append("true"),
                                            setattr(_c(p).readiness_probe, "failure_threshold", -1)),
     "spec.containers[0].readinessProbe.failureThreshold: must be greater than or equal to 1"),
    ("liveness success threshold", lambda p: (_c(p).liveness_probe.tcp_socket.SetInParent(),
                                              setattr(_c(p).liveness_probe.tcp_socket, "port", 80),
                                              setattr(_c(p).liveness_probe, "success_threshold", 2)),
     "spec.containers[0].livenessProbe.successThreshold: must be 1"),
    ("toleration operator", lambda p: p.spec.tolerations.add(key="k", operator="Maybe"),
     "spec.tolerations[0].operator: unsupported value 'Maybe'"),
    ("toleration exists with value", lambda p: p.spec.tolerations.add(key="k", operator="Exists", value="v"),
     "spec.tolerations[0].value: must be empty"),
    ("toleration effect", lambda p: p.spec.tolerations.add(key="k", value="v", effect="NoWay"),
     "spec.tolerations[0].effect: unsupported value 'NoWay'"),
    ("toleration empty key", lambda p: p.spec.tolerations.add(operator="Equal", value="v"),
     "spec.tolerations[0].operator: must be 'Exists' when `key` is empty"),
    ("tolerationSeconds without NoExecute", lambda p: p.spec.tolerations.add(key="k", operator="Exists",
                                                                             toleration_seconds=5),
     "spec.tolerations[0].tolerationSeconds"),
    ("node affinity operator", lambda p: p.spec.affinity.node_affinity
     .required_during_scheduling_ignored_during_execution.node_selector_terms.add()
     .match_expressions.add(key="zone", operator="Near", values=["a"]),
     "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0]"
     ".matchExpressions[0].operator: unsupported value 'Near'"),
    ("node affinity In without values", lambda p: p.spec.affinity.node_affinity
     .required_during_scheduling_ignored_during_execution.node_selector_terms.add()
     .match_expressions.add(key="zone", operator="In"),
     ".matchExpressions[0].values: must be specified"),
    ("node affinity Gt not integer", lambda p: p.spec.affinity.node_affinity
     .required_during_scheduling_ignored_during_execution.node_selector_terms.add()
     .match_expressions.add(key="cpus", operator="Gt", values=["many"]),
     ".matchExpressions[0].values[0]: must be an integer"),
    ("preferred weight", lambda p: p.spec.affinity.node_affinity
     .preferred_during_scheduling_ignored_during_execution.add(weight=0),
     "preferredDuringSchedulingIgnoredDuringExecution[0].weight: must be in the range 1-100"),
    ("node selector value", lambda p: p.spec.node_selector.update({"zone": "a b"}),
     "spec.nodeSelector[zone]"),
    ("negative grace", lambda p: setattr(p.spec, "termination_grace_period_seconds", -1),
     "spec.terminationGracePeriodSeconds"),
    ("env name", lambda p: _c(p).env.add(name="1=x"), "spec.containers[0].env[0].name: invalid"),
    ("duplicate host port", lambda p: (setattr(_c(p).ports[0], "host_port", 8080),
                                       p.spec.containers.add(name="b", image="x").ports.add(
                                           container_port=81, host_port=8080)),
     "spec.containers[1].ports[0].hostPort: duplicate host port 8080/TCP"),
    ("spread max skew", lambda p: p.spec.topology_spread_constraints.add(
        max_skew=0, topology_key="zone", when_unsatisfiable="DoNotSchedule"),
     "spec.topologySpreadConstraints[0].maxSkew: must be greater than 0"),
    ("pull policy", lambda p: setattr(_c(p), "image_pull_policy", "Sometimes"),
     "spec.containers[0].imagePullPolicy"),
    ("volume both sources", lambda p: (p.spec.volumes.add(name="v").empty_dir.SetInParent(),
                                       p.spec.volumes[0].host_path.SetInParent(),
                                       setattr(p.spec.volumes[0].host_path, "path", "/x")),
     "spec.volumes[0]: may not specify more than 1 volume type"),
]


@pytest.mark.parametrize(("case", "mutate", "message"), BAD_PODS, ids=[c[0] for c in BAD_PODS])
def test_bad_pods_name_the_field(case: str, mutate: Callable[[pod_pb2.Pod], object], message: str) -> None:
    with pytest.raises(Invalid) as e:
        validation.validate_pod(pod(mutate))
    assert message in str(e.value), str(e.value)


GOOD_PODS: list[tuple[str, Callable[[pod_pb2.Pod], object]]] = [
    ("minimal", lambda p: None),
    ("labels with prefix", lambda p: p.metadata.labels.update({"example.com/app": "web", "tier": ""})),
    ("volume and mount", lambda p: (p.spec.volumes.add(name="data"),
                                    _c(p).volume_mounts.add(name="data", mount_path="/data"))),
    ("probe with defaults", lambda p: setattr(_c(p).readiness_probe.http_get, "port", 80)),
    ("tolerate everything", lambda p: p.spec.tolerations.add(operator="Exists")),
    ("NoExecute toleration seconds", lambda p: p.spec.tolerations.add(
        key="node.kubernetes.io/unreachable", operator="Exists", effect="NoExecute", toleration_seconds=30)),
    ("requests equal limits", lambda p: (setattr(_c(p).resources.requests, "cpu_millis", 100),
                                         setattr(_c(p).resources.limits, "cpu_millis", 100))),
    ("request without limit", lambda p: setattr(_c(p).resources.requests, "memory_bytes", 1 << 20)),
]


@pytest.mark.parametrize(("case", "mutate"), GOOD_PODS, ids=[c[0] for c in GOOD_PODS])
def test_good_pods_pass(case: str, mutate: Callable[[pod_pb2.Pod], object]) -> None:
    validation.validate_pod(pod(mutate))


def test_all_problems_reported_at_once() -> None:
    def two(p: pod_pb2.Pod) -> None:
        p.spec.containers[0].image = ""
        p.spec.restart_policy = "Sometimes"

    with pytest.raises(Invalid) as e:
        validation.validate_pod(pod(two))
    assert e.value.field == "spec.containers[0].image"
    assert "spec.restartPolicy" in str(e.value)


def test_node_taints() -> None:
    n = node_pb2.Node()
    n.metadata.name = "n1"
    n.spec.taints.add(key="gpu", value="yes", effect="")
    with pytest.raises(Invalid, match=r"spec.taints\[0\].effect: required"):
        validation.validate_node(n)
    n.spec.taints[0].effect = "NoSchedule"
    validation.validate_node(n)
    n.spec.taints.add(key="gpu", effect="NoSchedule")
    with pytest.raises(Invalid, match=r"duplicate taint"):
        validation.validate_node(n)


def test_vm_name_is_a_dns_label() -> None:
    vm = vm_pb2.VM()
    vm.metadata.name = "a.b"
    with pytest.raises(Invalid, match=r"metadata\.name: invalid value 'a\.b'"):
        validation.validate_vm(vm)
    vm.metadata.name = "vm-1"
    vm.spec.provider = "xen"
    with pytest.raises(Invalid, match=r"spec\.provider: unsupported value 'xen'"):
        validation.validate_vm(vm)


def test_event_and_lease() -> None:
    ev = event_pb2.Event(reason="Started")
    with pytest.raises(Invalid, match=r"involvedObject\.kind: required"):
        validation.validate_event(ev)
    lease = lease_pb2.Lease()
    lease.metadata.name = "x"
    lease.metadata.namespace = "default"
    lease.spec.lease_duration_seconds = -1
    with pytest.raises(Invalid, match=r"spec\.leaseDurationSeconds"):
        validation.validate_lease(lease)

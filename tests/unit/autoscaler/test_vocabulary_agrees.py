"""The autoscaler, the providers and the hollow agent speak the same node labels and taints.

Drift these tests would catch coming back (#16): the VM-class label was
`cowpod.io/class` on the nodes the providers register but `cowpod.io/vm-class`
in the autoscaler's predictions, so a pod selecting a class by the label its
nodes really carry never triggered a scale-up; and a warm parent was tainted
`cowpod.io/template` by the hollow agent but `cowpod.io/parent` by the
autoscaler, so hollow fleets took another path than production.
"""

from __future__ import annotations

from typing import Any, cast

from agent.hollow import HollowNodeSpec, node_message
from controller.autoscaler.executor import Executor
from controller.autoscaler.fit import class_template
from controller.autoscaler.observe import node_view
from cowpod.api.labels import CLASS_LABEL, HOSTNAME_LABEL, PARENT_TAINT_KEY, VM_LABEL
from cowpod.clock import FakeClock
from cowpod.clusterconfig import ClusterConfig, VMClass
from hypervisor.bootstrap import guest_bootstrap
from hypervisor.manager import desired_of
from hypervisor.providers.fake import FakeProvider

SMALL = VMClass("small", 1000, 1024**3, labels={"tier": "small"})
CONFIG = ClusterConfig(vm_classes=(SMALL,))


def _registered_labels(template: bool) -> dict[str, str]:
    """The labels the node of a VM the autoscaler asks for registers with, on any provider."""
    # `_vm` builds the VM object only; it never calls the API.
    ex = Executor(cast(Any, None), CONFIG, FakeClock())
    vm = ex._vm("small-1", SMALL, template=template)
    return dict(guest_bootstrap(FakeProvider(), desired_of(vm).spec).labels)


def test_the_nodes_the_autoscaler_predicts_carry_the_labels_real_nodes_register_with() -> None:
    registered = _registered_labels(template=False)
    predicted = dict(class_template(SMALL, CONFIG).metadata.labels)
    predicted.pop(HOSTNAME_LABEL)  # the node's own name: the agent sets it, not the class
    assert registered[CLASS_LABEL] == "small"
    assert predicted.items() <= registered.items()
    # Nothing class-specific on a real node that the prediction misses: only the VM's own name.
    assert set(registered) - set(predicted) == {VM_LABEL}


def test_a_hollow_warm_parent_is_tainted_as_the_autoscaler_taints_parents() -> None:
    node = node_message(HollowNodeSpec("small-parent", template=True), 0, now=0.0)
    assert node_view(node).parent_tainted
    taints = [(t.key, t.value, t.effect) for t in node.spec.taints]
    assert taints == [(PARENT_TAINT_KEY, "true", "NoSchedule")]


def test_a_hollow_worker_carries_no_parent_taint() -> None:
    node = node_message(HollowNodeSpec("small-1"), 1, now=0.0)
    assert not node_view(node).parent_tainted
    assert list(node.spec.taints) == []

"""When is an applied object "there"? Shared by `apply --wait`, `up --vms`, `vm clone --wait`.

A pod is there when it runs and is Ready, or has finished; a VM when it is
Running and its node is Ready (the agent inside registered and heartbeats); a
node when Ready. Each check returns (done, failed reason or "", status text).
"""

from __future__ import annotations

from dataclasses import dataclass

from cowpod.cli import printers
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2


@dataclass(frozen=True)
class Readiness:
    done: bool
    status: str
    failure: str = ""


def node_ready(node: node_pb2.Node | None) -> bool:
    if node is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def pod_readiness(pod: pod_pb2.Pod) -> Readiness:
    phase = pod.status.phase
    status = printers.pod_status(pod)
    if phase == "Succeeded":
        return Readiness(True, status)
    if phase == "Failed":
        reason = pod.status.message or pod.status.reason or status
        return Readiness(True, status, f"pod {pod.metadata.name} failed: {reason}")
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    if phase == "Running" and ready:
        return Readiness(True, status)
    return Readiness(False, status)


def vm_readiness(vm: vm_pb2.VM, node: node_pb2.Node | None) -> Readiness:
    phase = vm.status.phase or "Pending"
    if phase == "Failed":
        return Readiness(True, phase, f"VM {vm.metadata.name} failed: {vm.status.message or 'no message'}")
    if phase != "Running":
        return Readiness(False, phase)
    if not vm.status.node_name:
        return Readiness(False, "Running, agent not registered yet")
    if not node_ready(node):
        return Readiness(False, f"Running, node {vm.status.node_name} not Ready yet")
    return Readiness(True, f"Running, node {vm.status.node_name} Ready")

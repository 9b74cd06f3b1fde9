"""When is an applied object "there"? Shared by `apply --wait`, `up --vms`, `vm clone --wait`,
`rollout status`.

A pod is there when it runs and is Ready, or has finished; a VM when it is
Running and its node is Ready (the agent inside registered and heartbeats); a
node when Ready; a Deployment or DaemonSet when rolled out; a Job when Complete.
Each check returns (done, failed reason or "", status text).
"""

from __future__ import annotations

from dataclasses import dataclass

from cowpod.cli import printers
from cowpod.v1 import node_pb2, pod_pb2, vm_pb2, workload_pb2


@dataclass(frozen=True)
class Readiness:
    done: bool
    status: str
    failure: str = ""


def node_ready(node: node_pb2.Node | None) -> bool:
    if node is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def node_readiness(node: node_pb2.Node) -> Readiness:
    ok = node_ready(node)
    return Readiness(ok, "Ready" if ok else "NotReady")


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


def deployment_readiness(d: workload_pb2.Deployment) -> Readiness:
    """Rolled out, as `kubectl rollout status` judges it (its messages too); failed once its
    Progressing condition says ProgressDeadlineExceeded."""
    name, spec, st = d.metadata.name, d.spec, d.status
    if st.observed_generation < d.metadata.generation:
        return Readiness(False, "Waiting for deployment spec update to be observed...")
    for c in st.conditions:
        if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded":
            return Readiness(True, c.reason, f'deployment "{name}" exceeded its progress deadline')
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if st.updated_replicas < spec.replicas:
        return Readiness(False, waiting + f"{st.updated_replicas} out of {spec.replicas} new replicas have "
                                          "been updated...")
    if st.replicas > st.updated_replicas:
        return Readiness(False, waiting + f"{st.replicas - st.updated_replicas} old replicas are pending "
                                          "termination...")
    if st.available_replicas < st.updated_replicas:
        return Readiness(False, waiting + f"{st.available_replicas} of {st.updated_replicas} updated "
                                          "replicas are available...")
    return Readiness(True, f'deployment "{name}" successfully rolled out')


def daemonset_readiness(ds: workload_pb2.DaemonSet) -> Readiness:
    name, st = ds.metadata.name, ds.status
    if st.observed_generation < ds.metadata.generation:
        return Readiness(False, "Waiting for daemon set spec update to be observed...")
    waiting = f'Waiting for daemon set "{name}" rollout to finish: '
    if st.updated_number_scheduled < st.desired_number_scheduled:
        updated, desired = st.updated_number_scheduled, st.desired_number_scheduled
        return Readiness(False, waiting + f"{updated} out of {desired} new pods have been updated...")
    if st.number_available < st.desired_number_scheduled:
        return Readiness(False, waiting + f"{st.number_available} of {st.desired_number_scheduled} updated "
                                          "pods are available...")
    return Readiness(True, f'daemon set "{name}" successfully rolled out')


def job_readiness(job: workload_pb2.Job) -> Readiness:
    """Complete; failed once its Failed condition is True."""
    for c in job.status.conditions:
        if c.status == "True" and c.type == "Complete":
            return Readiness(True, "Complete")
        if c.status == "True" and c.type == "Failed":
            return Readiness(True, "Failed", f"job {job.metadata.name} failed: {c.reason}: {c.message}")
    st = job.status
    return Readiness(False, f"{st.succeeded}/{job.spec.completions} completions, {st.active} active")

"""Node capacity arithmetic for capacity-aware binding (pure, no I/O).

The controller refuses a binding that would make the requests of the pods on
a node exceed what the node can allocate. The rules are the scheduler's
`NodeResourcesFit` (and Kubernetes'), so a scheduler whose cache is right is
never refused:

- a pod requests the sum of its app containers' requests, or the largest init
  container's if that is bigger (init containers run one at a time);
- a pod counts on its node while it is bound and not terminal (phase
  Succeeded or Failed frees its share; a pod being deleted still counts until
  its agent has stopped it);
- a node can allocate `status.allocatable` (or `status.capacity` when it
  reports no allocatable); a pod count of 0 means the default, 110;
- a request of zero for CPU, memory or ephemeral-storage is never refused, even
  on a full node; the pod count always is;
- a node that reports no `ephemeral-storage` (0: an older agent, a hollow or
  simulated node) is not checked for it — it said nothing to check against.
"""

from __future__ import annotations

from controller.specmemo import SpecMemo
from cowpod.api.phases import is_terminal
from cowpod.api.quantity import format_cpu, format_memory

# Re-exported (see __all__): the bind check's callers read the one rule through here.
from cowpod.api.resources import DEFAULT_MAX_PODS, NOTHING, Resources, pod_requests
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2

_REQUESTS: SpecMemo[Resources] = SpecMemo()


def shared_spec_requests(spec: pod_pb2.PodSpec) -> Resources:
    """`pod_requests` (the one rule), remembered by the spec's bytes: for specs that many pods
    share, as an unbound replica's (a bound pod's spec names its node: ask `pod_requests`).

    The binder asks it for every pod it binds; serializing a spec costs a fraction of walking
    its containers' resources (upb makes an object per submessage touched, and the rule a
    `Resources` per container). The rule is pure and `Resources` immutable, so a remembered
    answer is the answer (`controller.specmemo`)."""
    key = spec.SerializeToString(deterministic=True)
    got = _REQUESTS.get(key)
    if got is None:
        got = pod_requests(spec)
        _REQUESTS.put(key, got)
    return got


def counts(pod: pod_pb2.Pod) -> bool:
    """Whether `pod` takes a share of a node: bound and not terminal."""
    return bool(pod.spec.node_name) and not is_terminal(pod.status.phase)


def _resources(r: meta_pb2.ResourceList) -> Resources:
    return Resources(r.cpu_millis, r.memory_bytes, r.pods or DEFAULT_MAX_PODS, r.ephemeral_storage_bytes)


def allocatable(node: node_pb2.Node) -> Resources:
    st = node.status
    return _resources(st.allocatable if st.HasField("allocatable") else st.capacity)


def shortfall(node: str, alloc: Resources, used: Resources, want: Resources) -> str | None:
    """Why `want` does not fit on `node` next to `used`, or None when it fits.

    The message names the first resource short, what the pod requests and what
    is free: `node n1 has insufficient memory (requested 512Mi, free 256Mi)`."""
    if used.pods + want.pods > alloc.pods:
        return f"node {node} has too many pods (allocatable {alloc.pods}, bound {used.pods})"
    free_cpu = alloc.cpu_millis - used.cpu_millis
    if want.cpu_millis > 0 and want.cpu_millis > free_cpu:
        return (f"node {node} has insufficient cpu (requested {format_cpu(want.cpu_millis)}, "
                f"free {format_cpu(max(0, free_cpu))})")
    free_mem = alloc.memory_bytes - used.memory_bytes
    if want.memory_bytes > 0 and want.memory_bytes > free_mem:
        return (f"node {node} has insufficient memory (requested {format_memory(want.memory_bytes)}, "
                f"free {format_memory(max(0, free_mem))})")
    free_disk = alloc.ephemeral_storage_bytes - used.ephemeral_storage_bytes
    if want.ephemeral_storage_bytes > 0 and alloc.ephemeral_storage_bytes > 0 \
            and want.ephemeral_storage_bytes > free_disk:
        return (f"node {node} has insufficient ephemeral-storage "
                f"(requested {format_memory(want.ephemeral_storage_bytes)}, "
                f"free {format_memory(max(0, free_disk))})")
    return None


__all__ = ["NOTHING", "Resources", "allocatable", "counts", "pod_requests", "shared_spec_requests",
           "shortfall"]

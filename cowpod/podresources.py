"""What a pod asks of its node: one rule for the scheduler, the controller's
bind check, the autoscaler and the agent's admission, which must all agree.

Kubernetes' rule: a container's request, or its limit when it sets only a
limit (the API server defaults a missing request to the limit); the pod takes
the sum of its app containers or its largest init container, whichever is
more (init containers run one at a time, before the apps).
"""

from __future__ import annotations

from cowpod.v1 import pod_pb2


def container_requests(c: pod_pb2.Container) -> tuple[int, int]:
    """(cpu millis, memory bytes) one container reserves."""
    req, lim = c.resources.requests, c.resources.limits
    return req.cpu_millis or lim.cpu_millis, req.memory_bytes or lim.memory_bytes


def pod_requests(spec: pod_pb2.PodSpec) -> tuple[int, int]:
    """(cpu millis, memory bytes) the pod reserves on its node."""
    cpu = mem = 0
    for c in spec.containers:
        c_cpu, c_mem = container_requests(c)
        cpu, mem = cpu + c_cpu, mem + c_mem
    for c in spec.init_containers:
        i_cpu, i_mem = container_requests(c)
        cpu, mem = max(cpu, i_cpu), max(mem, i_mem)
    return cpu, mem

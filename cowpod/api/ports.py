"""The ports a pod takes on its VM: the one rule the scheduler places pods by.

Pods on one VM share its address (a pod's address is its VM's), so a declared
`containerPort` is a port of the VM, as a `hostPort` is on a Kubernetes node:
two pods that both listen on 8080/TCP cannot share a VM. A port with a
`hostPort` takes that port instead (the agent publishes it there when pods
have their own network namespace). Ports are (port, protocol, host IP), with
"" for every address.
"""

from __future__ import annotations

from cowpod.v1 import pod_pb2


def vm_ports(spec: pod_pb2.PodSpec) -> list[tuple[int, str, str]]:
    """Every (port, protocol, host IP) the pod's containers occupy on their VM."""
    return [
        (p.host_port or p.container_port, p.protocol or "TCP", p.host_ip)
        for c in spec.containers
        for p in c.ports
        if p.host_port or p.container_port
    ]

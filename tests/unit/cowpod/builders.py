"""Fixed protos for printer, describe and round-trip tests."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cowpod.v1 import event_pb2, lease_pb2, meta_pb2, node_pb2, pod_pb2, vm_pb2

T0 = 1_795_600_000  # 2026-11-25T09:46:40Z, a fixed "creation" time
MI = 2**20


def ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def pod(
    name: str = "hello",
    *,
    phase: str = "Succeeded",
    node: str = "vm-1",
    exit_code: int = 0,
    reason: str = "Completed",
    ready: bool = False,
) -> pod_pb2.Pod:
    p = pod_pb2.Pod(
        api_version="v1",
        kind="Pod",
        metadata=meta_pb2.ObjectMeta(
            name=name,
            namespace="default",
            uid="0b1d2c3e-0000-4000-8000-000000000001",
            labels={"app": name},
            resource_version=42,
            creation_timestamp=ts(T0),
        ),
        spec=pod_pb2.PodSpec(
            containers=[
                pod_pb2.Container(
                    name=name,
                    image="cowpod/busybox:latest",
                    command=["echo", "hello from cowpod"],
                    resources=pod_pb2.ResourceRequirements(
                        requests=meta_pb2.ResourceList(cpu_millis=10, memory_bytes=16 * MI)
                    ),
                )
            ],
            restart_policy="Never",
            node_name=node,
            termination_grace_period_seconds=30,
        ),
        status=pod_pb2.PodStatus(
            phase=phase,
            host_ip="172.17.0.3",
            pod_ip="172.17.0.3",
            start_time=ts(T0 + 1),
            qos_class="Burstable",
            conditions=[
                meta_pb2.Condition(type="PodScheduled", status="True", last_transition_time=ts(T0)),
                meta_pb2.Condition(type="Ready", status="True" if ready else "False"),
            ],
        ),
    )
    cs = p.status.container_statuses.add(
        name=name, image="cowpod/busybox:latest", container_id="docker://abc123", restart_count=0, ready=ready
    )
    if phase in ("Succeeded", "Failed"):
        cs.state.terminated.CopyFrom(
            pod_pb2.ContainerStateTerminated(
                exit_code=exit_code, reason=reason, started_at=ts(T0 + 1), finished_at=ts(T0 + 2)
            )
        )
    elif phase == "Running":
        cs.state.running.started_at.CopyFrom(ts(T0 + 1))
    else:
        cs.state.waiting.reason = "ContainerCreating"
    return p


def node(name: str = "vm-1", *, ready: bool = True, unschedulable: bool = False) -> node_pb2.Node:
    cap = meta_pb2.ResourceList(cpu_millis=1000, memory_bytes=1024 * MI, pods=110)
    return node_pb2.Node(
        api_version="v1",
        kind="Node",
        metadata=meta_pb2.ObjectMeta(
            name=name,
            labels={"cowpod.io/class": "default", "node-role.kubernetes.io/worker": ""},
            resource_version=7,
            creation_timestamp=ts(T0),
        ),
        spec=node_pb2.NodeSpec(unschedulable=unschedulable, provider_id=f"docker://{name}"),
        status=node_pb2.NodeStatus(
            capacity=cap,
            allocatable=meta_pb2.ResourceList(cpu_millis=900, memory_bytes=960 * MI, pods=110),
            conditions=[
                meta_pb2.Condition(
                    type="Ready",
                    status="True" if ready else "False",
                    reason="AgentReady" if ready else "NodeStatusUnknown",
                    last_heartbeat_time=ts(T0 + 50),
                    last_transition_time=ts(T0 + 5),
                )
            ],
            addresses=[node_pb2.NodeAddress(type="InternalIP", address="172.17.0.3")],
            node_info=node_pb2.NodeSystemInfo(agent_version="v0.1.0", os_image="Debian GNU/Linux 12"),
            daemon_endpoint="unix:///root/.cowpod/run/agents/vm-1.sock",
        ),
    )


def vm(name: str = "vm-1", *, parent: str = "", phase: str = "Running") -> vm_pb2.VM:
    return vm_pb2.VM(
        api_version="cowpod.io/v1",
        kind="VM",
        metadata=meta_pb2.ObjectMeta(name=name, resource_version=9, creation_timestamp=ts(T0)),
        spec=vm_pb2.VMSpec(
            class_name="default", cpu_millis=1000, memory_bytes=1024 * MI, provider="docker", parent=parent
        ),
        status=vm_pb2.VMStatus(
            phase=phase,
            node_name=name,
            ip="172.17.0.3",
            provider_id=f"docker://{name}",
            clone_kind="instant" if parent else "full",
            children=["vm-1-a", "vm-1-b"] if not parent else [],
            requested_at=ts(T0),
            ready_at=ts(T0 + 1, 250_000_000),  # sub-second: only describe shows it
        ),
    )


def event(reason: str = "Scheduled", *, count: int = 1, last: int = T0 + 10) -> event_pb2.Event:
    return event_pb2.Event(
        api_version="v1",
        kind="Event",
        metadata=meta_pb2.ObjectMeta(name=f"hello.{reason.lower()}", namespace="default"),
        involved_object=event_pb2.ObjectReference(kind="Pod", namespace="default", name="hello"),
        reason=reason,
        message="Successfully assigned default/hello to vm-1",
        type="Normal",
        source=event_pb2.EventSource(component="default-scheduler"),
        first_timestamp=ts(T0),
        last_timestamp=ts(last),
        count=count,
    )


def lease() -> lease_pb2.Lease:
    return lease_pb2.Lease(
        api_version="coordination.k8s.io/v1",
        kind="Lease",
        metadata=meta_pb2.ObjectMeta(name="vm-1", namespace="cowpod-node-lease", resource_version=3),
        spec=lease_pb2.LeaseSpec(holder_identity="vm-1", lease_duration_seconds=40, renew_time=ts(T0 + 3)),
    )

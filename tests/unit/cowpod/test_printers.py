"""Tables and describe text, against fixed protos and a fixed "now"."""

from __future__ import annotations

import pytest

from cowpod.cli import describe, output, printers
from cowpod.manifest.kinds import EVENT, NODE, POD, VM
from cowpod.v1 import pod_pb2, service_pb2
from tests.unit.cowpod import builders
from tests.unit.cowpod.builders import T0

NOW = T0 + 65


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 300, "3h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: int, text: str) -> None:
    assert printers.human_duration(seconds) == text


def test_pods_table() -> None:
    pods = [builders.pod(), builders.pod("web", phase="Running", ready=True)]
    pods[1].status.conditions[1].status = "True"
    text = output.render_objects(POD, pods, NOW, output=None)
    assert text == (
        "NAME    READY   STATUS      RESTARTS   AGE\n"
        "hello   0/1     Completed   0          65s\n"
        "web     1/1     Running     0          65s\n"
    )


def test_pods_wide_and_all_namespaces() -> None:
    text = output.render_objects(POD, [builders.pod()], NOW, output="wide", all_namespaces=True)
    assert text.splitlines() == [
        "NAMESPACE   NAME    READY   STATUS      RESTARTS   AGE   IP           NODE   NOMINATED NODE",
        "default     hello   0/1     Completed   0          65s   172.17.0.3   vm-1   <none>",
    ]


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (lambda p: None, "Completed"),
        (lambda p: p.status.container_statuses[0].state.terminated.__setattr__("reason", ""), "ExitCode:0"),
        (lambda p: p.metadata.deletion_timestamp.CopyFrom(builders.ts(T0)), "Terminating"),
        (lambda p: p.status.__setattr__("reason", "Evicted"), "Completed"),
    ],
)
def test_pod_status_column(mutate: object, status: str) -> None:
    p = builders.pod()
    mutate(p)  # type: ignore[operator]
    assert printers.pod_status(p) == status


def test_pod_status_shows_the_waiting_reason() -> None:
    p = builders.pod(phase="Pending")
    p.status.container_statuses[0].state.waiting.reason = "CrashLoopBackOff"
    p.status.container_statuses[0].restart_count = 4
    p.status.container_statuses[0].last_state.terminated.finished_at.CopyFrom(builders.ts(NOW - 30))
    row = printers.pod_row(p, NOW)
    assert row[2] == "CrashLoopBackOff"
    assert row[3] == "4 (30s ago)"


def test_pod_status_while_initializing() -> None:
    p = builders.pod(phase="Pending")
    p.spec.init_containers.add(name="init", image="x")
    p.status.init_container_statuses.add(name="init").state.running.SetInParent()
    assert printers.pod_status(p) == "Init:0/1"


def test_pod_without_status_is_pending() -> None:
    p = pod_pb2.Pod()
    p.metadata.name = "new"
    p.spec.containers.add(name="a", image="b")
    assert printers.pod_row(p, NOW) == ["new", "0/1", "Pending", "0", "<unknown>"]


def test_nodes_table_and_wide() -> None:
    nodes = [builders.node(), builders.node("vm-2", ready=False, unschedulable=True)]
    assert output.render_objects(NODE, nodes, NOW, output=None) == (
        "NAME   STATUS                        ROLES    AGE   VERSION\n"
        "vm-1   Ready                         worker   65s   v0.1.0\n"
        "vm-2   NotReady,SchedulingDisabled   worker   65s   v0.1.0\n"
    )
    wide = output.render_objects(NODE, nodes[:1], NOW, output="wide", pods_per_node={"vm-1": 3})
    assert wide.splitlines()[1].split() == [
        "vm-1",
        "Ready",
        "worker",
        "65s",
        "v0.1.0",
        "172.17.0.3",
        "900m",
        "960Mi",
        "3/110",
    ]


def test_vms_table_and_wide() -> None:
    vms = [builders.vm(), builders.vm("vm-1-a", parent="vm-1", phase="Creating")]
    assert output.render_objects(VM, vms, NOW, output=None) == (
        "NAME     CLASS     PHASE      NODE     PARENT   AGE\n"
        "vm-1     default   Running    vm-1     <none>   65s\n"
        "vm-1-a   default   Creating   vm-1-a   vm-1     65s\n"
    )
    wide = output.render_objects(VM, vms, NOW, output="wide").splitlines()
    assert wide[0].split()[-3:] == ["IP", "CLONE", "CHILDREN"]
    assert wide[1].split()[-3:] == ["172.17.0.3", "full", "2"]
    assert wide[2].split()[-3:] == ["172.17.0.3", "instant", "0"]


def test_events_table_sorted_by_last_seen_with_counts() -> None:
    evs = [builders.event("Started", last=T0 + 20), builders.event("Pulled", count=3, last=T0 + 5)]
    assert output.render_objects(EVENT, evs, NOW, output=None) == (
        "LAST SEEN           TYPE     REASON    OBJECT      MESSAGE\n"
        "60s (x3 over 65s)   Normal   Pulled    pod/hello   Successfully assigned default/hello to vm-1\n"
        "45s                 Normal   Started   pod/hello   Successfully assigned default/hello to vm-1\n"
    )


def test_name_and_jsonpath_output() -> None:
    pods = [builders.pod(), builders.pod("web")]
    assert output.render_objects(POD, pods, NOW, output="name") == "pod/hello\npod/web\n"
    one = output.render_objects(POD, pods[:1], NOW, output="jsonpath={.status.podIP}", single=True)
    assert one == "172.17.0.3\n"
    names = output.render_objects(POD, pods, NOW, output="jsonpath={.items[*].metadata.name}")
    assert names == "hello web\n"


def test_no_headers() -> None:
    text = output.render_objects(POD, [builders.pod()], NOW, output=None, no_headers=True)
    assert text.startswith("hello ")


def test_describe_pod() -> None:
    text = describe.describe_pod(builders.pod(), [builders.event()], NOW)
    lines = text.splitlines()
    assert lines[0] == "Name:         hello"
    assert "Node:         vm-1/172.17.0.3" in lines
    assert "Status:       Succeeded" in lines
    assert "Labels:       app=hello" in lines
    assert "    State:          Terminated" in lines
    assert "      Reason:     Completed" in lines
    assert "      Exit Code:  0" in lines
    assert "      Finished:   2026-11-25T09:46:42Z" in lines
    assert "    Ready:          False" in lines  # aligned with State: across the state's details
    assert "    Requests:" in lines and "      cpu:     10m" in lines and "      memory:  16Mi" in lines
    i = lines.index("Conditions:")
    assert lines[i + 1].split() == ["Type", "Status"]
    assert lines[i + 3].split() == ["PodScheduled", "True"]
    e = lines.index("Events:")
    assert lines[e + 1].split() == ["Type", "Reason", "Age", "From", "Message"]
    assert lines[e + 3].split()[:4] == ["Normal", "Scheduled", "55s", "default-scheduler"]


def test_describe_hides_the_last_applied_annotation() -> None:
    p = builders.pod()
    p.metadata.annotations["cowpod.io/last-applied-configuration"] = "{}"
    p.metadata.annotations["team"] = "a"
    text = describe.describe_pod(p, [], NOW)
    assert "Annotations:  team=a" in text.splitlines()
    assert "last-applied" not in text
    assert text.splitlines()[-1].split() == ["Events:", "<none>"]


def test_describe_multi_line_labels_are_aligned() -> None:
    p = builders.pod()
    p.metadata.labels["tier"] = "front"
    lines = describe.describe_pod(p, [], NOW).splitlines()
    i = lines.index("Labels:       app=hello")
    assert lines[i + 1] == "              tier=front"


def test_describe_node() -> None:
    text = describe.describe_node(builders.node(), [builders.pod(phase="Running")], [], NOW)
    lines = text.splitlines()
    assert lines[0].startswith("Name:") and lines[0].endswith("vm-1")
    assert any(line.split()[:2] == ["Ready", "True"] for line in lines)
    assert "  InternalIP:  172.17.0.3" in lines
    assert "Non-terminated Pods:          (1 in total)" in lines
    alloc = lines.index("Allocated resources:")
    assert lines[alloc + 3].split() == ["cpu", "10m", "(1%)"]
    assert lines[alloc + 4].split() == ["memory", "16Mi", "(1%)"]


def test_describe_vm() -> None:
    lines = describe.describe_vm(builders.vm(), [], NOW).splitlines()
    assert "Phase:              Running" in lines or any(ln.split() == ["Phase:", "Running"] for ln in lines)
    assert any(ln.split() == ["Children:", "vm-1-a"] for ln in lines)
    assert any(ln.split() == ["vm-1-b"] for ln in lines)
    assert any(ln.split() == ["Requested", "To", "Ready:", "1.250s"] for ln in lines)


def test_clone_column_says_snapped_free_only_for_instant_clones() -> None:
    full, child = builders.vm(), builders.vm("vm-1-a", parent="vm-1")
    full.status.snapped_free = child.status.snapped_free = True
    assert printers.vm_clone(full) == "full"
    assert printers.vm_clone(child) == "instant,snapped-free"


def test_service_and_endpoints_rows_and_describe() -> None:
    svc = service_pb2.Service()
    svc.metadata.name = "web"
    svc.spec.type, svc.spec.cluster_ip = "ClusterIP", "None"
    svc.spec.selector["app"] = "web"
    svc.spec.ports.add(name="http", port=80, protocol="TCP", target_port="http")
    svc.spec.ports.add(name="dns", port=53, protocol="UDP", target_port="53")
    assert printers.service_row(svc, 0.0, wide=True) == [
        "web", "ClusterIP", "None", "<none>", "80/TCP,53/UDP", "<unknown>", "app=web"]

    ep = service_pb2.Endpoints()
    ep.metadata.name = "web"
    sub = ep.subsets.add()
    sub.addresses.extend(service_pb2.EndpointAddress(ip=f"10.0.0.{i}") for i in range(1, 5))
    sub.ports.add(name="http", port=8080)
    assert printers.endpoints_row(ep, 0.0)[1] == "10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 1 more..."
    assert printers.endpoints_row(service_pb2.Endpoints(), 0.0)[1] == "<none>"

    text = describe.describe_service(svc, ep, [], 0.0)
    assert "Selector:" in text and "app=web" in text and "IP:" in text and "None" in text
    assert "80/TCP" in text and "10.0.0.4:8080" in text

"""The shared vocabulary (`cowpod.api`): the rules every process reads from one place."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

from cowpod.api import labels
from cowpod.api.phases import CLONABLE_VM_PHASES, PodPhase, VMPhase, is_terminal
from cowpod.api.resources import Resources, container_requests, pod_requests
from cowpod.api.tolerations import tolerates
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2


def test_phases_are_their_stored_strings() -> None:
    # Stored and wire values must not change when code switches to the enums.
    assert [p.value for p in PodPhase] == ["Pending", "Running", "Succeeded", "Failed", "Unknown"]
    assert PodPhase("Running") is PodPhase.RUNNING and f"{PodPhase.RUNNING}" == "Running"
    assert pod_pb2.PodStatus(phase=PodPhase.FAILED).phase == "Failed"
    assert set(VMPhase) >= CLONABLE_VM_PHASES


@pytest.mark.parametrize(
    ("phase", "terminal"),
    [
        ("Succeeded", True), ("Failed", True),
        ("Running", False), ("Pending", False), ("Unknown", False), ("", False),
    ],
)
def test_terminal_rule(phase: str, terminal: bool) -> None:
    assert is_terminal(phase) is terminal


def _amounts(a: tuple[int, int, int]) -> meta_pb2.ResourceList:
    return meta_pb2.ResourceList(cpu_millis=a[0], memory_bytes=a[1], ephemeral_storage_bytes=a[2])


def _container(req: tuple[int, int, int], lim: tuple[int, int, int] = (0, 0, 0)) -> pod_pb2.Container:
    return pod_pb2.Container(
        name="c",
        resources=pod_pb2.ResourceRequirements(
            requests=_amounts(req),
            limits=_amounts(lim),
        ),
    )


def test_a_container_reserves_its_request_else_its_limit() -> None:
    assert container_requests(_container((100, 0, 0), (500, 64, 7))) == Resources(100, 64, 0, 7)


def test_a_pod_reserves_the_apps_sum_or_its_largest_init_container() -> None:
    spec = pod_pb2.PodSpec(
        containers=[_container((100, 10, 1)), _container((200, 20, 2))],
        init_containers=[_container((500, 5, 1)), _container((50, 40, 0))],
    )
    assert pod_requests(spec) == Resources(cpu_millis=500, memory_bytes=40, pods=1, ephemeral_storage_bytes=3)


def test_fits_in_compares_every_amount() -> None:
    free = Resources(1000, 100, 2, 10)
    assert Resources(1000, 100, 2, 10).fits_in(free)
    assert not Resources(0, 0, 0, 11).fits_in(free)
    assert not Resources(0, 0, 3, 0).fits_in(free)
    assert (free - Resources(1, 1, 1, 1)) + Resources(1, 1, 1, 1) == free


@pytest.mark.parametrize(
    ("tol", "taint", "want"),
    [
        (("k", "Equal", "v", "NoSchedule"), ("k", "v", "NoSchedule"), True),
        (("k", "", "v", ""), ("k", "v", "NoExecute"), True),  # "" effect matches every effect; "" op is Equal
        (("k", "Equal", "w", ""), ("k", "v", "NoSchedule"), False),
        (("k", "Exists", "", ""), ("k", "anything", "NoSchedule"), True),
        (("", "Exists", "", ""), ("other", "v", "NoExecute"), True),  # tolerates everything
        (("", "Exists", "", "NoExecute"), ("other", "v", "NoSchedule"), False),
        (("j", "Exists", "", ""), ("k", "v", "NoSchedule"), False),
        (("k", "Bogus", "v", ""), ("k", "v", "NoSchedule"), False),
    ],
)
def test_tolerates_is_kubernetes_rule(
    tol: tuple[str, str, str, str], taint: tuple[str, str, str], want: bool
) -> None:
    t = pod_pb2.Toleration(key=tol[0], operator=tol[1], value=tol[2], effect=tol[3])
    n = node_pb2.Taint(key=taint[0], value=taint[1], effect=taint[2])
    assert tolerates(t, n) is want


def test_labels_module_is_stdlib_only() -> None:
    # The QEMU guest's init has only the standard library and reads the node labels.
    tree = ast.parse(pathlib.Path(labels.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def _code_files() -> list[pathlib.Path]:
    root = pathlib.Path(__file__).resolve().parents[3]
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
         *(f"{p}/*.py" for p in ("cowpod", "controller", "scheduler", "agent", "hypervisor", "bench"))],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout.split()
    skip = ("cowpod/api/", "cowpod/v1/")
    return [root / f for f in listed if not f.startswith(skip) and (root / f).exists()]


def test_well_known_names_and_the_terminal_rule_are_spelled_once() -> None:
    # A second spelling is how the class label and the parent taint drifted apart (#16):
    # code outside cowpod.api names a well-known key by its constant, never by its string,
    # and asks is_terminal instead of listing the phases. (Tests may spell them: they
    # check what is on the wire.)
    keys = {v: k for k, v in vars(labels).items() if k.isupper() and isinstance(v, str) and "/" in v}
    assert "cowpod.io/class" in keys and "cowpod.io/parent" in keys
    files = _code_files()
    assert len(files) > 100
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in keys:
                found.append(f"{path}:{node.lineno}: {node.value!r} is cowpod.api.labels.{keys[node.value]}")
            elif isinstance(node, ast.Tuple | ast.Set | ast.List) and len(node.elts) == 2 and {
                getattr(e, "value", None) for e in node.elts
            } == {"Succeeded", "Failed"}:
                found.append(f"{path}:{node.lineno}: terminal phases listed; use phases.is_terminal")
    assert not found, "\n".join(found)

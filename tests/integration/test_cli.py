"""The CLI against a real controller (real etcd): apply, get, describe, cordon, wait, delete.

`main()` runs in a worker thread (it owns its own event loop, as in a shell),
while the controller fixture serves from the test's loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from controller.testing import ControllerRunner
from cowpod.cli.main import main

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELLO = (ROOT / "examples" / "hello.yaml").read_text()


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Awaitable[Result]]


@pytest.fixture
def cli(controller: ControllerRunner, tmp_path: pathlib.Path) -> Cli:
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}

    async def run(*args: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--controller", controller.address]
        code = await asyncio.to_thread(
            main, argv, env=env, stdout=out, stderr=err, stdin=io.StringIO(stdin)
        )
        return Result(code, out.getvalue(), err.getvalue())

    return run


NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {pool: web}
status:
  capacity: {cpu: "2", memory: 2Gi, pods: "110"}
  allocatable: {cpu: "2", memory: 2Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True"}
"""


async def test_apply_get_describe_delete_a_pod(cli: Cli, tmp_path: pathlib.Path) -> None:
    hello = str(ROOT / "examples" / "hello.yaml")
    r = await cli("apply", "-f", hello)
    assert (r.code, r.out) == (0, "pod/hello created\n"), r.err
    r = await cli("apply", "-f", hello)
    assert r.out == "pod/hello unchanged\n"

    changed = tmp_path / "hello.yaml"
    changed.write_text(HELLO.replace("app: hello", "app: hello\n    tier: demo"))
    r = await cli("apply", "-f", str(changed))
    assert (r.code, r.out) == (0, "pod/hello configured\n"), r.err

    r = await cli("get", "pods")
    assert r.code == 0
    assert r.out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert r.out.splitlines()[1].split()[:3] == ["hello", "0/1", "Pending"]

    pod = (await cli("get", "pod", "hello", "-o", "json")).json()
    assert pod["kind"] == "Pod" and pod["metadata"]["labels"] == {"app": "hello", "tier": "demo"}
    assert isinstance(pod["metadata"]["resourceVersion"], str)
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "10m", "memory": "16Mi"}
    listed = yaml.safe_load((await cli("get", "pods", "-o", "yaml")).out)
    assert listed["kind"] == "List" and [p["metadata"]["name"] for p in listed["items"]] == ["hello"]
    assert (await cli("get", "pods", "-l", "tier=demo", "-o", "name")).out == "pod/hello\n"
    assert (await cli("get", "pods", "-l", "tier=prod", "-o", "name")).out == ""

    r = await cli("describe", "pod", "hello")
    assert r.code == 0
    assert r.out.startswith("Name:") and "Containers:" in r.out and "Events:" in r.out

    r = await cli("delete", "pod", "hello", "--wait", "--timeout", "30")
    assert (r.code, r.out) == (0, 'pod "hello" deleted\n'), r.err
    r = await cli("get", "pod", "hello")
    assert r.code == 1 and r.err.strip().splitlines() == ['error: pod "hello" not found']


async def test_a_bad_file_applies_nothing(cli: Cli, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    good = HELLO
    bad.write_text(good + "---\n" + good.replace("name: hello", "name: other").replace("image:", "imagee:"))
    r = await cli("apply", "-f", str(bad))
    assert r.code == 1
    assert len(r.err.strip().splitlines()) == 1 and "document 2: spec.containers[0].imagee" in r.err
    assert (await cli("get", "pods", "-o", "name")).out == ""


async def test_create_refuses_an_existing_object(cli: Cli) -> None:
    web = str(ROOT / "examples" / "web.yaml")
    assert (await cli("create", "-f", web)).out == "pod/web created\n"
    r = await cli("create", "-f", web)
    assert r.code == 1 and 'pod "web" already exists' in r.err
    assert (await cli("delete", "-f", web, "--force")).code == 0


async def test_nodes_cordon_and_wait(cli: Cli, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "node.yaml"
    f.write_text(NODE)
    assert (await cli("apply", "-f", str(f))).out == "node/n1 created\n"
    r = await cli("wait", "node", "n1", "--for", "condition=Ready", "--timeout", "10")
    assert (r.code, r.out) == (0, "node/n1 condition met\n"), r.err
    assert (await cli("cordon", "n1")).out == "node/n1 cordoned\n"
    assert (await cli("cordon", "n1")).out == "node/n1 already cordoned\n"
    node = (await cli("get", "node", "n1", "-o", "json")).json()
    assert node["spec"]["unschedulable"] is True
    r = await cli("get", "nodes")
    assert r.out.splitlines()[1].split()[:2] == ["n1", "Ready,SchedulingDisabled"]
    assert (await cli("uncordon", "n1")).out == "node/n1 uncordoned\n"
    r = await cli("wait", "node", "n1", "--for", "jsonpath={.spec.unschedulable}=true", "--timeout", "1")
    assert r.code == 1 and "timed out after 1s" in r.err
    assert (await cli("delete", "node", "n1")).code == 0


async def test_vm_objects(cli: Cli, tmp_path: pathlib.Path) -> None:
    f = tmp_path / "vm.yaml"
    f.write_text(
        "apiVersion: cowpod.io/v1\nkind: VM\nmetadata: {name: vm-9}\n"
        "spec: {className: default, cpu: 500m, memory: 512Mi, provider: sim}\n"
    )
    assert (await cli("apply", "-f", str(f))).out == "vm/vm-9 created\n"
    assert (await cli("apply", "-f", str(f))).out == "vm/vm-9 unchanged\n"
    vm = (await cli("get", "vm", "vm-9", "-o", "json")).json()
    assert vm["spec"]["cpu"] == "500m" and vm["spec"]["memory"] == "512Mi"
    r = await cli("get", "vms", "-o", "wide")
    assert r.out.splitlines()[0].split() == ["NAME", "CLASS", "PHASE", "NODE", "PARENT", "AGE", "IP", "CLONE",
                                             "CHILDREN"]
    r = await cli("describe", "vm", "vm-9")
    assert r.code == 0 and "Lineage:" in r.out
    r = await cli("vm", "pause", "vm-9")
    assert r.out == "vm/vm-9 paused\n", r.err
    assert (await cli("get", "vm", "vm-9", "-o", "json")).json()["spec"]["paused"] is True
    r = await cli("vm", "resume", "vm-9")
    assert r.out == "vm/vm-9 resumed\n", r.err
    assert not (await cli("get", "vm", "vm-9", "-o", "json")).json()["spec"].get("paused")
    r = await cli("vm", "pause", "no-such-vm")
    assert r.code != 0 and "not found" in r.err
    r = await cli("delete", "vm", "vm-9")
    assert r.code == 0, r.err


async def test_events_are_listed(cli: Cli) -> None:
    await cli("apply", "-f", str(ROOT / "examples" / "hello.yaml"))
    r = await cli("get", "events", "-A")
    assert r.code == 0
    # An empty list goes to stderr as kubectl does; a table starts with its header.
    assert r.out == "" or r.out.split()[:2] == ["NAMESPACE", "LAST"]


def _pods_yaml(*names: str) -> str:
    return "---\n".join(HELLO.replace("name: hello", f"name: {n}") for n in names)


async def test_many_pods_in_one_file_go_in_one_batch(
    cli: Cli, tmp_path: pathlib.Path, controller: ControllerRunner
) -> None:
    """`create` and `apply` of several pod documents use PodService.CreateBatch; each document
    still gets its own line, in order, and its own error."""
    f = tmp_path / "pods.yaml"
    f.write_text(_pods_yaml("p1", "p2"))
    assert (await cli("create", "-f", str(f))).out == "pod/p1 created\npod/p2 created\n"
    f.write_text(_pods_yaml("p0", "p1", "p3"))
    r = await cli("create", "-f", str(f))
    assert (r.code, r.out) == (1, "pod/p0 created\npod/p3 created\n")
    assert 'document 2: pod "p1" already exists' in r.err
    f.write_text(_pods_yaml("p1", "p4", "p5"))
    r = await cli("apply", "-f", str(f))
    # p1 was made by `create` (no last-applied record): apply records it.
    assert (r.code, r.out) == (0, "pod/p1 configured\npod/p4 created\npod/p5 created\n"), r.err
    r = await cli("apply", "-f", str(f))
    assert r.out == "pod/p1 unchanged\npod/p4 unchanged\npod/p5 unchanged\n"
    names = (await cli("get", "pods", "-o", "name")).out.split()
    assert sorted(names) == [f"pod/p{i}" for i in range(6)]
    assert controller.controller is not None
    batches = controller.controller.metrics.requests.labels("PodService.CreateBatch", "OK")
    assert batches._value.get() == 3

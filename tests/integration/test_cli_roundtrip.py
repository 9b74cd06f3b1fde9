"""`cowpod get KIND NAME -o yaml > f.yaml && cowpod apply -f f.yaml` for every kind in the CLI's
kinds table, and the same with `-o json`, on a real controller (real etcd, its workload and
endpoints loops running): the printed object applies back as "unchanged" and the stored object
is not written (same resourceVersion). Status and server-set metadata (uid, resourceVersion,
creationTimestamp, generation, ...) in an applied manifest are ignored, as kubectl users expect
(docs/api.md); everything else in the file is what the user owns."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from controller.testing import ControllerRunner
from cowpod.cli.kinds import all_kinds
from cowpod.cli.main import main
from cowpod.client import Client
from cowpod.manifest import KindInfo
from cowpod.v1 import event_pb2, meta_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Awaitable[Result]]

# One object of every kind that can be written through the API, applied (Endpoints come from
# the Service's selector, the Event is created below). An object made otherwise (by `create`
# or a controller) has no last-applied record: its first apply is "configured", recording one
# (test_an_object_without_a_record_is_configured_once).
OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: team-rt, labels: {team: rt}}
---
apiVersion: v1
kind: Node
metadata: {name: rt-node, labels: {pool: web}}
spec: {taints: [{key: dedicated, value: rt, effect: NoSchedule}]}
status:
  capacity: {cpu: "2", memory: 2Gi, pods: "110"}
  allocatable: {cpu: "2", memory: 2Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True"}
---
apiVersion: cowpod.io/v1
kind: VM
metadata: {name: rt-vm}
spec: {className: default, cpu: 500m, memory: 512Mi, provider: sim}
---
apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: team-rt, labels: {app: solo}}
spec:
  containers:
  - name: c
    image: cowpod/busybox:latest
    command: [sleep, "3600"]
    ports: [{containerPort: 8080, name: http}]
    readinessProbe: {httpGet: {path: /, port: http}}
    resources: {requests: {cpu: 100m, memory: 32Mi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: game, namespace: team-rt}
data: {lives: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: team-rt}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: team-rt}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: team-rt}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: cowpod/busybox:latest, ports: [{containerPort: 80, name: http}]}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache, namespace: team-rt}
spec:
  replicas: 0
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec: {containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: pi, namespace: team-rt}
spec:
  backoffLimit: 2
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logs, namespace: team-rt}
spec:
  selector: {matchLabels: {app: logs}}
  minReadySeconds: 5
  template:
    metadata: {labels: {app: logs}}
    spec:
      tolerations: [{key: dedicated, operator: Exists}]
      containers: [{name: c, image: cowpod/busybox:latest}]
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: rt-high}
value: 1000
description: the web tier
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: lock, namespace: team-rt}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
"""


def _env(tmp_path: pathlib.Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def cli(controller: ControllerRunner, tmp_path: pathlib.Path) -> Cli:
    async def run(*args: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(main, [*args, "--controller", controller.address], env=_env(tmp_path),
                                       stdout=out, stderr=err, stdin=io.StringIO(stdin))
        return Result(code, out.getvalue(), err.getvalue())

    return run


async def _resource_version(cli: Cli, info: KindInfo, name: str) -> str:
    r = await cli("get", info.plural, name, "-n", "team-rt", "-o", "jsonpath={.metadata.resourceVersion}")
    assert r.code == 0, r.err
    return r.out.strip()


async def test_get_then_apply_is_unchanged_for_every_kind(
        cli: Cli, client: Client, tmp_path: pathlib.Path) -> None:
    created = tmp_path / "objects.yaml"
    created.write_text(OBJECTS)
    r = await cli("apply", "-f", str(created))
    assert r.code == 0, r.err
    await client.events.Create(event_pb2.Event(
        metadata=meta_pb2.ObjectMeta(name="game.changed", namespace="team-rt"),
        involved_object=event_pb2.ObjectReference(kind="ConfigMap", namespace="team-rt", name="game"),
        reason="Changed", message="lives set to 3", type="Normal", count=1,
    ), timeout=10)
    # Statuses the loops write round-trip too (a Deployment's conditions), and the Endpoints
    # the endpoints loop writes for the Service.

    async def deployment_status() -> bool:
        r = await cli("get", "deploy", "web", "-n", "team-rt", "-o", "json")
        return r.code == 0 and bool(json.loads(r.out).get("status", {}).get("conditions"))

    await eventually(deployment_status, what="the Deployment's status conditions")
    r = await cli("wait", "ep", "web", "-n", "team-rt", "--for=jsonpath={.metadata.name}=web",
                  "--timeout", "30s")
    assert r.code == 0, r.err

    names = {"Namespace": "team-rt", "Node": "rt-node", "VM": "rt-vm", "Pod": "solo", "ConfigMap": "game",
             "Secret": "db", "Service": "web", "Endpoints": "web", "Deployment": "web", "ReplicaSet": "cache",
             "Job": "pi", "DaemonSet": "logs", "PriorityClass": "rt-high", "Lease": "lock",
             "Event": "game.changed"}
    # Every kind in the CLI's table is here: a kind added later must be added to this test.
    assert sorted(names) == sorted(k.kind for k in all_kinds())

    for info in all_kinds():
        for fmt in ("yaml", "json"):
            await eventually(functools.partial(_round_trip, cli, info, names[info.kind], fmt, tmp_path),
                             what=f"{info.kind} -o {fmt} applied back, not written")
    # A list of several kinds (`kind: List`) too.
    listed = await cli("get", "deploy,cm,secret,svc", "-n", "team-rt", "-o", "yaml")
    assert listed.code == 0 and "kind: List" in listed.out, listed.err
    (tmp_path / "list.yaml").write_text(listed.out)
    r = await cli("apply", "-f", str(tmp_path / "list.yaml"))
    assert (r.code, sorted(r.out.splitlines())) == (0, [
        "configmap/game unchanged", "deployment/web unchanged", "secret/db unchanged",
        "service/web unchanged"]), r.err


async def _round_trip(cli: Cli, info: KindInfo, name: str, fmt: str, tmp_path: pathlib.Path) -> bool:
    """get -o FMT > file; apply -f file: "unchanged" (else the test fails at once), and True
    when the object's resourceVersion is the same after as before."""
    ns = ("-n", "team-rt") if info.namespaced else ()
    got = await cli("get", info.plural, name, *ns, "-o", fmt)
    assert got.code == 0, (info.kind, got.err)
    path = tmp_path / f"{info.kind}.{fmt}"
    path.write_text(got.out)
    before = await _resource_version(cli, info, name)
    r = await cli("apply", "-f", str(path), *ns)
    assert (r.code, r.out.strip()) == (0, f"{info.singular}/{name} unchanged"), (info.kind, fmt, r.err)
    # The loops keep writing statuses: a version moved by one of them between the two reads
    # makes another round (an apply that wrote would move it every round).
    return before == await _resource_version(cli, info, name)


async def test_an_exported_object_applies_to_a_fresh_cluster(cli: Cli, tmp_path: pathlib.Path) -> None:
    """`get -o yaml` as a backup: after the object is deleted, the saved file creates it again
    (its uid, resourceVersion, creationTimestamp and status are the old object's: ignored)."""
    created = tmp_path / "objects.yaml"
    created.write_text(OBJECTS)
    assert (await cli("apply", "-f", str(created))).code == 0
    for kind, name in (("deployment", "web"), ("configmap", "game"), ("service", "web"), ("pod", "solo")):
        got = await cli("get", kind, name, "-n", "team-rt", "-o", "yaml")
        saved = tmp_path / f"{kind}.yaml"
        saved.write_text(got.out)
        old_uid = (await cli("get", kind, name, "-n", "team-rt", "-o", "jsonpath={.metadata.uid}")).out
        r = await cli("delete", "-f", str(saved), "--wait", "--grace-period", "0")
        assert r.code == 0, r.err
        r = await cli("apply", "-f", str(saved))
        assert (r.code, r.out.strip()) == (0, f"{kind}/{name} created"), r.err
        new_uid = (await cli("get", kind, name, "-n", "team-rt", "-o", "jsonpath={.metadata.uid}")).out
        assert new_uid and new_uid != old_uid


async def test_an_object_without_a_record_is_configured_once(cli: Cli, tmp_path: pathlib.Path) -> None:
    """The Deployment's ReplicaSet, made by its controller: the first apply of its `get -o yaml`
    records what was applied (as kubectl does), the next is "unchanged" and writes nothing."""
    created = tmp_path / "objects.yaml"
    created.write_text(OBJECTS)
    assert (await cli("apply", "-f", str(created))).code == 0

    async def replicaset() -> str | None:
        r = await cli("get", "rs", "-n", "team-rt", "-l", "app=web", "-o", "name")
        return r.out.split()[0].partition("/")[2] if r.code == 0 and r.out.strip() else None

    rs = await eventually(replicaset, what="the Deployment's ReplicaSet")
    saved = tmp_path / "rs.yaml"
    saved.write_text((await cli("get", "rs", rs, "-n", "team-rt", "-o", "yaml")).out)
    r = await cli("apply", "-f", str(saved))
    assert (r.code, r.out.strip()) == (0, f"replicaset/{rs} configured"), r.err
    info = next(k for k in all_kinds() if k.kind == "ReplicaSet")
    await eventually(functools.partial(_round_trip, cli, info, rs, "yaml", tmp_path),
                     what="the ReplicaSet applied back, not written")

"""Every verb against every kind it takes, on a real controller (real etcd): `describe` of each
kind, `get -w` of the newer kinds, `wait --for=delete|jsonpath` on them, and `delete -f` of a
file holding many kinds."""

from __future__ import annotations

import asyncio
import io
import pathlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from controller.testing import ControllerRunner
from cowpod.cli.context import Ctx
from cowpod.cli.main import build_parser, main, parse_args
from cowpod.client import Client
from cowpod.config import load_config
from cowpod.v1 import event_pb2, meta_pb2, pod_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Awaitable[Result]]

MANY_KINDS = """\
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: game}
data: {lives: "3"}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: logs}
spec:
  selector: {matchLabels: {app: logs}}
  template:
    metadata: {labels: {app: logs}}
    spec: {containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
description: the web tier
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: lock}
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


async def _apply(cli: Cli, tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "many.yaml"
    path.write_text(MANY_KINDS)
    r = await cli("apply", "-f", str(path))
    assert r.code == 0, r.err
    return path


async def test_describe_every_kind(cli: Cli, client: Client, tmp_path: pathlib.Path) -> None:
    await _apply(cli, tmp_path)
    await client.events.Create(event_pb2.Event(
        metadata=meta_pb2.ObjectMeta(name="game.changed", namespace="default"),
        involved_object=event_pb2.ObjectReference(kind="ConfigMap", namespace="default", name="game"),
        reason="Changed", message="lives set to 3", type="Normal",
    ), timeout=10)
    # The endpoints loop writes the Service's Endpoints: `wait` reads them by name.
    r = await cli("wait", "ep", "web", "--for=jsonpath={.metadata.name}=web", "--timeout", "30s")
    assert r.code == 0, r.err

    async def replicaset() -> str | None:
        r = await cli("get", "rs", "-o", "name")
        return r.out.split()[0].partition("/")[2] if r.code == 0 and r.out.strip() else None

    rs = await eventually(replicaset, what="the Deployment's ReplicaSet")
    targets = [("pod", None), ("namespace", "team-a"), ("configmap", "game"), ("secret", "db"),
               ("svc", "web"), ("endpoints", "web"), ("deploy", "web"), ("rs", rs), ("job", "pi"),
               ("ds", "logs"), ("pc", "high"), ("lease", "lock"), ("event", "game.changed")]
    for kind, name in targets:
        if name is None:  # a pod of the Deployment
            r = await cli("get", "pods", "-l", "app=web", "-o", "name")
            name = r.out.split()[0].partition("/")[2]
        r = await cli("describe", kind, name)
        assert r.code == 0, (kind, r.err)
        assert r.out.splitlines()[0].split() == ["Name:", name], (kind, r.out)
        assert "hunter2" not in r.out
    r = await cli("describe", "cm", "game")
    assert "Changed" in r.out.splitlines()[-1]  # its events
    r = await cli("describe", "lease", "lock")
    assert "  Holder Identity:         me" in r.out.splitlines()
    r = await cli("describe", "pc", "high")
    assert "Description:       the web tier" in r.out.splitlines()


async def test_delete_a_file_of_many_kinds_and_wait_for_each(cli: Cli, tmp_path: pathlib.Path) -> None:
    path = await _apply(cli, tmp_path)
    r = await cli("delete", "-f", str(path))
    assert r.code == 0, r.err
    deleted = {line for line in r.out.splitlines()}
    assert deleted >= {'namespace "team-a" deleted', 'configmap "game" deleted', 'secret "db" deleted',
                       'service "web" deleted', 'deployment "web" deleted', 'job "pi" deleted',
                       'daemonset "logs" deleted', 'priorityclass "high" deleted', 'lease "lock" deleted'}
    for kind, name in [("cm", "game"), ("secret", "db"), ("svc", "web"), ("deploy", "web"), ("job", "pi"),
                       ("ds", "logs"), ("pc", "high"), ("lease", "lock"), ("ns", "team-a")]:
        r = await cli("wait", kind, name, "--for", "delete", "--timeout", "60s")
        assert r.code == 0, (kind, r.err)
        r = await cli("get", kind, name)
        assert r.code == 1 and "not found" in r.err, (kind, r.out, r.err)


async def test_describe_without_names_describes_every_one(cli: Cli, tmp_path: pathlib.Path) -> None:
    await _apply(cli, tmp_path)
    r = await cli("describe", "cm")
    assert r.code == 0, r.err
    assert [line.split()[1] for line in r.out.splitlines() if line.startswith("Name:")] == ["game"]
    r = await cli("describe", "svc", "-l", "nothing=here")
    assert r.code == 0 and r.out == "" and "No resources found in default namespace." in r.err
    r = await cli("describe", "cm", "game", "missing")
    assert r.code == 1 and r.out.startswith("Name:") and 'configmap "missing" not found' in r.err, r.err


async def test_wait_for_every_object_of_a_selector(cli: Cli, tmp_path: pathlib.Path) -> None:
    await _apply(cli, tmp_path)
    r = await cli("label", "cm", "game", "tier=gold")
    assert r.code == 0, r.err
    r = await cli("wait", "cm", "-l", "tier=gold", "--for=jsonpath={.data.lives}=3")
    assert r.code == 0 and r.out == "configmap/game condition met\n", r.err
    r = await cli("wait", "cm", "-l", "tier=none", "--for", "delete")
    assert r.code == 1 and "no matching resources found" in r.err
    r = await cli("delete", "secret", "--all")
    assert r.code == 0, r.err
    r = await cli("wait", "secrets", "--all", "--for", "delete")
    assert r.code == 1 and "no matching resources found" in r.err


async def test_apply_wait_judges_each_kind_by_its_readiness(cli: Cli, client: Client) -> None:
    manifest = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n"
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
                "spec: {containers: [{name: c, image: cowpod/busybox:latest}]}\n")
    # No node runs the pod: the wait is for it alone (a ConfigMap is there once created).
    r = await cli("apply", "-f", "-", "--wait", "--timeout", "1s", stdin=manifest)
    assert r.code == 1 and "waiting for 1 object(s)" in r.err and "pod/p" in r.err, r.err
    st = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name="p"),
                     status=pod_pb2.PodStatus(phase="Running",
                                              conditions=[meta_pb2.Condition(type="Ready", status="True")]))
    await client.pods.UpdateStatus(st, timeout=10)
    r = await cli("apply", "-f", "-", "--wait", "--timeout", "30s", stdin=manifest)
    assert r.code == 0 and "pod/p Running" in r.err, r.err


async def test_get_all_is_kubectls_category(cli: Cli, tmp_path: pathlib.Path) -> None:
    await _apply(cli, tmp_path)
    r = await cli("get", "all", "-o", "name")
    assert r.code == 0, r.err
    kinds = {line.partition("/")[0] for line in r.out.split()}
    # The Deployment's ReplicaSet and pod and the Job's pod appear as the controllers make them.
    assert {"service", "deployment", "job", "daemonset"} <= kinds
    assert not kinds & {"configmap", "secret", "namespace", "priorityclass", "lease"}
    r = await cli("get", "all,cm")
    assert r.code == 0 and "service/web" in r.out and "configmap/game" in r.out, r.out


async def test_delete_a_file_deletes_its_namespace_last(cli: Cli, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n---\n"
                    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1, namespace: team-b}\n"
                    "data: {a: b}\n")
    r = await cli("apply", "-f", str(path))
    assert r.code == 0, r.err
    r = await cli("delete", "-f", str(path))
    assert r.code == 0, r.err
    assert r.out.splitlines() == ['configmap "c1" deleted', 'namespace "team-b" deleted']


async def test_verbs_refuse_what_the_server_cannot_do(cli: Cli, tmp_path: pathlib.Path) -> None:
    await _apply(cli, tmp_path)
    r = await cli("get", "lease", "lock", "-w")
    assert r.code == 2 and "leases cannot be watched" in r.err
    r = await cli("delete", "ep", "web")
    assert r.code == 2 and "does not take endpoints" in r.err
    r = await cli("label", "ep", "web", "a=b")
    assert r.code == 2 and "does not take endpoints" in r.err
    event = ("apiVersion: v1\nkind: Event\nmetadata: {name: e1}\n"
             "involvedObject: {kind: Pod, name: web}\nreason: Tested\n")
    # Events have no Update: apply creates one, finds it again by listing, and refuses a change.
    r = await cli("apply", "-f", "-", stdin=event)
    assert r.code == 0 and "event/e1 created" in r.out, r.err
    r = await cli("apply", "-f", "-", stdin=event)
    assert r.code == 0 and "event/e1 unchanged" in r.out, r.err
    r = await cli("apply", "-f", "-", stdin=event.replace("Tested", "Retested"))
    assert r.code == 1 and "events cannot be changed after creation" in r.err, r.err
    r = await cli("create", "-f", "-", stdin=event.replace("e1", "e2"))
    assert r.code == 0 and "event/e2 created" in r.out, r.err


@pytest.mark.parametrize(("kind", "name", "patch", "seen"), [
    ("cm", "game", '{"data":{"lives":"5"}}', "game"),
    ("pc", "high", '{"description":"changed"}', "high"),
    ("svc", "web", '{"spec":{"ports":[{"port":8080}]}}', "8080/TCP"),
    ("ns", "team-a", '{"metadata":{"labels":{"tier":"gold"}}}', "team-a"),
    ("deploy", "web", '{"spec":{"replicas":2}}', "0/2"),
])
async def test_get_watch_prints_changes_of_the_newer_kinds(
    cli: Cli, controller: ControllerRunner, tmp_path: pathlib.Path, kind: str, name: str, patch: str,
    seen: str,
) -> None:
    await _apply(cli, tmp_path)
    parser = build_parser()
    args = parse_args(parser, ["get", kind, name, "-w"])
    out, err = io.StringIO(), io.StringIO()
    config = load_config(env=_env(tmp_path), controller=controller.address, data_dir=None, namespace=None,
                         debug=False)
    ctx = Ctx(config=config, out=out, err=err, stdin=io.StringIO())
    watch = asyncio.create_task(args.func(ctx, args), name=f"get {kind} -w")
    try:
        await eventually(lambda: len(out.getvalue().splitlines()) >= 2 or None, what="the header and row")
        rows_before = len(out.getvalue().splitlines())
        r = await cli("patch", kind, name, "-p", patch)
        assert r.code == 0, r.err
        # A row printed after the patch shows it (status writes may print rows of their own too).
        def shown() -> bool | None:
            return any(seen in line for line in out.getvalue().splitlines()[rows_before:]) or None

        await eventually(shown, what=f"a row of {kind}/{name} showing {seen!r}")
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
        await ctx.aclose()

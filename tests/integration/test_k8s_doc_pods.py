"""The Kubernetes docs' Pod examples (tests/fixtures/k8s-docs/pods) through `cowpod apply`
against a real controller on a real etcd: each applies (with one `Warning:` line per
field accepted with no effect) or is refused with one line naming the field, as the
first line of the file says."""

from __future__ import annotations

import asyncio
import io
import pathlib

import pytest

from controller.testing import ControllerRunner
from cowpod.cli.main import main
from cowpod.client import Client
from cowpod.v1 import meta_pb2

pytestmark = pytest.mark.integration

PODS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "k8s-docs" / "pods"
FILES = sorted(PODS.glob("*.yaml"))


async def apply(controller: ControllerRunner, home: pathlib.Path, path: pathlib.Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"HOME": str(home), "COWPOD_DATA_DIR": str(home / "data")}
    argv = ["apply", "-f", str(path), "--controller", controller.address]
    code = await asyncio.to_thread(main, argv, env=env, stdout=out, stderr=err, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def expectation(path: pathlib.Path) -> tuple[str, str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must say what to expect"
    verb, _, field = first.removeprefix("# expect: ").partition(" ")
    return verb, field


def test_the_fixtures_cover_both_outcomes() -> None:
    verbs = [expectation(p)[0] for p in FILES]
    assert set(verbs) == {"applies", "refused"} and len(FILES) >= 20


async def test_each_docs_pod_applies_or_is_refused_with_one_line(
    controller: ControllerRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    for path in FILES:  # name order: PriorityClasses before the pod that uses one
        verb, field = expectation(path)
        code, out, err = await apply(controller, tmp_path, path)
        lines = err.strip().splitlines()
        if verb == "applies":
            assert code == 0, f"{path.name}: {err}"
            assert out.strip().endswith("created"), f"{path.name}: {out}"
            assert all(line.startswith("Warning: ") for line in lines), f"{path.name}: {err}"
        else:
            assert code != 0, f"{path.name} was accepted: {out}"
            assert len(lines) == 1 and field in lines[0], f"{path.name}: {err}"

    pod = await client.pods.Get(meta_pb2.ObjectKey(namespace="default", name="nginx"))
    assert (pod.spec.priority_class_name, pod.spec.priority) == ("high-priority", 1_000_000)


async def test_warnings_name_the_ignored_fields(controller: ControllerRunner, tmp_path: pathlib.Path) -> None:
    for name, fields in (("init-containers.yaml", []),  # dnsPolicy: Default is honoured
                         ("private-reg-pod.yaml", ["spec.imagePullSecrets"]),
                         ("termination.yaml", ["spec.containers[0].terminationMessagePath",
                                               "spec.containers[0].terminationMessagePolicy"]),
                         ("security-context.yaml", ["spec.securityContext.fsGroup"]),
                         ("dapi-envars-pod.yaml", [])):
        code, _, err = await apply(controller, tmp_path, PODS / name)
        assert code == 0, err
        warned = [line.split(": ")[2] for line in err.strip().splitlines()]
        assert warned == fields, f"{name}: {err}"

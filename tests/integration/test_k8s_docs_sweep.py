"""The wider sweep of the Kubernetes documentation's example manifests (tests/fixtures/k8s-docs/
<dir>/..., one directory per docs folder: controllers, service, configmap, application, admin and
pods/<task>) through `cowpod apply` against a real controller on a real etcd, as issue #14's
held-out check applies its own set: each file applies (stderr holds only `Warning:` lines) or is
refused with ONE line naming the field or kind and why, as its first line (`# expect: ...`) says.

Files are applied directory by directory in name order, as a user following a docs page would
(the ConfigMap and Secret files of a page sort or sit before the pods that read them). The pods a
file creates are deleted again after it, so the next page's pod of the same name (the docs reuse
`nginx`, `redis`, `dapi-test-pod`) is created, not refused as a spec change. The workloads'
controllers are then checked to have acted on what was applied (pods made from the templates,
Endpoints for the Services). Whether the pods run is the e2e module's business
(tests/e2e/test_k8s_docs_docker.py); no agent runs here.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import pathlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from controller.testing import ControllerRunner
from cowpod.cli.main import main
from cowpod.client import Client
from cowpod.manifest import BY_KIND
from cowpod.v1 import meta_pb2
from tests.polling import eventually

pytestmark = pytest.mark.integration

DOCS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "k8s-docs"
# The top-level files and pods/*.yaml have their own tests (test_cli_workloads.py,
# test_k8s_doc_pods.py); this sweep takes every file one directory further down.
FILES = sorted(p for p in DOCS.rglob("*.yaml")
               if len(p.relative_to(DOCS).parts) > 2
               or (len(p.relative_to(DOCS).parts) == 2 and p.parent.name != "pods"))


@dataclass(frozen=True)
class Expect:
    verb: str  # "applies" | "refused"
    needle: str  # for "refused": text the one error line must contain


def expectation(path: pathlib.Path) -> Expect:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path}: the first line must say what to expect"
    verb, _, needle = first.removeprefix("# expect: ").partition(" ")
    assert verb in ("applies", "refused"), f"{path}: {first}"
    return Expect(verb, needle.strip())


def documents(path: pathlib.Path) -> Iterator[dict[str, object]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if isinstance(doc, dict):
            yield doc


async def run(controller: ControllerRunner, home: pathlib.Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {"HOME": str(home), "COWPOD_DATA_DIR": str(home / "data")}
    code = await asyncio.to_thread(main, [*argv, "--controller", controller.address], env=env,
                                   stdout=out, stderr=err, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def test_every_fixture_is_listed_in_the_readme_with_its_source() -> None:
    readme = (DOCS / "README.md").read_text()
    missing = [str(p.relative_to(DOCS)) for p in FILES if f"`{p.relative_to(DOCS)}`" not in readme]
    assert not missing, f"not in tests/fixtures/k8s-docs/README.md: {missing}"
    verbs = {expectation(p).verb for p in FILES}
    assert verbs == {"applies", "refused"} and len(FILES) >= 60


async def test_each_docs_manifest_applies_or_is_refused_with_one_line(
    controller: ControllerRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    wrong: list[str] = []
    for _, group in itertools.groupby(FILES, key=lambda p: p.parent):
        paths = list(group)
        applied = [p for p in paths if await apply_as_expected(controller, client, tmp_path, p, wrong)]
        await owners_get_pods(client, applied)
        # The next docs folder starts from a clean cluster (the docs reuse names and selectors
        # across pages, and a Deployment's selector is immutable). A file refused by the server
        # may have had its other objects applied, as kubectl does: those go too; a file the CLI
        # refused (unknown kind, bad field) sent nothing, and `delete -f` refuses it alike.
        for path in reversed(paths):
            code, _, err = await run(controller, tmp_path, "delete", "-f", str(path), "--ignore-not-found",
                                     "--force")
            assert code == 0 or path not in applied, f"{path}: {err}"
    assert not wrong, "\n".join(wrong)


async def apply_as_expected(controller: ControllerRunner, client: Client, home: pathlib.Path,
                            path: pathlib.Path, wrong: list[str]) -> bool:
    """Apply one file; note in `wrong` how it differs from its `# expect:` line. True if applied."""
    want = expectation(path)
    name = str(path.relative_to(DOCS))
    code, out, err = await run(controller, home, "apply", "-f", str(path))
    lines = err.strip().splitlines()
    if want.verb == "applies" and (code != 0 or not all(line.startswith("Warning: ") for line in lines)):
        wrong.append(f"{name}: expected to apply; exit {code}: {err.strip()}")
    elif want.verb == "refused" and code == 0:
        wrong.append(f"{name}: expected a refusal naming {want.needle!r}; applied: {out.strip()}")
    elif want.verb == "refused" and (len(lines) != 1 or want.needle not in lines[0]):
        wrong.append(f"{name}: expected ONE line naming {want.needle!r}; got: {err.strip()}")
    if code != 0 and want.needle.startswith("kind: "):
        # Refused by the CLI before anything was sent: no other object of the file exists.
        for doc in documents(path):
            meta = doc.get("metadata")
            if doc.get("kind") in BY_KIND and isinstance(meta, dict) and "name" in meta:
                got, _, _ = await run(controller, home, "get", str(doc["kind"]).lower(), str(meta["name"]),
                                      "-n", str(meta.get("namespace") or "default"))
                if got == 0:
                    wrong.append(f"{name}: refused, yet its {doc['kind']} {meta['name']} was created")
    if code != 0:
        return False
    for doc in documents(path):  # free the pod's name for the next page (no node: gone at once)
        meta = doc.get("metadata")
        if doc.get("kind") == "Pod" and isinstance(meta, dict):
            await client.pods.Delete(meta_pb2.DeleteOptions(
                key=meta_pb2.ObjectKey(namespace=str(meta.get("namespace") or "default"),
                                       name=str(meta["name"])),
                grace_period_seconds=0))
    return True


async def owners_get_pods(client: Client, applied: list[pathlib.Path]) -> None:
    """The workload controllers act on what applied: each Deployment, ReplicaSet and Job has pods
    of its template (DaemonSets need nodes: none here)."""
    owners = {(str(meta.get("namespace") or "default"), str(meta["name"]))
              for p in applied for doc in documents(p)
              if doc.get("kind") in ("Deployment", "ReplicaSet", "Job")
              and isinstance(meta := doc.get("metadata"), dict)}

    async def owners_with_pods() -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        for ns in {ns for ns, _ in owners}:
            for pod in (await client.pods.List(meta_pb2.ListOptions(namespace=ns))).items:
                for ref in pod.metadata.owner_references:
                    if ref.controller:
                        seen.add((ns, ref.name))
                        if ref.kind == "ReplicaSet":  # a Deployment's is `<deployment>-<hash>`
                            seen.add((ns, re.sub(r"-[a-z0-9]{6,10}$", "", ref.name)))
        return seen

    async def all_have_pods() -> bool:
        return owners <= await owners_with_pods()

    await eventually(all_have_pods, what=f"pods for each of {sorted(owners)}")


async def test_the_guestbook_folder_applies_in_one_command(
    controller: ControllerRunner, client: Client, tmp_path: pathlib.Path
) -> None:
    """The guestbook tutorial's manifests as `kubectl apply -f <dir>` takes them: every file of
    the folder, each object once; the three Deployments get pods and Endpoints exist for the
    three Services."""
    folder = DOCS / "application" / "guestbook"
    code, out, err = await run(controller, tmp_path, "apply", "-f", str(folder))
    assert code == 0, err
    assert sorted(out.split()[::2]) == sorted(
        ["deployment/frontend", "deployment/redis-follower", "deployment/redis-leader",
         "service/frontend", "service/redis-follower", "service/redis-leader"]), out
    await owners_get_pods(client, sorted(folder.glob("*.yaml")))

    async def three() -> bool:
        listed = await client.endpoints.List(meta_pb2.ListOptions(namespace="default"))
        return {e.metadata.name for e in listed.items} == {"frontend", "redis-follower", "redis-leader"}

    await eventually(three, what="Endpoints of the three Services")

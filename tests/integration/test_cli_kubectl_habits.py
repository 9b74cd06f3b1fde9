"""kubectl habits against a real controller (real etcd): label, annotate, patch, edit,
`get` of several kinds at once, --show-labels, --sort-by."""

from __future__ import annotations

import asyncio
import io
import pathlib
import sys
from typing import Any

import pytest

from controller.testing import ControllerRunner
from cowpod.cli.commands.modify import merge_patch
from cowpod.cli.main import main
from tests.integration.test_cli import Cli, Result

pytestmark = pytest.mark.integration



OBJECTS = """\
apiVersion: v1
kind: Pod
metadata: {name: b-web, labels: {app: web, rank: "9"}}
spec: {containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: v1
kind: Pod
metadata: {name: a-db, labels: {app: db, rank: "10"}}
spec: {containers: [{name: c, image: cowpod/busybox:latest}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
"""


@pytest.fixture
def cli(controller: ControllerRunner, tmp_path: pathlib.Path) -> Cli:
    # $EDITOR: a script that does what a person would do in vi: change `app: web` to `app: shop`.
    editor = tmp_path / "editor.py"
    editor.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('app: web', 'app: shop'))\n")
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data"),
           "EDITOR": f"{sys.executable} {editor}"}

    async def run(*args: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(main, [*args, "--controller", controller.address], env=env,
                                       stdout=out, stderr=err, stdin=io.StringIO(stdin))
        return Result(code, out.getvalue(), err.getvalue())

    return run


def test_merge_patch_is_rfc_7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    patch = {"a": "z", "c": {"f": None, "h": 1}, "l": [3]}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e", "h": 1}, "l": [3]}
    assert merge_patch({"a": 1}, {"a": None}) == {}


async def selector(cli: Cli) -> dict[str, str]:
    svc: dict[str, Any] = (await cli("get", "svc", "web", "-o", "json")).json()
    return dict(svc["spec"]["selector"])


async def test_label_annotate_patch_edit(cli: Cli) -> None:
    assert (await cli("apply", "-f", "-", stdin=OBJECTS)).code == 0
    r = await cli("label", "pod", "b-web", "tier=front")
    assert (r.code, r.out.strip()) == (0, "pod/b-web labeled"), r.err
    r = await cli("label", "pod/b-web", "tier=back")
    assert r.code != 0 and "'tier' already has a value (front), and --overwrite is false" in r.err
    assert (await cli("label", "pod", "b-web", "tier=back", "--overwrite")).code == 0
    assert (await cli("get", "pod", "b-web", "-o", "json")).json()["metadata"]["labels"] == {
        "app": "web", "rank": "9", "tier": "back"}
    assert (await cli("label", "pod", "b-web", "tier-")).code == 0
    assert (await cli("annotate", "svc", "web", "owner=team-a")).code == 0
    svc = (await cli("get", "svc", "web", "-o", "json")).json()
    assert svc["metadata"]["annotations"]["owner"] == "team-a"
    assert "tier" not in (await cli("get", "pod", "b-web", "-o", "json")).json()["metadata"]["labels"]

    r = await cli("patch", "svc", "web", "-p", '{"spec":{"selector":{"app":"db","extra":"x"}}}')
    assert r.code == 0 and "service/web patched" in r.out, r.err
    assert await selector(cli) == {"app": "db", "extra": "x"}
    assert (await cli("patch", "svc", "web", "-p", '{"spec":{"selector":{"extra":null}}}')).code == 0
    assert await selector(cli) == {"app": "db"}
    # A typo in the patch is refused with the field's path, and nothing is written.
    r = await cli("patch", "svc", "web", "-p", '{"spec":{"selecter":{"app":"x"}}}')
    assert r.code != 0 and "spec.selecter: unknown field" in r.err, r.err
    assert await selector(cli) == {"app": "db"}

    r = await cli("edit", "pod", "b-web")
    assert (r.code, r.out.strip()) == (0, "pod/b-web edited"), r.err
    assert (await cli("get", "pod", "b-web", "-o", "json")).json()["metadata"]["labels"]["app"] == "shop"
    r = await cli("edit", "pod", "b-web")  # nothing left for the editor to change
    assert r.code == 0 and "Edit cancelled, no changes made." in r.out


async def test_get_several_kinds_labels_and_sorting(cli: Cli) -> None:
    assert (await cli("apply", "-f", "-", stdin=OBJECTS)).code == 0
    r = await cli("get", "pods,svc", "--show-labels")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert any(line.startswith("pod/a-db ") and line.endswith("app=db,rank=10") for line in lines), r.out
    assert any(line.startswith("service/web ") for line in lines), r.out
    assert lines.count("") == 1  # one table per kind, a blank line between
    names = (await cli("get", "pods,svc", "-o", "json")).json()["items"]
    assert [(o["kind"], o["metadata"]["name"]) for o in names] == [
        ("Pod", "a-db"), ("Pod", "b-web"), ("Service", "web")]
    # Numbers sort as numbers (9 before 10), not as text.
    r = await cli("get", "pods", "--sort-by", ".metadata.labels.rank", "-o", "name")
    assert r.out.split() == ["pod/b-web", "pod/a-db"]
    r = await cli("get", "pods", "--sort-by", "{.metadata.name}", "--no-headers")
    assert [line.split()[0] for line in r.out.splitlines()] == ["a-db", "b-web"]
    r = await cli("get", "pods,nonsense")
    assert r.code == 2 and 'unknown resource type "nonsense"' in r.err

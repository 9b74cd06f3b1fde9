"""The CLI's edges: parsing, help, and ONE error line with a non-zero exit code.

Nothing here reaches a controller: the address is a unix socket that does
not exist, so connection failures are immediate and local.
"""

from __future__ import annotations

import io
import json
import pathlib

import pytest

from cowpod.cli.main import build_parser, main, parse_args

ROOT = pathlib.Path(__file__).resolve().parents[3]


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def error_lines(self) -> list[str]:
        return self.err.strip().splitlines()


@pytest.fixture
def cli(tmp_path: pathlib.Path) -> object:
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}
    nowhere = f"unix://{tmp_path}/nope.sock"

    def run(*args: str, stdin: str = "", controller: bool = True) -> Run:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--controller", nowhere] if controller else list(args)
        code = main(argv, env=env, stdout=out, stderr=err, stdin=io.StringIO(stdin))
        return Run(code, out.getvalue(), err.getvalue())

    run.nowhere = nowhere  # type: ignore[attr-defined]
    return run


def test_help_teaches_with_examples(cli: object) -> None:
    r = cli("--help", controller=False)  # type: ignore[operator]
    assert r.code == 0
    assert "getting started:" in r.out and "cowpod apply -f examples/hello.yaml" in r.out


VERBS = [
    "up",
    "down",
    "status",
    "apply",
    "create",
    "get",
    "describe",
    "delete",
    "logs",
    "exec",
    "wait",
    "cordon",
    "uncordon",
    "vm",
    "version",
]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_examples(cli: object, verb: str) -> None:
    r = cli(verb, "--help", controller=False)  # type: ignore[operator]
    assert r.code == 0
    assert "examples:" in r.out
    assert f"cowpod {verb}" in r.out


def test_no_verb_prints_help(cli: object) -> None:
    r = cli(controller=False)  # type: ignore[operator]
    assert r.code == 0 and "usage: cowpod" in r.out


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["gett", "pods"], 2, 'unknown verb "gett" (did you mean "get"?)'),
        (["get", "podz"], 2, 'unknown resource type "podz"'),
        (["get"], 2, "required: TYPE"),
        (["get", "pods", "-o", "xml"], 2, 'unknown output format "xml"'),
        (["describe", "pod", "web", "-l", "app=web"], 2, "give names or a selector (-l), not both"),
        (["delete", "pod"], 2, "name the pod to delete"),
        (["delete"], 2, "say what to delete"),
        (["exec", "web"], 2, "say which command to run"),
        (["wait", "pod", "web", "--for", "ready"], 2, 'unsupported --for "ready"'),
        (["wait", "pod", "web", "--for", "phase=Running", "--timeout", "soon"], 2, "invalid duration"),
        (["logs"], 2, "name a pod or select pods with -l"),
        (["vm"], 2, "required: VERB"),
        (["vm", "clone", "vm-1", "--count", "0"], 2, "--count must be at least 1"),
        (["up", "--vm-cpus", "lots"], 2, "--vm-cpus: 'lots' is not a quantity"),
        (["up", "--vm-memory", "1GB"], 2, "--vm-memory"),
        (["up", "--provider", "vmware"], 2, 'unknown --provider "vmware"'),
        (["up", "--provider", "none", "--vms", "2"], 1, "--vms needs a VM provider"),
        (["up", "--listen", "nowhere"], 1, "--listen must be HOST:PORT"),
    ],
)
def test_errors_are_one_line_with_exit_code(cli: object, args: list[str], code: int, words: str) -> None:
    r = cli(*args)  # type: ignore[operator]
    assert r.code == code, r.err
    assert len(r.error_lines) == 1, r.err
    assert r.error_lines[0].startswith("error: ")
    assert words in r.error_lines[0]
    assert "Traceback" not in r.err


def test_unreachable_controller_is_explained(cli: object) -> None:
    r = cli("get", "pods")  # type: ignore[operator]
    assert r.code == 1
    assert r.error_lines == [
        f"error: cannot reach the controller at {cli.nowhere}: is the cluster up? (`cowpod up`)"  # type: ignore[attr-defined]
    ]


def test_debug_adds_the_traceback(cli: object) -> None:
    r = cli("get", "pods", "--debug")  # type: ignore[operator]
    assert r.code == 1
    assert "Traceback" in r.err
    assert r.err.strip().splitlines()[-1].startswith("error: cannot reach the controller")


def test_global_options_work_after_the_verb(cli: object) -> None:
    r = cli("describe", "pod", "web", "-n", "kube-system")  # type: ignore[operator]
    assert r.code == 1 and "cannot reach the controller" in r.err


def test_bad_manifest_is_reported_before_anything_is_sent(cli: object, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ok-one}\nspec:\n  containers: [{name: a, image: b}]\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: bad-one}\nspec:\n"
        "  containers: [{name: a, imagee: x}]\n"
    )
    r = cli("apply", "-f", str(bad))  # type: ignore[operator]
    assert r.code == 1
    assert r.error_lines == [
        f'error: {bad}: document 2: spec.containers[0].imagee: unknown field (did you mean "image"?)'
    ]
    assert r.out == ""  # the good first document was not sent either (that would need the controller)


def test_missing_file(cli: object, tmp_path: pathlib.Path) -> None:
    r = cli("apply", "-f", str(tmp_path / "nope.yaml"))  # type: ignore[operator]
    assert r.code == 1 and r.error_lines == [f"error: {tmp_path / 'nope.yaml'}: no such file"]


def test_manifest_from_stdin(cli: object) -> None:
    r = cli("apply", "-f", "-", "--dry-run", stdin=(ROOT / "examples" / "hello.yaml").read_text())  # type: ignore[operator]
    assert r.code == 0, r.err
    assert r.out == "pod/hello checked (dry run)\n"


def test_examples_are_valid(cli: object) -> None:
    r = cli("apply", "-f", str(ROOT / "examples"), "--dry-run")  # type: ignore[operator]
    assert r.code == 0, r.err
    assert sorted(r.out.splitlines()) == [
        "configmap/game-demo checked (dry run)",
        "configmap/hello-web checked (dry run)",
        "daemonset/node-log checked (dry run)",
        "deployment/hello-web checked (dry run)",
        "deployment/web checked (dry run)",
        "job/count checked (dry run)",
        "namespace/team-a checked (dry run)",
        "pod/configmap-demo-pod checked (dry run)",
        "pod/critical-a checked (dry run)",
        "pod/critical-b checked (dry run)",
        "pod/hello checked (dry run)",
        "pod/kubelet-features checked (dry run)",
        "pod/placed checked (dry run)",
        "pod/secret-demo-pod checked (dry run)",
        "pod/secure-web checked (dry run)",
        "pod/team-a-hello checked (dry run)",
        "pod/two-containers checked (dry run)",
        "pod/web checked (dry run)",
        "priorityclass/critical-batch checked (dry run)",
        "replicaset/echo checked (dry run)",
        "secret/mysecret checked (dry run)",
        "service/hello-web checked (dry run)",
    ]


def test_namespace_clash_between_manifest_and_flag(cli: object, tmp_path: pathlib.Path) -> None:
    m = tmp_path / "ns.yaml"
    m.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: prod}\n"
        "spec: {containers: [{name: a, image: b}]}\n"
    )
    r = cli("apply", "-f", str(m), "-n", "dev", "--dry-run")  # type: ignore[operator]
    assert r.code == 2
    assert "does not match" in r.error_lines[0]


def test_status_without_a_cluster(cli: object, tmp_path: pathlib.Path) -> None:
    r = cli("status", controller=False)  # type: ignore[operator]
    assert r.code == 1
    assert r.error_lines == [
        f"error: cowpod is not running (no cluster.json in {tmp_path / 'data'}); start it with `cowpod up`"
    ]
    r = cli("status", "-o", "json", controller=False)  # type: ignore[operator]
    assert r.code == 1
    data = json.loads(r.out)
    assert data["components"] == [] and data["dataDir"] == str(tmp_path / "data")
    assert data["controller"] == "127.0.0.1:7070"


def test_down_without_a_cluster_is_fine(cli: object) -> None:
    r = cli("down", controller=False)  # type: ignore[operator]
    assert r.code == 0 and "not running" in r.out


def test_version_without_a_controller(cli: object) -> None:
    r = cli("version")  # type: ignore[operator]
    assert r.code == 0
    assert r.out.startswith("Client Version: v")
    assert "(not reachable)" in r.out
    assert cli("version", "--client").out.count("\n") == 1  # type: ignore[operator]


def test_exec_keeps_the_command_after_double_dash() -> None:
    args = parse_args(build_parser(), ["exec", "web", "-c", "side", "--", "ls", "-l", "/", "--", "-c"])
    assert args.command == ["ls", "-l", "/", "--", "-c"]
    assert args.container == "side"


def test_double_dash_elsewhere_is_an_error(cli: object) -> None:
    r = cli("get", "pods", "--", "x", controller=False)  # type: ignore[operator]
    assert r.code == 2 and "unexpected arguments after --: x" in r.err


def test_global_flags_before_and_after_the_verb() -> None:
    a = build_parser().parse_args(["-n", "x", "get", "pods"])
    b = build_parser().parse_args(["get", "pods", "-n", "x"])
    assert a.namespace == b.namespace == "x"


def test_apply_merge_keeps_what_others_set_and_drops_what_the_manifest_dropped() -> None:
    from cowpod.api.labels import LAST_APPLIED_ANNOTATION as LAST_APPLIED
    from cowpod.cli.commands.apply import merge
    from cowpod.v1 import node_pb2

    existing = node_pb2.Node()
    existing.metadata.name = "n1"
    existing.metadata.labels.update({"agent-label": "x", "old": "1", "keep": "a"})
    existing.metadata.annotations[LAST_APPLIED] = "{}"
    existing.spec.unschedulable = True
    existing.spec.provider_id = "docker://n1"  # set by the server: not in any manifest
    existing.spec.taints.add(key="old-taint", effect="NoSchedule")
    previous = {
        "metadata": {"labels": {"old": "1", "keep": "a"}},
        "spec": {"unschedulable": True, "taints": []},
    }
    desired = node_pb2.Node()
    desired.metadata.name = "n1"
    desired.metadata.labels.update({"keep": "b", "new": "2"})
    raw = {"metadata": {"name": "n1", "labels": {"keep": "b", "new": "2"}}, "spec": {"unschedulable": False}}
    merged = merge(existing, desired, raw, previous)
    assert dict(merged.metadata.labels) == {"agent-label": "x", "keep": "b", "new": "2"}
    assert merged.spec.unschedulable is False  # mentioned: set to the manifest's value
    assert merged.spec.provider_id == "docker://n1"  # never mentioned: kept
    assert not merged.spec.taints  # mentioned last time, not now: cleared


def test_up_rejects_a_bad_cluster_config_before_starting_anything(
    cli: object, tmp_path: pathlib.Path
) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("vmClasses:\n- {name: small, cpu: 1, memory: 8Q}\n")
    r = cli("up", "--cluster-config", str(bad), controller=False)  # type: ignore[operator]
    assert r.code == 2
    assert len(r.error_lines) == 1 and "vmClasses[0].memory" in r.err and "--cluster-config" in r.err
    assert not (tmp_path / "data" / "cluster.json").exists()


def test_up_accepts_the_example_cluster_config() -> None:
    from cowpod.cli.commands.cluster import up_options

    config = str(ROOT / "deploy" / "cluster.yaml")
    args = parse_args(build_parser(), ["up", "--cluster-config", config])
    assert up_options(args).cluster_config == config

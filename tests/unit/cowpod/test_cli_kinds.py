"""The CLI's one table of kinds (cowpod/cli/kinds.py): every manifest kind has an entry, the
verbs each kind takes follow its gRPC service, and `describe` of the kinds without a
describer of their own reads as kubectl's."""

from __future__ import annotations

import argparse
import io
import pathlib

import pytest

from cowpod.cli.describe import field_words
from cowpod.cli.kinds import ENTRIES, Related, all_kinds, entry
from cowpod.cli.main import main
from cowpod.manifest.kinds import (
    DEPLOYMENT,
    ENDPOINTS,
    EVENT,
    KINDS,
    LEASE,
    NODE,
    POD,
    PRIORITYCLASS,
    SECRET,
    VM,
    KindInfo,
)
from cowpod.v1 import config_pb2, meta_pb2, scheduling_pb2, service_pb2
from tests.unit.cowpod import builders
from tests.unit.cowpod.builders import T0

NOW = T0 + 65


def test_every_manifest_kind_has_one_entry() -> None:
    assert [e.info for e in ENTRIES] == list(KINDS)  # same kinds, same order as the manifest table
    assert all_kinds() == KINDS


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
async def test_each_entry_reaches_a_client_stub_and_a_proto_service(info: KindInfo) -> None:
    from cowpod.client import Client

    e = entry(info)
    assert "List" in e.rpcs  # every kind can be listed, so `get` takes them all
    async with Client("unix:///nonexistent.sock") as client:  # no call is made
        assert hasattr(client, e.client_attr)
    assert e.headers[0] in ("NAME", "LAST SEEN")


def test_verbs_follow_the_proto_services() -> None:
    assert entry(VM).delete_rpc == "Destroy"  # a VM's pods go with it
    assert entry(POD).delete_rpc == "Delete"
    assert entry(EVENT).delete_rpc is None and entry(ENDPOINTS).delete_rpc is None
    assert not entry(LEASE).can_watch and entry(PRIORITYCLASS).can_watch and entry(ENDPOINTS).can_watch
    assert not entry(VM).can_change and not entry(EVENT).can_change and not entry(ENDPOINTS).can_change
    assert entry(NODE).can_change and entry(SECRET).can_change
    assert not entry(EVENT).can_get_one and entry(ENDPOINTS).can_get_one


@pytest.mark.parametrize(("key", "words"), [("holderIdentity", "Holder Identity"), ("uid", "UID"),
                                            ("podIP", "Pod IP"), ("leaseDurationSeconds",
                                                                 "Lease Duration Seconds")])
def test_field_words(key: str, words: str) -> None:
    assert field_words(key) == words


def test_describe_lease_is_kubectls_generic_view() -> None:
    assert entry(LEASE).describe(builders.lease(), Related(), NOW) == (
        "Name:         vm-1\n"
        "Namespace:    cowpod-node-lease\n"
        "Labels:       <none>\n"
        "Annotations:  <none>\n"
        "API Version:  coordination.k8s.io/v1\n"
        "Kind:         Lease\n"
        "Metadata:\n"
        "  Resource Version:  3\n"
        "Spec:\n"
        "  Holder Identity:         vm-1\n"
        "  Lease Duration Seconds:  40\n"
        "  Renew Time:              2026-11-25T09:46:43Z\n"
        "Events:  <none>\n"
    )


def test_describe_event_names_its_object_and_source() -> None:
    text = entry(EVENT).describe(builders.event(count=3), Related(), NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["Name:", "hello.scheduled"]
    assert "Involved Object:" in lines
    assert "  Kind:       Pod" in lines and "  Name:       hello" in lines
    assert "Reason:   Scheduled" in lines
    assert "  Component:  default-scheduler" in lines
    assert any(line.split() == ["Count:", "3"] for line in lines)


def test_describe_endpoints_ready_and_not_ready_addresses() -> None:
    ep = service_pb2.Endpoints(
        metadata=meta_pb2.ObjectMeta(name="web", namespace="default", labels={"app": "web"}),
        subsets=[service_pb2.EndpointSubset(
            addresses=[service_pb2.EndpointAddress(ip=ip) for ip in ("10.0.0.2", "10.0.0.3")],
            not_ready_addresses=[service_pb2.EndpointAddress(ip="10.0.0.4")],
            ports=[service_pb2.EndpointPort(name="http", port=80, protocol="TCP")],
        )],
    )
    assert entry(ENDPOINTS).describe(ep, Related(), NOW) == (
        "Name:         web\n"
        "Namespace:    default\n"
        "Labels:       app=web\n"
        "Annotations:  <none>\n"
        "Subsets:\n"
        "  Addresses:          10.0.0.2,10.0.0.3\n"
        "  NotReadyAddresses:  10.0.0.4\n"
        "  Ports:\n"
        "    Name   Port   Protocol\n"
        "    ----   ----   --------\n"
        "    http   80     TCP\n"
        "\n"
        "Events:  <none>\n"
    )


def test_describe_priorityclass() -> None:
    pc = scheduling_pb2.PriorityClass(metadata=meta_pb2.ObjectMeta(name="high"), value=1000,
                                      preemption_policy="Never", description="the web tier")
    text = entry(PRIORITYCLASS).describe(pc, Related(events=[builders.event()]), NOW)
    assert text.splitlines()[:6] == [
        "Name:              high",
        "Value:             1000",
        "GlobalDefault:     false",
        "PreemptionPolicy:  Never",
        "Description:       the web tier",
        "Annotations:       <none>",
    ]
    assert "Scheduled" in text.splitlines()[-1]  # its events, as every describe shows them


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_every_kind_describes_a_bare_object_with_its_name(info: KindInfo) -> None:
    """A freshly created object (no status yet) describes without an error, name first."""
    ns = "default" if info.namespaced else ""
    obj = info.message(metadata=meta_pb2.ObjectMeta(name="x1", namespace=ns))
    text = entry(info).describe(obj, Related(), NOW)
    assert text.splitlines()[0].split() == ["Name:", "x1"]
    assert text.rstrip().splitlines()[-1].split()[0] == "Events:"


def test_describe_secret_never_shows_a_value_even_generically() -> None:
    s = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(name="db", namespace="default"),
                          data={"password": b"hunter2"})
    assert "hunter2" not in entry(SECRET).describe(s, Related(), NOW)


def test_deployment_describe_uses_its_replica_sets() -> None:
    assert entry(DEPLOYMENT).related == frozenset({"replica_sets"})
    assert entry(NODE).related == frozenset({"pods_on_node"})


# --- help: every verb lists the kinds it takes --------------------------------------------------


def _help(verb: str, tmp_path: pathlib.Path) -> str:
    out, err = io.StringIO(), io.StringIO()
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}
    assert main([verb, "--help"], env=env, stdout=out, stderr=err, stdin=io.StringIO()) == 0
    return " ".join(out.getvalue().split())


@pytest.mark.parametrize(("verb", "kinds"), [
    ("get", KINDS),
    ("describe", KINDS),
    ("wait", [k for k in KINDS if entry(k).can_get_one]),
    ("delete", [k for k in KINDS if entry(k).delete_rpc]),
    ("label", [k for k in KINDS if entry(k).can_change]),
    ("annotate", [k for k in KINDS if entry(k).can_change]),
    ("patch", [k for k in KINDS if entry(k).can_change]),
    ("edit", [k for k in KINDS if entry(k).can_change]),
])
def test_help_lists_the_kinds_the_verb_takes(verb: str, kinds: list[KindInfo],
                                             tmp_path: pathlib.Path) -> None:
    text = _help(verb, tmp_path)
    for k in kinds:
        assert k.plural in text, f"{verb} --help does not name {k.plural}"
    assert "examples:" in text


@pytest.mark.parametrize(("args", "words"), [
    (["delete", "event", "x"], "this command does not take events"),
    (["delete", "endpoints", "web"], "this command does not take endpoints"),
    (["label", "vm", "vm-1", "a=b"], "this command does not take vms"),
    (["patch", "ep", "web", "-p", "{}"], "this command does not take endpoints"),
    (["wait", "events", "x", "--for", "delete"], "this command does not take events"),
])
def test_a_verb_refuses_a_kind_it_cannot_act_on(args: list[str], words: str, tmp_path: pathlib.Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}
    code = main([*args, "--controller", f"unix://{tmp_path}/nope.sock"], env=env, stdout=out, stderr=err,
                stdin=io.StringIO())
    assert code == 2, err.getvalue()
    assert words in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1


# --- docs/cli.md's table of kinds and verbs is the code's ---------------------------------------

DOCS = pathlib.Path(__file__).resolve().parents[3] / "docs" / "cli.md"


def _docs_row(info: KindInfo) -> str:
    e = entry(info)

    def yes(b: object) -> str:
        return "yes" if b else "—"

    creatable = bool({"Create", "Register"} & e.rpcs)
    apply = "yes" if creatable and e.can_change else "create only" if creatable else "—"
    names = ", ".join(f"`{a}`" for a in info.aliases)
    return (f"| {info.kind} | {names} | yes | {yes(e.can_watch)} | yes | {yes(e.delete_rpc)} | "
            f"{yes(e.can_get_one)} | {yes(e.can_change)} | {apply} |")


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_docs_table_of_kinds_matches_the_code(info: KindInfo) -> None:
    lines = DOCS.read_text().splitlines()
    assert _docs_row(info) in lines, f"docs/cli.md: the row for {info.kind} should read\n{_docs_row(info)}"


def test_tables_from_the_entries() -> None:
    from cowpod.cli import output

    assert output.render_objects(LEASE, [builders.lease()], NOW, output=None, all_namespaces=True) == (
        "NAMESPACE           NAME   HOLDER   AGE\n"
        "cowpod-node-lease   vm-1   vm-1     <unknown>\n"
    )
    meta = meta_pb2.ObjectMeta(name="high", creation_timestamp=builders.ts(T0))
    pc = scheduling_pb2.PriorityClass(metadata=meta, value=1000)
    # Cluster-scoped: no NAMESPACE column even with -A; wide adds nothing to a kind without wide columns.
    assert output.render_objects(PRIORITYCLASS, [pc], NOW, output="wide", all_namespaces=True) == (
        "NAME   VALUE   GLOBAL-DEFAULT   AGE   PREEMPTIONPOLICY\n"
        "high   1000    false            65s   PreemptLowerPriority\n"
    )


Verbs = list[tuple[str, argparse.ArgumentParser]]


def _verbs(parser: argparse.ArgumentParser, prefix: str = "cowpod") -> Verbs:
    out: Verbs = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((f"{prefix} {name}", sub))
                out += _verbs(sub, f"{prefix} {name}")
    return out


def test_every_verb_and_sub_verb_has_examples_of_itself() -> None:
    from cowpod.cli.main import build_parser

    missing = [cmd for cmd, p in _verbs(build_parser()) if cmd not in (p.epilog or "")]
    assert not missing, f"--help without an example using it: {missing}"


def _run(tmp_path: pathlib.Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*args, "--controller", f"unix://{tmp_path}/nope.sock"], env=_env(tmp_path), stdout=out,
                stderr=err, stdin=io.StringIO())
    return code, out.getvalue(), err.getvalue()


def _env(tmp_path: pathlib.Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "data")}


def test_api_resources_needs_no_controller_and_shows_each_kinds_verbs(tmp_path: pathlib.Path) -> None:
    code, out, err = _run(tmp_path, "api-resources", "-o", "wide")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert out.splitlines()[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND", "VERBS"]
    assert set(rows) == {k.plural for k in KINDS}
    assert rows["endpoints"] == ["endpoints", "ep", "v1", "true", "Endpoints", "get,list,watch"]
    assert rows["leases"][-1] == "create,delete,get,list,patch,update"  # no watch
    assert rows["vms"][-1] == "create,delete,get,list,watch"  # no update: VMs do not change
    code, out, _ = _run(tmp_path, "api-resources", "--namespaced=false", "-o", "name")
    assert out.split() == ["namespaces", "nodes", "priorityclasses", "vms"]


def test_readiness_per_kind() -> None:
    """`apply --wait` waits for kinds that run something; configuration is there once created."""
    from cowpod.manifest.kinds import CONFIGMAP, SERVICE

    assert entry(CONFIGMAP).readiness is None and entry(SERVICE).readiness is None
    vm_readiness = entry(VM).readiness
    assert vm_readiness is not None
    assert vm_readiness(builders.vm(), builders.node(ready=True)).done
    assert not vm_readiness(builders.vm(), None).done  # its node has not registered
    pod_readiness = entry(POD).readiness
    assert pod_readiness is not None and pod_readiness(builders.pod(), None).done  # Succeeded

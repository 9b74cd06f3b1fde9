"""The docker provider's pure parts: container state -> VM state, the agent's argv, spec checks."""

from __future__ import annotations

import pathlib

import pytest

from cowpod.errors import Invalid
from hypervisor.bootstrap import guest_bootstrap
from hypervisor.guest import JoinBundle
from hypervisor.provider import VMSpecInfo, VMState
from hypervisor.providers.docker.provider import (
    DockerProvider,
    DockerProviderConfig,
    container_name,
    state_of,
    validate_spec,
    vm_container_prefix,
)


@pytest.mark.parametrize(("state", "expected"), [
    ({"Status": "running"}, VMState.RUNNING),
    ({"Status": "running", "Paused": True}, VMState.PAUSED),
    ({"Status": "paused", "Paused": True}, VMState.PAUSED),
    ({"Status": "created"}, VMState.CREATING),
    ({"Status": "exited", "ExitCode": 0}, VMState.STOPPED),
    ({"Status": "exited", "ExitCode": 137}, VMState.FAILED),
    ({"Status": "exited", "ExitCode": 0, "OOMKilled": True}, VMState.FAILED),
    ({"Status": "dead"}, VMState.FAILED),
])
def test_state_of(state: dict[str, object], expected: VMState) -> None:
    assert state_of({"State": state})[0] == expected


def test_failure_message_names_the_cause() -> None:
    assert state_of({"State": {"Status": "exited", "ExitCode": 3}})[1] == "exited with code 3"
    assert "out of memory" in state_of({"State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True}})[1]


def test_agent_argv_follows_the_process_contract(tmp_path: pathlib.Path) -> None:
    """The manager's bootstrap plus the docker provider's endpoints give the agent's command line."""
    p = DockerProvider(DockerProviderConfig(data_dir=pathlib.Path("/var/lib/cowpod")))
    spec = VMSpecInfo(name="vm-1", class_name="small", cpu_millis=500, memory_bytes=1 << 28,
                      node_labels={"zone": "a"}, template=True)
    argv = guest_bootstrap(p, spec).agent_argv()
    assert argv[-1] == "--insecure"
    argv = argv[:-1]
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "cowpod-agent"
    assert flags == {
        "--controller": "unix:///run/cowpod/controller.sock",
        "--node-name": "vm-1",
        "--vm-container": "cowpod-default-vm-1",
        "--listen": "unix:///run/cowpod/agents/vm-1.sock",
        "--advertise": "unix:///var/lib/cowpod/run/agents/vm-1.sock",
        "--labels": "cowpod.io/vm=vm-1,cowpod.io/class=small,cowpod.io/template=true,zone=a",
        # Pods share the VM's network: its agent answers their DNS on the VM's loopback.
        "--cluster-dns": "127.0.0.1:53",
        "--pod-files-dir": "/run/cowpod/pods/vm-1",
    }


@pytest.mark.parametrize(("spec", "field"), [
    (VMSpecInfo(name="Bad_Name", class_name="s", cpu_millis=1, memory_bytes=1 << 28), "metadata.name"),
    (VMSpecInfo(name="ok", class_name="s", cpu_millis=0, memory_bytes=1 << 28), "spec.cpuMillis"),
    (VMSpecInfo(name="ok", class_name="s", cpu_millis=1, memory_bytes=1024), "spec.memoryBytes"),
])
def test_validate_spec_names_the_field(spec: VMSpecInfo, field: str) -> None:
    with pytest.raises(Invalid) as err:
        validate_spec(spec)
    assert err.value.field == field


def test_a_secure_bootstrap_points_the_agent_at_the_join_bundle(tmp_path: pathlib.Path) -> None:
    bundle = (("ca.crt", "CA"), ("transport.crt", "C"), ("transport.key", "K"), ("bootstrap-token", "t\n"))
    for name, text in bundle:
        (tmp_path / name).write_text(text)
    p = DockerProvider(DockerProviderConfig(data_dir=tmp_path))
    guest = guest_bootstrap(p, VMSpecInfo(name="vm-2", class_name="s", cpu_millis=1, memory_bytes=1 << 28),
                            run_dir=tmp_path)
    assert guest.join == JoinBundle(ca_pem="CA", transport_cert_pem="C", transport_key_pem="K", token="t")
    argv = guest.agent_argv()
    assert argv[argv.index("--bootstrap-token-file") + 1] == "/run/cowpod/bootstrap-token"
    assert "--insecure" not in argv


def test_vm_container_names_carry_the_cluster() -> None:
    """Two clusters on one engine both have `vm-1`: the container name is the cluster's (kind's
    `<cluster>-control-plane` idea); a cluster id is made to fit Docker's name rule."""
    a = DockerProviderConfig(data_dir=pathlib.Path("/a"), cluster_id="cp-3f9a0c12de")
    b = DockerProviderConfig(data_dir=pathlib.Path("/b"), cluster_id="cp-77aa0c12de")
    assert container_name(a, "vm-1") == "cowpod-cp-3f9a0c12de-vm-1"
    assert container_name(a, "vm-1") != container_name(b, "vm-1")
    assert vm_container_prefix("my cluster/1") == "cowpod-my-cluster-1-"
    odd = DockerProviderConfig(data_dir=pathlib.Path("/c"), cluster_id="my cluster/1")
    assert container_name(odd, "vm-1") == "cowpod-my-cluster-1-vm-1"

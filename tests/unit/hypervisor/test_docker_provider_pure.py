"""The docker provider's pure parts: container state -> VM state, the agent's argv, spec checks."""

from __future__ import annotations

import pathlib

import pytest

from cowpod.errors import Invalid
from hypervisor.docker_provider import DockerProviderConfig, agent_argv, state_of, validate_spec
from hypervisor.provider import VMSpecInfo, VMState


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


def test_agent_argv_follows_the_process_contract() -> None:
    cfg = DockerProviderConfig(data_dir=pathlib.Path("/var/lib/cowpod"))
    spec = VMSpecInfo(name="vm-1", class_name="small", cpu_millis=500, memory_bytes=1 << 28,
                      node_labels={"zone": "a"}, template=True)
    argv = agent_argv(cfg, spec)
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "cowpod-agent"
    assert flags == {
        "--controller": "unix:///run/cowpod/controller.sock",
        "--node-name": "vm-1",
        "--vm-container": "cowpod-vm-vm-1",
        "--listen": "unix:///run/cowpod/agents/vm-1.sock",
        "--advertise": "unix:///var/lib/cowpod/run/agents/vm-1.sock",
        "--labels": "cowpod.io/vm=vm-1,cowpod.io/class=small,cowpod.io/template=true,zone=a",
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

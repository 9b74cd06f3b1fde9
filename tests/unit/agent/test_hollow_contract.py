"""The hollow agent against the real agent (#16): for the same VM, the node a hollow
agent registers carries the labels and taints production's node carries, so tests
and benches on hollow fleets take production's path.

Both sides start from the one guest bootstrap the VM manager builds for a VM
(`hypervisor.bootstrap.guest_bootstrap`). The real agent gets it as the command
line its guest runs (`GuestBootstrap.agent_argv`, parsed by the agent's own
parser); the hollow agent gets what the sim provider hands its agents for that
VM. The only difference allowed is the hollow marker label. Pure: no process,
no controller.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from agent.capacity import Resources
from agent.hollow import FleetAgents, HollowFleet, HollowNodeSpec, node_message
from agent.main import config_from_args, parser
from agent.node import NodeRegistrar
from cowpod.api.labels import (
    HOLLOW_LABEL,
    PARENT_TAINT_EFFECT,
    PARENT_TAINT_KEY,
    PARENT_TAINT_VALUE,
    TEMPLATE_LABEL,
)
from cowpod.clock import FakeClock, RealClock
from cowpod.v1 import node_pb2
from hypervisor.bootstrap import guest_bootstrap
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.provider import VMSpecInfo
from hypervisor.providers.sim import SimLatencies, SimProvider


class RecordingFleet:
    """Stands in for HollowFleet behind FleetAgents: keeps the specs it is given."""

    def __init__(self) -> None:
        self.specs: list[HollowNodeSpec] = []

    async def add(self, spec: HollowNodeSpec) -> node_pb2.Node:
        self.specs.append(spec)
        return node_message(spec, len(self.specs), 0.0)

    async def run(self) -> None:
        return None


def vm(template: bool) -> VMSpecInfo:
    return VMSpecInfo(
        name="small-7",
        class_name="small",
        cpu_millis=1000,
        memory_bytes=512 << 20,
        node_labels={"tier": "small", "example.com/team": "a"},
        template=template,
    )


def real_node(guest: GuestBootstrap) -> node_pb2.Node:
    """The node the real agent registers: from the agent command line its guest runs."""
    endpoints = GuestEndpoints(
        controller="unix:///run/cowpod/controller.sock",
        agent_listen="0.0.0.0:10250",
        agent_advertise="10.0.0.7:10250",
    )
    argv = dataclasses.replace(guest, endpoints=endpoints).agent_argv()
    cfg = config_from_args(parser().parse_args(argv[1:]))
    size = Resources(cpu_millis=1000, memory_bytes=512 << 20, pods=110)
    nm = NodeRegistrar(
        cfg,
        cast(Any, None),
        FakeClock(),
        capacity=size,
        allocatable=size,
        internal_ip="10.0.0.7",
        runtime_version="28.2.2",
    )
    return nm.node_object()


async def hollow_node(spec: VMSpecInfo) -> tuple[node_pb2.Node, GuestBootstrap]:
    """The node a hollow agent registers for the VM the sim provider makes from `spec`."""
    fleet = RecordingFleet()
    sim = SimProvider(
        clock=RealClock(),
        latencies=SimLatencies(full_clone=0.0),
        agents=FleetAgents(cast(HollowFleet, fleet)),
    )
    try:
        guest = guest_bootstrap(sim, spec)
        await sim.full_clone(spec, guest)
    finally:
        await sim.close()
    [hollow_spec] = fleet.specs
    return node_message(hollow_spec, 1, 0.0), guest


def taints(node: node_pb2.Node) -> list[tuple[str, str, str]]:
    return sorted((t.key, t.value, t.effect) for t in node.spec.taints)


@pytest.mark.parametrize("template", [False, True], ids=["vm", "warm-parent"])
async def test_a_hollow_node_registers_like_the_real_agent_of_the_same_vm(template: bool) -> None:
    hollow, guest = await hollow_node(vm(template))
    real = real_node(guest)
    assert hollow.metadata.name == real.metadata.name == "small-7"
    assert hollow.metadata.labels[HOLLOW_LABEL] == "true"
    hollow_labels = {k: v for k, v in hollow.metadata.labels.items() if k != HOLLOW_LABEL}
    assert hollow_labels == dict(real.metadata.labels)
    assert (TEMPLATE_LABEL in real.metadata.labels) is template
    # Taints: production's warm parent is tainted by the autoscaler (it pre-registers the
    # node; the agent adopts it and keeps its spec); the hollow agent registers it so.
    parent = [(PARENT_TAINT_KEY, PARENT_TAINT_VALUE, str(PARENT_TAINT_EFFECT))]
    assert taints(hollow) == taints(real) + (parent if template else [])

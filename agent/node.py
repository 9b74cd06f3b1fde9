"""The node object this agent stands for: registration with the real capacity,
and heartbeats that keep the node's lease alive.

Heartbeats go every `heartbeat_seconds` with ±10 % jitter (so a thousand
agents started together do not beat in step) on the injected clock. A
heartbeat answered NOT_FOUND means the node object was deleted: register
again.

A heartbeat renews the node's lease; it carries the node's status only when
the status changed (its lastHeartbeatTime aside), a heartbeat failed since the
last report (node lifecycle may have rewritten the Ready condition meanwhile),
the node is not ready, or `status_report_seconds` after the last report, as
kubelet posts status on change or every 5 minutes (`nodeStatusReportFrequency`)
beside its lease renewals: a status write costs the controller an etcd write
and an event to every node watcher, and in a big fleet nearly all of them would
change nothing. A not-ready node reports every beat because node lifecycle
sets Ready=True again when a lapsed lease is renewed, which a lease that lapsed
without a failed heartbeat (a frozen VM, a stalled loop) would leave standing
until the next due report; a ready node's report is what lifecycle restores.

Each heartbeat first asks the container runtime whether it answers. A node
whose engine is down cannot start or watch pods, so it reports Ready=False
(as kubelet does with "container runtime is down"); the scheduler then
skips it and node lifecycle taints it not-ready, instead of the node looking
healthy while nothing on it works.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import platform
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from importlib import metadata

from agent.config import AgentConfig
from agent.controlplane import ControlPlane
from agent.metrics import AgentMetrics
from agent.status import ts
from cowpod.api.labels import HOSTNAME_LABEL
from cowpod.api.resources import Resources
from cowpod.clock import Clock
from cowpod.v1 import meta_pb2, node_pb2

log = logging.getLogger(__name__)

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}
# How long the runtime may take to answer a health check before it counts as down.
RUNTIME_CHECK_TIMEOUT = 5.0


def registration_labels(node_name: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The labels a node registers with: kubelet's well-known ones for this machine,
    then the VM's own (its bootstrap's: VM, class, template, the spec's node labels).
    The hollow agent registers with the same (plus its marker), so a nodeSelector on
    `kubernetes.io/os` matches hollow fleets as it matches real ones."""
    return {
        HOSTNAME_LABEL: node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": _ARCH.get(platform.machine(), platform.machine()),
        **labels,
    }


def agent_version() -> str:
    try:
        return metadata.version("cowpod")
    except metadata.PackageNotFoundError:
        return "dev"


def os_image() -> str:
    try:
        for line in pathlib.Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def machine_id() -> str:
    for p in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return pathlib.Path(p).read_text().strip()
        except OSError:
            continue
    return ""


def host_ip() -> str:
    """This machine's address as others see it, without sending anything."""
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addr = str(info[4][0])
            if not addr.startswith("127."):
                return addr
    except OSError:
        pass
    return "127.0.0.1"


def resource_list(r: Resources) -> meta_pb2.ResourceList:
    return meta_pb2.ResourceList(
        cpu_millis=r.cpu_millis,
        memory_bytes=r.memory_bytes,
        pods=r.pods,
        ephemeral_storage_bytes=r.ephemeral_storage_bytes,
    )


class NodeRegistrar:
    def __init__(
        self,
        cfg: AgentConfig,
        cp: ControlPlane,
        clock: Clock,
        *,
        capacity: Resources,
        allocatable: Resources,
        internal_ip: str,
        runtime_version: str,
        provider_id: str = "",
        endpoint: str = "",
        metrics: AgentMetrics | None = None,
        runtime_check: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.runtime_check = runtime_check
        # Why the node is not ready ("" = it is), from the last runtime check.
        self.not_ready = ""
        self.cfg = cfg
        self.cp = cp
        self.clock = clock
        self.capacity = capacity
        self.allocatable = allocatable
        self.internal_ip = internal_ip
        self.runtime_version = runtime_version
        self.provider_id = provider_id
        self.endpoint = endpoint
        self.beats = 0
        self.node: node_pb2.Node | None = None
        # The last status a heartbeat delivered, less its heartbeat times, and when.
        self._reported: bytes | None = None
        self._reported_at = 0.0

    def ready_condition(self, now: float) -> meta_pb2.Condition:
        if self.not_ready:
            return meta_pb2.Condition(
                type="Ready", status="False", reason="AgentNotReady",
                message=self.not_ready, last_heartbeat_time=ts(now),
            )
        return meta_pb2.Condition(
            type="Ready", status="True", reason="AgentReady",
            message="cowpod agent is posting ready status", last_heartbeat_time=ts(now),
        )

    async def check_runtime(self) -> None:
        """Set `not_ready` from whether the container runtime answers now."""
        if self.runtime_check is None:
            return
        try:
            await asyncio.wait_for(self.runtime_check(), RUNTIME_CHECK_TIMEOUT)
            problem = ""
        except Exception as err:
            problem = f"container runtime is down: {err or type(err).__name__}"
        if problem and not self.not_ready:
            log.error("node %s not ready: %s", self.cfg.node_name, problem)
        elif self.not_ready and not problem:
            log.info("node %s ready again: the container runtime answers", self.cfg.node_name)
        self.not_ready = problem

    def status(self) -> node_pb2.NodeStatus:
        return node_pb2.NodeStatus(
            capacity=resource_list(self.capacity),
            allocatable=resource_list(self.allocatable),
            conditions=[self.ready_condition(self.clock.now())],
            addresses=[
                node_pb2.NodeAddress(type="InternalIP", address=self.internal_ip),
                node_pb2.NodeAddress(type="Hostname", address=socket.gethostname()),
            ],
            node_info=node_pb2.NodeSystemInfo(
                machine_id=machine_id(),
                kernel_version=platform.release(),
                os_image=os_image(),
                container_runtime_version=f"docker://{self.runtime_version}",
                agent_version=agent_version(),
                architecture=_ARCH.get(platform.machine(), platform.machine()),
                operating_system=(os.uname().sysname or "linux").lower(),
            ),
            daemon_endpoint=self.endpoint,
            phase="Running",
        )

    def node_object(self) -> node_pb2.Node:
        return node_pb2.Node(
            api_version="v1",
            kind="Node",
            metadata=meta_pb2.ObjectMeta(
                name=self.cfg.node_name,
                labels=registration_labels(self.cfg.node_name, self.cfg.labels),
            ),
            spec=node_pb2.NodeSpec(provider_id=self.provider_id),
            status=self.status(),
        )

    async def register(self) -> node_pb2.Node:
        self.node = await self.cp.register(self.node_object())
        log.info(
            "registered node %s: cpu %dm, memory %d bytes allocatable",
            self.cfg.node_name,
            self.allocatable.cpu_millis,
            self.allocatable.memory_bytes,
        )
        return self.node

    def status_to_report(self) -> tuple[node_pb2.NodeStatus | None, bytes]:
        """The status a heartbeat now carries (None: the last report still holds), and its
        comparison key (the status without its heartbeat times)."""
        status = self.status()
        key = node_pb2.NodeStatus()
        key.CopyFrom(status)
        for c in key.conditions:
            c.ClearField("last_heartbeat_time")
        seen = key.SerializeToString(deterministic=True)
        due = (self.not_ready != "" or seen != self._reported
               or self.clock.monotonic() - self._reported_at >= self.cfg.status_report_seconds)
        return (status if due else None), seen

    async def heartbeat_loop(self) -> None:
        period = self.cfg.heartbeat_seconds
        while True:
            await self.clock.sleep(period * random.uniform(0.9, 1.1))
            try:
                await self.check_runtime()
                status, seen = self.status_to_report()
                if not await self.cp.heartbeat(self.cfg.node_name, status):
                    log.warning("node %s unknown to the controller; registering again", self.cfg.node_name)
                    self._reported = None  # the new node object's status comes with the next beat
                    await self.register()
                elif status is not None:
                    self._reported, self._reported_at = seen, self.clock.monotonic()
                self.beats += 1
                if self.metrics is not None:
                    self.metrics.heartbeat(True)
            except Exception as err:
                log.warning("heartbeat failed: %s", err)
                # The lease may lapse meanwhile and node lifecycle rewrite the Ready condition
                # (Unknown, then True when the lease is renewed): the last report may no longer
                # be in the store, so the next beat that gets through carries the status.
                self._reported = None
                if self.metrics is not None:
                    self.metrics.heartbeat(False)

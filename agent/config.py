"""The agent's configuration: one frozen object built from the command line
(or by a test) and passed to every part; there is no global state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.hostpath import HostPathPrefix
from cowpod.backoff import Backoff
from cowpod.images import PAUSE_IMAGE


@dataclass(frozen=True)
class BackoffPolicy:
    """Crash-loop back-off, as kubelet does it: the first restart is
    immediate, then `initial` doubling up to `maximum`; a container that ran
    `reset_after` seconds before it died starts a fresh streak (10 s, 5 min,
    10 min by default; tests shrink them)."""

    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0

    def delay(self, streak: int) -> float:
        """Seconds between a crash and the restart that is the `streak`-th
        in a row: 0, initial, 2*initial, ... capped at maximum."""
        # The first restart is free: the n-th in a row waits what the (n-1)-th failure would.
        return Backoff(initial=self.initial, cap=self.maximum).delay(streak - 1)


# Enough for a JVM or a busy web server; far from the host's pid_max.
DEFAULT_PIDS_LIMIT = 1024
# Raw sockets let a pod forge packets on the VM's interface (ARP spoofing on the
# shared bridge): dropped, as in Kubernetes' restricted profile. Nothing adds it back.
DROPPED_CAPABILITIES = ("NET_RAW",)


@dataclass(frozen=True)
class AgentConfig:
    controller: str
    node_name: str
    listen: str = ""
    advertise: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    vm_container: str = ""
    reserve_cpu_millis: int = 100
    reserve_memory_bytes: int = 64 * 2**20
    # Disk kept back from pods' ephemeral-storage (images, the VM's own files).
    reserve_ephemeral_storage_bytes: int = 1 << 30
    # Where to measure ephemeral-storage: "" = the engine's data root if visible
    # here, else "/"; None = report none (the scheduler then does not check it).
    storage_path: str | None = ""
    max_pods: int = 110
    # Where this agent serves cluster DNS (agent/dns.py), host:port on the VM's loopback,
    # which pods sharing the VM's network reach; "" = pods keep the VM's resolvers.
    cluster_dns: str = ""
    # Where the agent writes files for pods' containers (their resolv.conf), one directory
    # per pod; inside a VM container it must be under one of the VM's bind mounts.
    pod_files_dir: str = "/run/cowpod/pods"
    # Processes and threads per container (a fork bomb stays in its container); 0 = no limit.
    pids_limit: int = DEFAULT_PIDS_LIMIT
    # hostPath volumes only under these (agent/hostpath.py); none by default.
    host_path_prefixes: tuple[HostPathPrefix, ...] = ()
    pause_image: str = PAUSE_IMAGE
    # Never contact a registry: a missing image is ErrImageNotFound at once.
    no_pull: bool = False
    heartbeat_seconds: float = 10.0
    # A heartbeat carries the node's status only when it changed (lastHeartbeatTime aside) or
    # this long after the last report, as kubelet's nodeStatusReportFrequency (5 min): the
    # lease says the node lives, and an unchanged status costs the controller a node write
    # and an event to every node watcher per heartbeat.
    status_report_seconds: float = 300.0
    # Each pod is re-reconciled at least this often even without events.
    resync_seconds: float = 10.0
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # Image pull failures back off like crashes (ImagePullBackOff).
    image_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    # Dead instances kept per container (for lastState and `logs --previous`).
    keep_dead_per_container: int = 1
    # Extra labels for every Docker object (tests add cowpod.test=1).
    extra_docker_labels: Mapping[str, str] = field(default_factory=dict)
    # Status writes: at most this many in flight and per second.
    status_concurrency: int = 4
    status_qps: float = 50.0
    docker_threads: int = 32
    # Container creates/starts at once, oldest pod first (agent/startgate.py).
    parallel_starts: int = 2
    # Paths read for capacity; tests point them at fixtures.
    cgroup_root: str = "/sys/fs/cgroup"
    proc_root: str = "/proc"
    # Serve Prometheus /metrics here (HOST:PORT, port 0 picks one); empty = not served.
    metrics_listen: str = ""

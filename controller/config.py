"""Controller configuration: one object, built from flags or by tests, passed down."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Any

from controller.encryption import EncryptionConfig
from controller.limits import Limits
from cowpod.auth.tokens import DEFAULT_TOKEN_TTL
from cowpod.clusterconfig import ClusterConfig
from cowpod.pki import TLSFiles


@dataclass
class ControllerConfig:
    listen: str = "127.0.0.1:7070"
    listen_unix: str = ""
    etcd: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    etcd_prefix: str = "/cowpod"
    etcd_timeout: float = 5.0
    # etcd with client-certificate authentication (--etcd-cafile/-certfile/-keyfile);
    # None = plaintext (an etcd that anyone reaching its port can read and write).
    etcd_tls: TLSFiles | None = None
    # etcd transactions in flight; writes issued meanwhile share one (controller/groupcommit.py).
    # One is best measured: every write issued during a round trip goes out in the next.
    etcd_group_commit: int = 1
    etcd_compaction_interval: float = 300.0  # 0 = never compact (another component does)
    # --encryption-config: encrypt these resources at rest (controller/encryption.py); None =
    # stored as they are. encryption_rewrite: store them all again with the first key at start.
    encryption: EncryptionConfig | None = None
    encryption_rewrite: bool = False
    # "none" or a name in hypervisor.registry; its settings as its plugin parsed them
    # (None = the provider's defaults).
    provider: str = "none"
    provider_settings: Any = None
    data_dir: pathlib.Path | None = None
    metrics_listen: str = ""  # host:port; empty = no metrics endpoint
    log_level: str = "info"
    node_monitor_grace: float = 40.0
    node_monitor_period: float = 5.0
    node_lease_seconds: int = 40
    health_period: float = 2.0
    watch_queue_size: int = 50_000
    watch_buffer_size: int = 20_000
    shutdown_grace: float = 2.0
    # Security (controller/auth): the cluster PKI directory (made by `cowpod up`; default
    # <data_dir>/pki when it exists). insecure=True serves plaintext with no authentication.
    pki_dir: pathlib.Path | None = None
    insecure: bool = False
    # Lifetime of admin/edit/view tokens created without --ttl (seconds; 0 = never expire).
    token_ttl: int = DEFAULT_TOKEN_TTL
    limits: Limits = field(default_factory=Limits)
    # --autoscale: the autoscaler's VM classes and bounds; None = no autoscaler.
    autoscaler: ClusterConfig | None = None
    # --parent-idle-pause: the autoscaler pauses a warm parent idle this long (0 = never).
    autoscaler_parent_idle_pause: float = 30.0
    # Eviction (controller/eviction.py): how long pods stay on an unreachable node when they
    # do not say (the default toleration of node.kubernetes.io/unreachable:NoExecute).
    pod_eviction_timeout: float = 300.0
    # The workload controllers (controller/replicaset.py, deployment.py, job.py, daemonset.py) run
    # in this process.
    replicaset_controller: bool = True
    replicaset_resync: float = 30.0

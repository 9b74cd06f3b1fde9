"""`cowpod-controller`: the API server. Flags are the process contract in the brief."""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal
import sys
import time
from typing import Any

from controller import encryption
from controller.autoscaler import flags as autoscaler_flags
from controller.config import ControllerConfig
from controller.server import ConfigError, Controller
from cowpod import clusterconfig
from cowpod.argtypes import whole_number
from cowpod.auth.tokens import DEFAULT_TOKEN_TTL
from cowpod.errors import Invalid
from cowpod.gctuning import tune_for_server
from cowpod.pki import TLSFiles
from hypervisor import registry


class LogfmtFormatter(logging.Formatter):
    """`ts=... level=info logger=controller.nodes msg="node n1 registered"`: greppable, parseable."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        msg = record.getMessage().replace("\\", "\\\\").replace('"', '\\"')
        line = f'ts={ts} level={record.levelname.lower()} logger={record.name} msg="{msg}"'
        if record.exc_info:
            exc = self.formatException(record.exc_info).replace("\n", "\\n").replace('"', '\\"')
            line += f' exc="{exc}"'
        return line


def parse_args(argv: list[str] | None = None) -> ControllerConfig:
    p = argparse.ArgumentParser(prog="cowpod-controller",
                                description="cowpod API server (gRPC, state in etcd)")
    p.add_argument("--listen", default="127.0.0.1:7070", help="TCP address to serve gRPC on (host:port)")
    p.add_argument("--listen-unix", default="", metavar="PATH", help="also serve on this unix socket")
    p.add_argument("--etcd", default="127.0.0.1:2379", help="etcd endpoints, HOST:PORT[,HOST:PORT]")
    p.add_argument("--etcd-cafile", type=pathlib.Path, default=None,
                   help="CA that signed the etcd members' certificates (TLS to etcd; with the next two)")
    p.add_argument("--etcd-certfile", type=pathlib.Path, default=None,
                   help="the controller's etcd client certificate (etcd runs with --client-cert-auth)")
    p.add_argument("--etcd-keyfile", type=pathlib.Path, default=None, help="its private key")
    p.add_argument("--etcd-prefix", default="/cowpod", help="key prefix for everything cowpod stores")
    p.add_argument("--etcd-timeout", type=float, default=5.0, help="deadline for each etcd request (s)")
    p.add_argument("--etcd-group-commit", type=int, default=1, metavar="N",
                   help="etcd transactions in flight at once; writes issued meanwhile are merged into "
                        "one transaction (0 = every write its own round trip)")
    p.add_argument("--etcd-compaction-interval", type=float, default=300.0, metavar="SECONDS",
                   help="compact etcd history to the revision seen this long ago (0 = never)")
    p.add_argument("--encryption-config", type=pathlib.Path, default=None, metavar="PATH",
                   help="encrypt Secrets (and/or ConfigMaps) in etcd: a Kubernetes-style "
                        "EncryptionConfiguration with aesgcm keys and identity (docs/security.md)")
    p.add_argument("--encryption-rewrite", action="store_true",
                   help="at start, store every object of the encrypted resources again, so all are "
                        "encrypted with the first key (after a rotation, before dropping the old key)")
    p.add_argument("--provider", default=None, choices=["none", *registry.names()],
                   help="run the VM manager in-process with this hypervisor provider (default: the "
                        "cluster config's `provider:`, else none); its settings come from that section")
    p.add_argument("--data-dir", type=pathlib.Path, default=None, help="the VM manager's data directory")
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT", help="serve Prometheus /metrics here")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--node-monitor-grace", type=float, default=40.0,
                   help="seconds without a heartbeat before a node is marked Ready=Unknown and tainted")
    p.add_argument("--node-monitor-period", type=float, default=5.0, help="node lifecycle pass interval (s)")
    p.add_argument("--node-lease-seconds", type=int, default=40, help="lease duration given to agents")
    p.add_argument("--watch-queue-size", type=whole_number(1), default=50_000, metavar="N",
                   help="events a watch stream may fall behind before it is closed (client relists)")
    p.add_argument("--watch-buffer-size", type=int, default=20_000, metavar="N",
                   help="recent events kept per kind so resuming watches need no etcd watch of their own")
    p.add_argument("--pki-dir", type=pathlib.Path, default=None,
                   help="cluster PKI made by `cowpod up` (CA, controller certificate); default DATA_DIR/pki")
    p.add_argument("--default-token-ttl", type=whole_number(0), default=DEFAULT_TOKEN_TTL, metavar="SECONDS",
                   help="lifetime of admin/edit/view tokens created without --ttl "
                        f"(default {DEFAULT_TOKEN_TTL // 86400} days; 0 = they never expire)")
    p.add_argument("--insecure", action="store_true",
                   help="plaintext gRPC, no authentication: every caller is admin (not for shared clusters)")
    p.add_argument("--pod-eviction-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long pods stay on an unreachable node unless they tolerate it otherwise")
    p.add_argument("--no-warm-clones", action="store_true",
                   help="docker provider: start an instant clone's agent cold instead of forking it "
                        "from the parent's warm zygote (slower; for debugging)")
    p.add_argument("--warm-shells", type=whole_number(0), default=None, metavar="N",
                   help="docker provider: child containers kept created ahead per warm parent, so an "
                        "instant clone only takes one (default 2; size it to your bursts; 0 = none)")
    p.add_argument("--no-replicaset-controller", action="store_true",
                   help="do not run the workload controllers (ReplicaSet, Deployment, Job, DaemonSet) "
                        "in this process")
    autoscaler_flags.add_flags(p)
    a = p.parse_args(argv)
    cluster = autoscaler_flags.cluster_config(p, a)
    provider, provider_settings = _provider(p, a)
    return ControllerConfig(
        listen=a.listen,
        listen_unix=a.listen_unix,
        etcd=[e for e in a.etcd.split(",") if e.strip()],
        etcd_prefix=a.etcd_prefix,
        etcd_timeout=a.etcd_timeout,
        etcd_tls=_etcd_tls(p, a),
        etcd_group_commit=a.etcd_group_commit,
        etcd_compaction_interval=a.etcd_compaction_interval,
        encryption=_encryption(p, a),
        encryption_rewrite=a.encryption_rewrite,
        provider=provider,
        provider_settings=provider_settings,
        data_dir=a.data_dir,
        metrics_listen=a.metrics_listen,
        log_level=a.log_level,
        node_monitor_grace=a.node_monitor_grace,
        node_monitor_period=a.node_monitor_period,
        node_lease_seconds=a.node_lease_seconds,
        watch_queue_size=a.watch_queue_size,
        watch_buffer_size=a.watch_buffer_size,
        pki_dir=a.pki_dir,
        insecure=a.insecure,
        token_ttl=a.default_token_ttl,
        autoscaler=cluster,
        autoscaler_parent_idle_pause=autoscaler_flags.parent_idle_pause(p, a, cluster),
        pod_eviction_timeout=a.pod_eviction_timeout,
        replicaset_controller=not a.no_replicaset_controller,
    )


def _etcd_tls(p: argparse.ArgumentParser, a: argparse.Namespace) -> TLSFiles | None:
    """All three etcd TLS files or none: half a TLS setup is a mistake worth stopping for."""
    given = [a.etcd_cafile, a.etcd_certfile, a.etcd_keyfile]
    if not any(given):
        return None
    if not all(given):
        p.error("--etcd-cafile, --etcd-certfile and --etcd-keyfile go together")
    return TLSFiles(a.etcd_cafile, a.etcd_certfile, a.etcd_keyfile)


def _encryption(p: argparse.ArgumentParser, a: argparse.Namespace) -> encryption.EncryptionConfig | None:
    """A bad encryption config stops the controller before it writes anything: a typo
    must not silently store Secrets unencrypted, or with a key nobody kept."""
    if a.encryption_config is None:
        if a.encryption_rewrite:
            p.error("--encryption-rewrite needs --encryption-config")
        return None
    try:
        return encryption.load(a.encryption_config)
    except Invalid as err:
        p.error(f"encryption config ({a.encryption_config}): {err}")


def _provider(p: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[str, Any]:
    """The provider's name and settings: `--cluster-config`'s `provider:` section,
    `--provider NAME` as its short form, the docker flags as overrides of its keys."""
    overrides: dict[str, Any] = {}
    if a.warm_shells is not None:
        overrides["warmShells"] = a.warm_shells
    if a.no_warm_clones:
        overrides["warmClones"] = False
    try:
        cc = clusterconfig.load(a.cluster_config) if a.cluster_config is not None else None
        return registry.resolve(a.provider, cc.provider if cc else "", cc.provider_settings if cc else None,
                                overrides)
    except Invalid as err:
        p.error(f"cluster config ({a.cluster_config}): {err}" if a.cluster_config else str(err))


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc").setLevel(logging.WARNING)


async def _serve(config: ControllerConfig) -> None:
    controller = Controller(config)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await controller.run()
    except asyncio.CancelledError:
        logging.getLogger("controller").info("shutting down on signal")


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    setup_logging(config.log_level)
    tune_for_server()
    try:
        asyncio.run(_serve(config))
    except ConfigError as err:
        logging.getLogger("controller").error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""`cowpod-agent`: the node agent's command line.

    cowpod-agent --controller ADDR --node-name NAME [--listen ADDR] [--advertise ADDR]
                 [--labels k=v,..] [--vm-container NAME] [--reserve-cpu 100m]
                 [--reserve-memory 64Mi] [--reserve-ephemeral-storage 1Gi]
                 [--storage-path DIR] [--allow-host-path PREFIX[:rw]] [--pause-image IMG] ...

`run(argv)` is the whole program without `sys.exit`, so a forked warm process
(an instant-cloned VM) can call it directly. Stopping the agent (SIGTERM,
SIGINT, even SIGKILL) never stops pods: a new agent adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import pathlib
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

from agent.config import DEFAULT_PIDS_LIMIT, AgentConfig, BackoffPolicy
from agent.controlplane import GrpcControlPlane
from agent.daemon import Agent
from agent.dns import ClusterDNS, upstreams_from
from agent.hostpath import HostPathPrefix
from agent.metrics import AgentMetrics
from agent.runtime_docker import DockerRuntime
from agent.server import serve
from cowpod.api.quantity import parse_cpu, parse_memory
from cowpod.argtypes import whole_number
from cowpod.auth.bootstrap import agent_connection, agent_serving_certificate
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.auth.flags import add_node_arguments, add_tls_arguments
from cowpod.auth.peer import PeerCheck, node_server_credentials
from cowpod.clock import RealClock
from cowpod.images import PAUSE_IMAGE
from cowpod.pki import CertKey

log = logging.getLogger("agent")


def parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise argparse.ArgumentTypeError(f"--labels: {part!r} is not key=value")
        out[k] = v
    return out


def _host_path_prefix(text: str) -> HostPathPrefix:
    try:
        return HostPathPrefix.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _cpu(text: str) -> int:
    try:
        return parse_cpu(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _mem(text: str) -> int:
    try:
        return parse_memory(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cowpod-agent", description="cowpod node agent: runs pods with Docker")
    p.add_argument("--controller", required=True, help="controller address: host:port or unix:///path")
    p.add_argument("--node-name", required=True)
    p.add_argument(
        "--listen", default="", help="serve AgentService (logs/exec) here: unix:///path or 127.0.0.1:port"
    )
    p.add_argument("--advertise", default="", help="the address the controller should use to reach --listen")
    p.add_argument("--labels", type=parse_labels, default={}, help="node labels: k=v,k2=v2")
    p.add_argument("--vm-container", default="", help="Docker container this agent's VM is; pods nest in it")
    p.add_argument("--reserve-cpu", type=_cpu, default=100, help="CPU kept back from pods (default 100m)")
    p.add_argument("--reserve-memory", type=_mem, default=64 * 2**20, help="memory kept back (default 64Mi)")
    p.add_argument(
        "--reserve-ephemeral-storage", type=_mem, default=1 << 30,
        help="disk kept back from pods' ephemeral-storage (default 1Gi)",
    )
    p.add_argument(
        "--storage-path", default="", metavar="DIR",
        help="measure ephemeral-storage on the disk of DIR (default: the engine's data root, else /)",
    )
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--cluster-dns", type=_dns_address, default="", metavar="HOST:53",
                   help="serve cluster DNS (Service names) here for the pods, which share the VM's "
                        "network; their resolv.conf points at HOST (e.g. 127.0.0.1:53; default off)")
    p.add_argument("--pod-files-dir", default="/run/cowpod/pods", metavar="DIR",
                   help="where the agent writes files for pods' containers (their resolv.conf); "
                        "in a VM container, under one of its bind mounts (default %(default)s)")
    p.add_argument(
        "--allow-host-path", action="append", type=_host_path_prefix, default=[], metavar="PREFIX[:rw]",
        help="allow hostPath volumes under PREFIX, read-only unless :rw (repeat; default: none)",
    )
    p.add_argument(
        "--pids-limit", type=whole_number(0), default=DEFAULT_PIDS_LIMIT, metavar="N",
        help=f"processes and threads per container (default {DEFAULT_PIDS_LIMIT}; 0 = no limit)",
    )
    p.add_argument("--pause-image", default=PAUSE_IMAGE)
    p.add_argument("--no-pull", action="store_true", help="never pull images (no registry)")
    p.add_argument("--heartbeat-seconds", type=float, default=10.0)
    p.add_argument("--status-report-seconds", type=float, default=300.0,
                   help="post the node status with a heartbeat when it changed or this long after "
                        "the last report (kubelet's nodeStatusReportFrequency); every heartbeat renews "
                        "the lease")
    p.add_argument("--resync-seconds", type=float, default=10.0)
    p.add_argument("--backoff-initial", type=float, default=10.0, help="crash back-off start (s)")
    p.add_argument("--backoff-max", type=float, default=300.0, help="crash back-off cap (s)")
    p.add_argument(
        "--docker-label", type=parse_labels, default={}, help="extra labels on every Docker object (k=v,..)"
    )
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    p.add_argument(
        "--parallel-starts",
        type=whole_number(1),
        default=2,
        help="container creates/starts at once, oldest pod first (default 2; the engine is CPU-bound)",
    )
    p.add_argument("--metrics-listen", default="", metavar="HOST:PORT", help="serve Prometheus /metrics here")
    p.add_argument("--log-level", default="info")
    # TLS to the controller and the node's identity (cowpod.auth): --ca-file, --cert-file/--key-file
    # (the join bundle's transport pair), --bootstrap-token-file, --cert-dir, or --insecure.
    add_tls_arguments(p)
    add_node_arguments(p)
    return p


def _dns_address(text: str) -> str:
    """HOST:53: a resolv.conf names a nameserver by address only, so the port is DNS's."""
    if not text:
        return text  # off, the default (argparse runs a string default through `type` too)
    host, _, port = text.rpartition(":")
    if not host or port != "53":
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:53 (resolv.conf cannot name another port)")
    return text


def config_from_args(ns: argparse.Namespace) -> AgentConfig:
    listen = ns.listen
    return AgentConfig(
        controller=ns.controller,
        node_name=ns.node_name,
        listen=listen,
        advertise=ns.advertise or listen,
        labels=ns.labels,
        vm_container=ns.vm_container,
        reserve_cpu_millis=ns.reserve_cpu,
        reserve_memory_bytes=ns.reserve_memory,
        reserve_ephemeral_storage_bytes=ns.reserve_ephemeral_storage,
        storage_path=ns.storage_path,
        max_pods=ns.max_pods,
        cluster_dns=ns.cluster_dns,
        pod_files_dir=ns.pod_files_dir,
        host_path_prefixes=tuple(ns.allow_host_path),
        pids_limit=ns.pids_limit,
        pause_image=ns.pause_image,
        no_pull=ns.no_pull,
        heartbeat_seconds=ns.heartbeat_seconds,
        status_report_seconds=ns.status_report_seconds,
        resync_seconds=ns.resync_seconds,
        backoff=BackoffPolicy(initial=ns.backoff_initial, maximum=ns.backoff_max),
        image_backoff=BackoffPolicy(initial=ns.backoff_initial, maximum=ns.backoff_max),
        extra_docker_labels=ns.docker_label,
        cgroup_root=ns.cgroup_root,
        metrics_listen=ns.metrics_listen,
        parallel_starts=ns.parallel_starts,
    )


async def run_agent(
    cfg: AgentConfig, connection: ConnectionSettings | None = None, serving: CertKey | None = None
) -> None:
    """Run until cancelled or until SIGTERM/SIGINT. `connection` None = plaintext to cfg.controller;
    `serving` is the node's serving certificate (None: logs/exec in plaintext)."""
    metrics = AgentMetrics()
    runtime = DockerRuntime(cfg.node_name, threads=cfg.docker_threads, metrics=metrics)
    client = connect(connection or ConnectionSettings(server=cfg.controller, insecure=True))
    serve_fn: Callable[[Agent], Awaitable[None]] = serve
    conn = connection
    if conn is not None and serving is not None and conn.ca_pem:
        # Logs/exec: TLS with the node's serving certificate, and only the controller may call.
        serve_fn = functools.partial(serve, credentials=node_server_credentials(serving, conn.ca_pem),
                                     interceptors=[PeerCheck()])
    dns = None
    if cfg.cluster_dns:
        upstream: list[str] = []
        with contextlib.suppress(OSError):
            vm_resolv = await asyncio.to_thread(pathlib.Path("/etc/resolv.conf").read_text)
            upstream = upstreams_from(vm_resolv, exclude=cfg.cluster_dns.rpartition(":")[0])
        dns = ClusterDNS(client.endpoints.Watch, cfg.cluster_dns, RealClock(), upstreams=upstream)
    agent = Agent(
        cfg, GrpcControlPlane(client), runtime, serve=serve_fn if cfg.listen else None, metrics=metrics,
        dns=dns,
    )
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, lambda: main_task.cancel() if main_task else None)
            installed.append(sig)
    try:
        await agent.run()
    except asyncio.CancelledError:
        log.info("agent %s stopping (pods keep running)", cfg.node_name)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await client.close()
        await runtime.close()


def run(argv: Sequence[str] | None = None) -> None:
    ns = parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(ns.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    cfg = config_from_args(ns)

    async def start() -> None:
        clock = RealClock()
        connection = await agent_connection(cfg.controller, ns, node_name=cfg.node_name, clock=clock)
        serving = await agent_serving_certificate(connection, ns, node_name=cfg.node_name, clock=clock)
        await run_agent(cfg, connection, serving)

    asyncio.run(start())


def main() -> None:
    try:
        run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

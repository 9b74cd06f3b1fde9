"""`cowpod-scheduler`: the scheduler process.

    cowpod-scheduler --controller 127.0.0.1:7070 [--config scheduler.yaml] [--leader-elect]
                     [--metrics-listen 127.0.0.1:10259] [--log-level info]

Watches nodes and pods through the controller (never etcd), decides, and
binds with conditional writes. With --leader-elect, several copies may run:
all keep warm caches, one schedules, and a standby takes over when the
leader's lease lapses (or at once when the leader shuts down cleanly).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cowpod.client import Client
from cowpod.clock import RealClock
from cowpod.errors import Invalid
from cowpod.informer import Informer
from cowpod.v1 import meta_pb2, node_pb2, pod_pb2
from scheduler.config import build_profile, load
from scheduler.leader import LeaderElector, LeadershipLost
from scheduler.metrics import Metrics, serve_http
from scheduler.plugins import PluginContext
from scheduler.scheduler import Scheduler

log = logging.getLogger("cowpod.scheduler")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="cowpod-scheduler", description=__doc__.split("\n\n")[0])
    p.add_argument("--controller", default="127.0.0.1:7070", help="host:port or unix:///path")
    p.add_argument("--config", default=None, help="scheduler.yaml (plugins, weights, queue, sampling)")
    p.add_argument("--leader-elect", action="store_true", help="run as one of several replicas")
    p.add_argument("--identity", default="", help="leader-election identity (default host_pid_random)")
    p.add_argument("--metrics-listen", default="", help="HOST:PORT for /metrics and /healthz")
    p.add_argument("--log-level", default="info")
    p.add_argument("--cprofile", default="", help="write cProfile stats here on exit (benchmarks)")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    cfg = load(args.config)
    clock = RealClock()
    identity = args.identity or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    async with Client(args.controller) as client:
        await client.wait_ready(timeout=60)
        profile = build_profile(cfg, PluginContext(client=client))
        metrics = Metrics()
        elector = LeaderElector(client, cfg.leader_election, identity, clock) if args.leader_elect else None
        sched = Scheduler(
            cfg,
            profile,
            client=client,
            clock=clock,
            metrics=metrics,
            is_leader=elector.is_leader if elector else (lambda: True),
        )
        synced = [asyncio.Event() for _ in range(3)]

        def on_synced(i: int) -> Callable[[], Awaitable[None]]:
            async def cb() -> None:
                synced[i].set()

            return cb

        node_inf: Informer[node_pb2.Node] = Informer(
            client.nodes.Watch, handler=sched.on_node, clock=clock, name="nodes", on_synced=on_synced(0)
        )
        pending_inf: Informer[pod_pb2.Pod] = Informer(
            client.pods.Watch,
            handler=sched.on_pod,
            clock=clock,
            name="pods-pending",
            on_synced=on_synced(1),
            list_options=meta_pb2.ListOptions(field_selector="spec.nodeName="),
        )
        assigned_inf: Informer[pod_pb2.Pod] = Informer(
            client.pods.Watch,
            handler=sched.on_pod,
            clock=clock,
            name="pods-assigned",
            on_synced=on_synced(2),
            list_options=meta_pb2.ListOptions(field_selector="spec.nodeName!="),
        )
        informers: list[tuple[str, Informer[Any]]] = [
            ("nodes", node_inf),
            ("pods-pending", pending_inf),
            ("pods-assigned", assigned_inf),
        ]
        try:
            async with asyncio.TaskGroup() as tg:
                for name, inf in informers:
                    tg.create_task(inf.run(), name=f"informer-{name}")
                if args.metrics_listen:
                    host, _, port = args.metrics_listen.rpartition(":")
                    tg.create_task(
                        serve_http(
                            host or "127.0.0.1", int(port), metrics, lambda: all(e.is_set() for e in synced)
                        ),
                        name="metrics",
                    )
                for e in synced:
                    await e.wait()
                log.info(
                    "caches synced: %d nodes, %d assigned pods, %d pending",
                    sched.cache.n,
                    sched.cache.pod_count(),
                    len(sched.queue),
                )
                if elector is not None:
                    await elector.acquire()
                    tg.create_task(elector.keep(), name="leader-renew")
                metrics.is_leader.set(1)
                tg.create_task(sched.run_scheduling(), name="schedule")
                for i in range(max(1, cfg.max_binds_in_flight)):
                    tg.create_task(sched.run_binder(), name=f"binder-{i}")
                tg.create_task(sched.run_status_writer(), name="status-writer")
        except* LeadershipLost as eg:
            raise eg.exceptions[0] from None
        finally:
            if elector is not None:
                await elector.release()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    prof = cProfile.Profile() if args.cprofile else None

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        await run(args)

    if prof is not None:
        prof.enable()
    code = 0
    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        pass
    except KeyboardInterrupt:
        pass
    except Invalid as err:
        print(f"cowpod-scheduler: config: {err}", file=sys.stderr)
        code = 2
    except LeadershipLost as err:
        log.error("%s; exiting", err)
        code = 1
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.cprofile)
    sys.exit(code)


if __name__ == "__main__":
    main()

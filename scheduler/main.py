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
from collections.abc import Sequence

from cowpod.auth.config import ConfigError
from cowpod.auth.credentials import connect
from cowpod.auth.flags import add_tls_arguments, settings_from_args
from cowpod.clock import RealClock
from cowpod.errors import Invalid
from cowpod.gctuning import tune_for_server
from scheduler.app import SchedulerApp
from scheduler.config import load
from scheduler.leader import LeadershipLost

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
    # TLS and identity (cowpod.auth): --ca-file/--cert-file/--key-file (CN=system:scheduler) or --insecure.
    add_tls_arguments(p)
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    cfg = load(args.config)
    clock = RealClock()
    identity = args.identity or f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        settings = settings_from_args(args.controller, args)
    except ConfigError as err:
        log.error("%s", err)
        raise SystemExit(2) from None
    async with connect(settings) as client:
        while True:  # a scheduler outlives controller restarts: wait as long as it takes
            try:
                await client.wait_ready(timeout=60)
                break
            except TimeoutError as err:
                log.warning("%s; still waiting", err)
        app = SchedulerApp(
            client,
            cfg,
            clock=clock,
            identity=identity,
            leader_elect=args.leader_elect,
            metrics_listen=args.metrics_listen,
        )
        await app.run()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tune_for_server()
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

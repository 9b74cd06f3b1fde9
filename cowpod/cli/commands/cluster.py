"""`cowpod up`, `down`, `status`: the local cluster (see cowpod.local.supervisor)."""

from __future__ import annotations

import argparse
import json
import pathlib

from cowpod import clusterconfig
from cowpod.api import quantity
from cowpod.auth.config import ConnectionSettings
from cowpod.auth.credentials import connect
from cowpod.cli import printers
from cowpod.cli.commands.common import Subparsers, add_command, parse_duration
from cowpod.cli.context import Ctx
from cowpod.cli.errors import CliError
from cowpod.cli.progress import Progress
from cowpod.cli.readiness import node_ready
from cowpod.errors import CowpodError
from cowpod.local.state import StateError, connection_for, read_state
from cowpod.local.supervisor import (
    DEFAULT_LISTEN,
    PROVIDERS,
    Layout,
    StatusReport,
    Supervisor,
    SupervisorError,
    UpOptions,
)
from cowpod.v1 import meta_pb2
from hypervisor import registry

UP_EXAMPLES = """
  cowpod up                             # etcd, controller, scheduler; Ctrl-C stops them all
  cowpod up --detach --vms 2            # in the background, with two 1-CPU 1Gi VMs (Docker)
  cowpod up -d --vms 1 --vm-cpus 2 --vm-memory 4Gi
  cowpod up -d --provider sim --vms 50  # hollow VMs: no Docker needed
  cowpod up -d --provider qemu --vms 1  # real Linux guests under QEMU (KVM, else TCG)
  cowpod up -d --cluster-config "$(deploy/vcsim/start.sh | tail -1)"   # vSphere (the simulator)
  cowpod up -d --etcd-members 3         # a 3-member etcd cluster (survives losing one member)
  cowpod up -d --cluster-config deploy/cluster.yaml   # autoscale: clone VMs for pending pods
  cowpod up -d --cluster-config deploy/cluster.yaml --warm-shells 5   # bursts of ~5 VMs at once
  cowpod up -d --data-dir /tmp/c2 --listen 127.0.0.1:7071   # a second cluster
"""

DOWN_EXAMPLES = """
  cowpod down                           # destroy the VMs, stop every component; keep the data
  cowpod down --purge                   # ... and delete the data dir
"""

STATUS_EXAMPLES = """
  cowpod status                         # each component: pid, address, healthy
  cowpod status -o json
"""


def add_parser(sub: Subparsers, parents: list[argparse.ArgumentParser]) -> None:
    up = add_command(
        sub,
        "up",
        parents,
        help="start a local cluster (etcd, controller, scheduler, VMs)",
        description="Start a local cluster: etcd (one member, or --etcd-members N), the controller and the "
        "scheduler as child processes with data and logs under the data dir, then --vms N VMs whose nodes "
        "it waits for.",
        examples=UP_EXAMPLES,
    )
    up.add_argument("-d", "--detach", action="store_true", help="start in the background and return")
    up.add_argument(
        "--vms", type=int, default=0, metavar="N", help="create N VMs (vm-1..vm-N) and wait for them"
    )
    up.add_argument("--vm-cpus", default="1", metavar="C", help="CPUs per VM, e.g. 1, 2, 500m (default 1)")
    up.add_argument("--vm-memory", default="1Gi", metavar="M", help="memory per VM, e.g. 1Gi (default)")
    up.add_argument(
        "--listen", default=DEFAULT_LISTEN, metavar="ADDR", help=f"controller address ({DEFAULT_LISTEN})"
    )
    up.add_argument(
        "--provider", choices=PROVIDERS, default=None,
        help="VM provider with its default settings (default: the cluster config's `provider:` section, "
        "else docker); " + "; ".join(f"{n}: {registry.REGISTRY[n].summary}" for n in PROVIDERS[1:]),
    )
    up.add_argument(
        "--etcd-members",
        type=int,
        default=1,
        metavar="N",
        help="etcd members to start on loopback: 1 (default), 3 or 5; the controller gets every endpoint",
    )
    up.add_argument(
        "--warm-shells",
        type=int,
        default=None,
        metavar="N",
        help="docker: VM containers kept made ahead per warm parent, so an instant clone only takes "
        "one (2; size it to the number of VMs a burst of pods needs at once; 0 = none; "
        "overrides the provider section's warmShells)",
    )
    up.add_argument(
        "--timeout",
        type=parse_duration,
        default=300.0,
        metavar="DURATION",
        help="how long to wait for the VMs' nodes (300s)",
    )
    up.add_argument(
        "--retain", action="store_true", help="keep a cluster that failed to come up, to debug it"
    )
    up.add_argument(
        "--cluster-config",
        metavar="FILE",
        help="VM classes and bounds (docs/autoscaler.md); turns the autoscaler on: pods that fit nowhere "
        "get VMs instant-cloned from each class's warm parent",
    )
    up.add_argument(
        "--secure",
        action="store_true",
        help="TLS and client certificates: the default (creates <data-dir>/pki; the CLI connects as admin)",
    )
    up.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext, no authentication: every caller is admin (only for throwaway local clusters)",
    )
    up.add_argument(
        "--secrets-encryption",
        action="store_true",
        help="encrypt Secrets in etcd with a key made once in <data-dir>/encryption.yaml (kept on from "
        "then on; docs/security.md)",
    )
    up.set_defaults(func=run_up)

    down = add_command(
        sub,
        "down",
        parents,
        help="stop the local cluster (destroying its VMs first)",
        description="Destroy every VM through the controller, stop the scheduler, controller and etcd, and "
        "remove any Docker container left with this cluster's label.",
        examples=DOWN_EXAMPLES,
    )
    down.add_argument("--purge", action="store_true",
                      help="also delete the data dir (etcd data, logs, certificates) and the "
                           "`local` context from your config")
    down.set_defaults(func=run_down)

    status = add_command(
        sub,
        "status",
        parents,
        help="show the local cluster's components and their health",
        description="Show each component of the local cluster with its pid, address and health.",
        examples=STATUS_EXAMPLES,
    )
    status.add_argument("-o", "--output", choices=("json",), help="json")
    status.set_defaults(func=run_status)


def _supervisor(ctx: Ctx, progress: Progress) -> Supervisor:
    def say(text: str) -> None:
        progress.done()
        ctx.err.write(text + "\n")
        ctx.err.flush()

    return Supervisor(
        Layout(ctx.config.data_dir),
        ctx.clock,
        say=say,
        progress=progress.update,
        progress_done=progress.done,
        env=dict(ctx.env),
    )


def up_options(args: argparse.Namespace) -> UpOptions:
    try:
        cpu = quantity.parse_cpu(args.vm_cpus)
    except quantity.QuantityError as e:
        raise CliError(f"--vm-cpus: {e}", exit_code=2) from None
    try:
        memory = quantity.parse_memory(args.vm_memory)
    except quantity.QuantityError as e:
        raise CliError(f"--vm-memory: {e}", exit_code=2) from None
    if args.warm_shells is not None and args.warm_shells < 0:
        raise CliError("--warm-shells: must not be negative", exit_code=2)
    cluster_config = ""
    cc: clusterconfig.ClusterConfig | None = None
    if args.cluster_config:
        path = pathlib.Path(args.cluster_config).resolve()
        try:
            cc = clusterconfig.load(path)
        except (OSError, ValueError, CowpodError) as e:
            raise CliError(f"--cluster-config: {e}", exit_code=2) from None
        cluster_config = str(path)
    # Neither --provider nor a `provider:` section: the embedded default.
    flag = args.provider or (None if cc is not None and cc.provider else "docker")
    overrides = {"warmShells": args.warm_shells} if args.warm_shells is not None else {}
    try:
        provider, settings = registry.resolve(
            flag, cc.provider if cc else "", cc.provider_settings if cc else None, overrides)
    except CowpodError as e:
        raise CliError(f"--cluster-config: {e}" if cc else str(e), exit_code=2) from None
    return UpOptions(
        cluster_config=cluster_config,
        autoscale=bool(cc and cc.vm_classes),
        listen=args.listen,
        provider=provider,
        provider_settings=settings,
        vms=args.vms,
        vm_cpu_millis=cpu,
        vm_memory_bytes=memory,
        detach=args.detach,
        timeout=args.timeout,
        retain=args.retain,
        secure=not args.insecure,
        etcd_members=args.etcd_members,
        warm_shells=args.warm_shells,
        secrets_encryption=args.secrets_encryption,
    )


async def run_up(ctx: Ctx, args: argparse.Namespace) -> int:
    opts = up_options(args)
    progress = Progress(ctx.err)
    sup = _supervisor(ctx, progress)
    try:
        running = sup.running()
    except StateError as e:
        raise CliError(str(e)) from None
    if running is not None:
        ctx.print(
            f"cowpod is already running (controller {running.controller}, data in {running.data_dir}); "
            "`cowpod status` shows its health"
        )
        return 0
    try:
        state = await sup.up(opts)
    except SupervisorError as e:
        raise CliError(str(e)) from None
    progress.done()
    ctx.print(f"cowpod is up: cluster {state.cluster_id}, data in {state.data_dir}")
    rows = [[c.name, str(c.pid), c.address, c.log] for c in state.components]
    ctx.out.write(_indent(printers.render_table(["COMPONENT", "PID", "ADDRESS", "LOG"], rows)))
    if opts.vms:
        ctx.out.write(_indent(await _vm_table(state.controller, ctx)))
    ctx.print(f"controller: {state.controller}   try: cowpod get nodes")
    ctx.out.flush()
    if opts.detach:
        return 0
    ctx.print("running in the foreground: press Ctrl-C to stop the cluster")
    ctx.out.flush()
    code = await sup.serve(state)
    ctx.print("cowpod stopped")
    return code


def _settings(ctx: Ctx, controller: str) -> ConnectionSettings:
    state = read_state(ctx.config.data_dir)
    if state is None:
        return ConnectionSettings(server=controller, insecure=True)
    return connection_for(state, controller)


def _indent(text: str) -> str:
    return "".join("  " + line for line in text.splitlines(keepends=True))


async def _vm_table(controller: str, ctx: Ctx) -> str:
    async with connect(_settings(ctx, controller)) as client:
        vms = (await client.vms.List(meta_pb2.ListOptions(), timeout=10)).items
        nodes = {
            n.metadata.name: n for n in (await client.nodes.List(meta_pb2.ListOptions(), timeout=10)).items
        }
    rows = []
    for vm in sorted(vms, key=lambda v: v.metadata.name):
        node = nodes.get(vm.status.node_name)
        ready = "Ready" if node_ready(node) else "NotReady"
        size = (
            f"{quantity.format_cpu(vm.spec.cpu_millis)} CPU, {quantity.format_memory(vm.spec.memory_bytes)}"
        )
        rows.append(
            [vm.metadata.name, vm.status.phase or "Pending", vm.status.node_name or "<none>", ready, size]
        )
    return printers.render_table(["VM", "PHASE", "NODE", "NODE STATUS", "SIZE"], rows)


async def run_down(ctx: Ctx, args: argparse.Namespace) -> int:
    progress = Progress(ctx.err)
    sup = _supervisor(ctx, progress)
    try:
        stopped = await sup.down(purge=args.purge)
    except (SupervisorError, StateError) as e:
        raise CliError(str(e)) from None
    if not stopped:
        ctx.print(f"cowpod is not running (no cluster.json in {ctx.config.data_dir})")
        if args.purge:
            ctx.print("its data dir is deleted")
    elif args.purge:
        ctx.print("cowpod stopped and its data deleted")
    else:
        ctx.print(f"cowpod stopped (data kept in {ctx.config.data_dir}; `cowpod down --purge` deletes it)")
    return 0


async def run_status(ctx: Ctx, args: argparse.Namespace) -> int:
    sup = _supervisor(ctx, Progress(ctx.err, enabled=False))
    try:
        report = await sup.status()
    except StateError as e:
        raise CliError(str(e)) from None
    if report is None:
        if args.output == "json":
            empty = StatusReport(str(ctx.config.data_dir), ctx.config.controller)
            ctx.out.write(json.dumps(empty.to_json(), indent=2) + "\n")
            return 1
        raise CliError(
            f"cowpod is not running (no cluster.json in {ctx.config.data_dir}); start it with `cowpod up`"
        )
    vms = (
        await _vm_rows(ctx, report)
        if any(c.name == "controller" and c.healthy for c in report.components)
        else []
    )
    if args.output == "json":
        data = report.to_json()
        data["vms"] = [{"name": n, "phase": p, "node": nd, "nodeReady": r == "Ready"} for n, p, nd, r in vms]
        ctx.out.write(json.dumps(data, indent=2) + "\n")
        return 0 if report.healthy else 1
    ctx.print(f"cluster {report.cluster_id} (provider {report.provider}), data in {report.data_dir}")
    if report.etcd:
        ctx.print(f"etcd: {report.etcd}")
    rows = [
        [
            c.name,
            str(c.pid),
            c.address,
            "true" if c.healthy else ("false" if c.alive else "false (not running)"),
        ]
        for c in report.components
    ]
    ctx.out.write(printers.render_table(["NAME", "PID", "ADDRESS", "HEALTHY"], rows))
    if vms:
        ctx.out.write(
            "\n" + printers.render_table(["VM", "PHASE", "NODE", "NODE STATUS"], [list(v) for v in vms])
        )
    if not report.healthy:
        unhealthy = [c for c in report.components if not c.healthy]
        ctx.err.write("error: unhealthy: " + ", ".join(f"{c.name} (log: {c.log})" for c in unhealthy) + "\n")
        return 1
    return 0


async def _vm_rows(ctx: Ctx, report: StatusReport) -> list[tuple[str, str, str, str]]:
    try:
        async with connect(_settings(ctx, report.controller)) as client:
            vms = (await client.vms.List(meta_pb2.ListOptions(), timeout=5)).items
            nodes = {
                n.metadata.name: n for n in (await client.nodes.List(meta_pb2.ListOptions(), timeout=5)).items
            }
    except Exception:
        return []
    return [
        (
            vm.metadata.name,
            vm.status.phase or "Pending",
            vm.status.node_name or "<none>",
            "Ready" if node_ready(nodes.get(vm.status.node_name)) else "NotReady",
        )
        for vm in sorted(vms, key=lambda v: v.metadata.name)
    ]

"""The controller's autoscaler flags, kept here so `controller/main.py` needs two lines.

    cowpod-controller ... --autoscale --cluster-config cluster.yaml
                          [--max-vms 20] [--scale-down-unneeded 10m] [--parent-idle-pause 30s]

Flags override the file; without `--autoscale` the autoscaler does not run
(and the other flags are refused, so a typo does not silently do nothing).
"""

from __future__ import annotations

import argparse
import pathlib

from cowpod.clusterconfig import ClusterConfig, load, parse_duration
from cowpod.errors import Invalid

# The reconciler's default too (kept here so the flags need not import the informers).
DEFAULT_PARENT_IDLE_PAUSE_S = 30.0


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("autoscaler")
    g.add_argument("--autoscale", action="store_true",
                   help="run the autoscaler in this process (needs --cluster-config for VM classes)")
    g.add_argument("--cluster-config", type=pathlib.Path, default=None, metavar="PATH",
                   help="cluster config YAML: vmClasses, maxVMs, totals, cooldown, instantClones")
    g.add_argument("--max-vms", type=int, default=None, metavar="N",
                   help="most VMs in the cluster, parents and unmanaged VMs included (overrides maxVMs)")
    g.add_argument("--scale-down-unneeded", default=None, metavar="DURATION",
                   help="how long a clone is empty before it goes (10m; overrides scaleDownUnneeded)")
    g.add_argument("--parent-idle-pause", default=None, metavar="DURATION",
                   help="pause a warm parent no clone was asked of for this long (default 30s; "
                        "0 = never); clones still fork from a paused parent")


def cluster_config(p: argparse.ArgumentParser, args: argparse.Namespace) -> ClusterConfig | None:
    """The autoscaler's config from the flags, or None when --autoscale is off.
    Errors exit through `p.error` (status 2) naming the file field or flag."""
    if not args.autoscale:
        # --cluster-config alone is fine: its `provider:` section configures the VM manager.
        given = [f for f, v in (("--max-vms", args.max_vms),
                                ("--scale-down-unneeded", args.scale_down_unneeded),
                                ("--parent-idle-pause", args.parent_idle_pause)) if v is not None]
        if given:
            p.error(f"{', '.join(given)} given without --autoscale")
        return None
    try:
        cfg = load(args.cluster_config) if args.cluster_config else ClusterConfig()
        if args.max_vms is not None:
            if args.max_vms < 0:
                raise Invalid("--max-vms", "must not be negative")
            cfg = cfg.replace(max_vms=args.max_vms)
        if args.scale_down_unneeded is not None:
            cfg = cfg.replace(
                scale_down_unneeded_s=parse_duration(args.scale_down_unneeded, "--scale-down-unneeded")
            )
    except Invalid as err:
        where = f" ({args.cluster_config})" if args.cluster_config and not err.field.startswith("--") else ""
        p.error(f"cluster config{where}: {err}")
    if not cfg.vm_classes:
        p.error("--autoscale: the cluster config defines no vmClasses (use --cluster-config)")
    return cfg


def parent_idle_pause(
    p: argparse.ArgumentParser, args: argparse.Namespace, cfg: ClusterConfig | None = None
) -> float:
    """`--parent-idle-pause` in seconds, else the cluster config's `parentIdlePause`
    (default 30; 0 = never pause warm parents)."""
    if args.parent_idle_pause is None:
        return cfg.parent_idle_pause_s if cfg is not None else DEFAULT_PARENT_IDLE_PAUSE_S
    try:
        return parse_duration(args.parent_idle_pause, "--parent-idle-pause")
    except Invalid as err:
        p.error(str(err))

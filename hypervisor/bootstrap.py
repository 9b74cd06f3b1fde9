"""Each VM's guest bootstrap, built in one place for every provider.

The VM manager decides a VM's identity (node name, hostname, machine id,
labels), where its agent and the controller meet (asked of the provider) and
the join bundle (from the controller's run dir); providers only carry the
result into their guests. A fresh machine id per clone is what keeps a clone
from ever coming up as its parent."""

from __future__ import annotations

import pathlib
import uuid

from cowpod.errors import Unavailable
from hypervisor.guest import GuestBootstrap, JoinBundle, node_labels
from hypervisor.provider import Provider, VMSpecInfo


def guest_bootstrap(
    provider: Provider, spec: VMSpecInfo, *, run_dir: pathlib.Path | None = None, now: float = 0.0,
) -> GuestBootstrap:
    """`run_dir` is where the controller publishes its join bundle (`<data>/run`);
    without a CA there (or None) the guest joins an insecure cluster."""
    join = JoinBundle.load(run_dir) if run_dir is not None else None
    if join is not None and not join.token:
        raise Unavailable(f"the controller has not published a join token in {run_dir} yet")
    return GuestBootstrap(
        node_name=spec.name,
        hostname=spec.name,
        machine_id=uuid.uuid4().hex,
        labels=node_labels(spec.name, spec.class_name, spec.template, spec.node_labels),
        endpoints=provider.guest_endpoints(spec.name),
        join=join,
        issued_at=now,
    )

"""NodeRestriction: what a node may say about itself.

A node's certificate lets its agent register the Node and report its status
and heartbeat; nothing more about the Node object. Without this a compromised
agent (or a stolen node key) could drop its own taints, uncordon itself, or
give itself the labels admins use to steer sensitive workloads, and so pull
those workloads onto a machine the attacker owns. As with Kubernetes'
NodeRestriction admission plugin:

- `NodeService/Update` (spec: taints, `unschedulable`; labels; annotations) is
  for admins and the controller; a node never calls it (the authorizer).
- `NodeService/Register` creates or re-adopts the node with the agent's labels,
  its provider id and its status. It may not carry taints or `unschedulable`
  (those are kept from the stored Node on re-register anyway), nor any label
  under a reserved prefix: those are set by admins only, so a label such as
  `node-restriction.cowpod.io/pci=true` is one a workload can trust.
"""

from __future__ import annotations

from typing import Any

# Label key prefixes only admins and the controller set on Nodes.
RESERVED_LABEL_PREFIXES = ("node-restriction.cowpod.io/", "node-restriction.kubernetes.io/")


def is_reserved_label(key: str) -> bool:
    return key.startswith(RESERVED_LABEL_PREFIXES)


def register_violation(node: Any) -> str | None:
    """Why a node may not register itself as `node` (a Node message), or None."""
    reserved = sorted(k for k in node.metadata.labels if is_reserved_label(k))
    if reserved:
        return (f"labels under {' and '.join(RESERVED_LABEL_PREFIXES)} are set by admins only "
                f"(got {', '.join(reserved)})")
    if len(node.spec.taints):
        return "taints are set by admins and the controller, not by the node"
    if node.spec.unschedulable:
        return "cordoning (spec.unschedulable) is for admins and the controller, not the node"
    return None

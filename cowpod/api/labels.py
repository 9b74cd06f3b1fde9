"""Well-known labels, annotations and taints: one constant each.

A node label written by one process and read by another is a contract; two
spellings of it (the VM-class label once was `cowpod.io/class` on the nodes
and `cowpod.io/vm-class` in the autoscaler's predictions) make each side
silently miss the other. Standard library only: the QEMU guest's init, which
has nothing else, reads it through `hypervisor.guest`.
"""

from __future__ import annotations

import enum

# ---- node labels ---------------------------------------------------------------------------------

HOSTNAME_LABEL = "kubernetes.io/hostname"
"""Every node's own name, as kubelet sets it (the scheduler adds it when absent)."""

VM_LABEL = "cowpod.io/vm"
"""The VM a node runs in (set by every provider through the guest bootstrap)."""

CLASS_LABEL = "cowpod.io/class"
"""The VM class a node's VM was made from: set by every provider from the VM's
`spec.className`, and predicted by the autoscaler for the nodes it will add."""

TEMPLATE_LABEL = "cowpod.io/template"
"""On a warm parent's node ("true"): a VM that exists to be instant-cloned."""

HOLLOW_LABEL = "cowpod.io/hollow"
"""On a node of the sim provider's hollow agents ("true")."""

ROLE_LABEL = "cowpod.io/role"
"""A node's role, shown by `cowpod get nodes` in the ROLES column."""

# ---- object labels and annotations ------------------------------------------------------------------

AUTOSCALER_MANAGED_LABEL = "cowpod.io/autoscaler"
"""On a VM the autoscaler created ("true"): the only VMs it may scale down."""

NODE_SYSTEM_POD_LABEL = "cowpod.io/node-system"
"""On a pod ("true") that belongs to its node, not to a workload: it does not keep
an otherwise empty clone alive."""

SNAP_FREE_ANNOTATION = "cowpod.io/snap-free"
"""On a VM: "requested" asks the VM manager to snap a clone free of its parent."""

LAST_APPLIED_ANNOTATION = "cowpod.io/last-applied-configuration"
"""What `cowpod apply` last applied, for its three-way merge (kubectl's is the same idea)."""

CREATE_ID_ANNOTATION = "cowpod.io/create-id"
"""The client's idempotency key for a create that it may retry."""

# ---- workload labels and annotations (Deployments, Jobs, DaemonSets; Kubernetes' own names) --------

POD_TEMPLATE_HASH_LABEL = "pod-template-hash"
"""On a Deployment's ReplicaSets, their selectors and pods: the hash of the pod template."""

DEPLOYMENT_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
"""On a Deployment's ReplicaSets: the rollout revision the set's template is (`rollout history`)."""

CHANGE_CAUSE_ANNOTATION = "kubernetes.io/change-cause"
"""On a Deployment, copied to the ReplicaSet of each revision: why, shown by `rollout history`."""

RESTARTED_AT_ANNOTATION = "kubectl.kubernetes.io/restartedAt"
"""On a Deployment's pod template: `rollout restart` sets it to now, which is a new template."""

CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"
"""On a DaemonSet's pods: the hash of the template they were made from."""

JOB_CONTROLLER_UID_LABEL = "controller-uid"
JOB_NAME_LABEL = "job-name"
"""On a Job's selector and pods (also under `batch.kubernetes.io/`): which Job owns them."""

# ---- taints ---------------------------------------------------------------------------------------


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


NOT_READY_TAINT = "node.kubernetes.io/not-ready"
"""NoExecute, on a node whose agent reports NotReady (the node lifecycle controller's)."""
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
"""NoExecute, on a node whose agent stopped renewing its lease."""
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
"""NoSchedule, as a cordoned node counts for a pod that tolerates it (DaemonSet pods)."""
DISK_PRESSURE_TAINT = "node.kubernetes.io/disk-pressure"
MEMORY_PRESSURE_TAINT = "node.kubernetes.io/memory-pressure"
PID_PRESSURE_TAINT = "node.kubernetes.io/pid-pressure"

PARENT_TAINT_KEY = "cowpod.io/parent"
PARENT_TAINT_VALUE = "true"
PARENT_TAINT_EFFECT = TaintEffect.NO_SCHEDULE
"""The taint on a warm parent's node: it hosts no pods, it exists to be cloned.
The autoscaler puts it on its parents and the hollow agent on its template
nodes, so tests on hollow fleets take production's path."""

"""Pod and VM phases, and which of them are final.

`StrEnum`s, so a member *is* its string: `PodPhase.RUNNING == "Running"`, and
what is stored in etcd and sent on the wire stays the plain string it always
was. Compare a proto's `status.phase` (a `str`) with these directly.
"""

from __future__ import annotations

import enum


class PodPhase(enum.StrEnum):
    """Kubernetes' pod phases; "" (unset) is a pod no agent has reported on yet."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


TERMINAL_POD_PHASES: frozenset[str] = frozenset({PodPhase.SUCCEEDED, PodPhase.FAILED})
"""A pod in one of these has stopped for good: it holds no resources on its node,
no controller restarts it, and the agent only keeps its record until deletion."""


def is_terminal(phase: str) -> bool:
    """Whether a pod in `phase` has finished for good (Succeeded or Failed)."""
    return phase in TERMINAL_POD_PHASES


class VMPhase(enum.StrEnum):
    """A VM's lifecycle as the VM manager reports it; "" is a VM not yet picked up."""

    PENDING = "Pending"
    CREATING = "Creating"
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    DESTROYING = "Destroying"
    FAILED = "Failed"


CLONABLE_VM_PHASES: frozenset[str] = frozenset({VMPhase.RUNNING, VMPhase.PAUSED})
"""A VM can be an instant clone's parent only while its memory is live."""

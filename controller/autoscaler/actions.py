"""What the planner decides; the executor turns each into API calls.

Actions are values: a test compares the list `plan` returns with the list it
expects. Order matters and is kept by the executor: a node's Cordon comes
before its Drain, which comes before its ScaleDown, and a step that fails
stops the later steps for that node.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.autoscaler.model import PodRef
from cowpod.api.ids import ClassName, NodeName, VMName


@dataclass(frozen=True)
class ScaleUp:
    """Make `count` VMs of `vm_class`: instant clones of `parent`, or full clones when None."""

    vm_class: ClassName
    count: int
    parent: VMName | None
    for_pods: tuple[PodRef, ...]
    # "pending pods" or "below minimum": said in the event and the log.
    reason: str = "pending pods"


@dataclass(frozen=True)
class CreateParent:
    """Boot the class's warm parent (spec.template=true) by full clone."""

    vm_class: ClassName


@dataclass(frozen=True)
class TaintParent:
    """Put cowpod.io/parent=true:NoSchedule on a warm parent's node: it hosts no pods."""

    node: NodeName


@dataclass(frozen=True)
class PauseParent:
    """Quiesce an idle warm parent (spec.paused=true): it keeps its memory and
    disk and stays a clone source, but costs no CPU and its agent is frozen."""

    vm: VMName
    idle_for: float


@dataclass(frozen=True)
class Cordon:
    node: NodeName


@dataclass(frozen=True)
class Drain:
    """Evict what is left on the node (per-node system pods only, by construction)."""

    node: NodeName


@dataclass(frozen=True)
class ScaleDown:
    """Destroy the VM (its node and anything still on it go with it)."""

    vm: VMName
    reason: str
    # The VM's node, when the destroy ends a Cordon/Drain sequence that may abort.
    node: NodeName | None = None


@dataclass(frozen=True)
class Event:
    """An EventService record about one object, for `cowpod describe` and `get events`."""

    kind: str  # Pod | Node | VM
    namespace: str
    name: str
    reason: str  # TriggeredScaleUp | NotTriggerScaleUp | ScaleDown | ScaleUpFailed | ...
    message: str
    type: str = "Normal"  # Normal | Warning


Action = ScaleUp | CreateParent | TaintParent | PauseParent | Cordon | Drain | ScaleDown | Event

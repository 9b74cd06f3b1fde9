"""What the ReplicaSet planner asks for (`replicaset_plan.py`) and the executor does
(`replicaset_executor.py`): frozen values, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field

from cowpod.v1 import workload_pb2

# ---- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatePods:
    """Create `count` pods from the set's template."""

    rs: workload_pb2.ReplicaSet = field(hash=False, compare=False)
    namespace: str
    name: str
    count: int


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    uid: str
    rs_name: str
    rs_uid: str
    reason: str  # "surplus" | "terminal"


@dataclass(frozen=True)
class UpdateStatus:
    namespace: str
    name: str
    status: workload_pb2.ReplicaSetStatus = field(hash=False)


@dataclass(frozen=True)
class CollectOrphan:
    """Delete a pod whose controller ReplicaSet is gone (confirmed by a read first)."""

    namespace: str
    name: str
    uid: str
    owner_name: str
    owner_uid: str


Action = CreatePods | DeletePod | UpdateStatus | CollectOrphan


@dataclass(frozen=True)
class InFlight:
    """Creates and deletes of one set that the pod cache does not show yet."""

    creating: frozenset[str] = frozenset()  # pod names
    deleting: frozenset[str] = frozenset()  # pod uids

    @property
    def empty(self) -> bool:
        return not self.creating and not self.deleting


NOTHING_IN_FLIGHT = InFlight()

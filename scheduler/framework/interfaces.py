"""The extension points. A plugin is a small class with one job, named by its
`name`, enabled and weighted in the config file.

    queue sort  ->  filter (every node)  ->  score (feasible nodes)  ->  normalize  ->  bind
                          | no node fits                  (sum x weight, max, ties at random)
                          v
                     post filter (preemption: nominate a node, name the victims)

Filters and scores are pure and synchronous. The reference semantics is the
per-node method (`filter`, `score`): unit tests, diagnosis messages and
`scheduler.simulate.fits_on` call it. For speed a plugin may also answer for
every node at once:

- `static = True` means the answer depends only on the node's static info
  (labels, taints, cordon, readiness) and on `signature(pod)`; the framework
  then evaluates the per-node method once per signature and node generation
  and memoises the result, so a workload's pods pay for it once.
- `filter_batch` / `score_batch` return numpy arrays over the cache's rows;
  a test checks they agree with the per-node method.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from scheduler.framework.cache import BoolArray, Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.events import ClusterEvent
from scheduler.framework.status import Status
from scheduler.framework.types import NodeName, PodInfo

if TYPE_CHECKING:
    from scheduler.framework.queue import QueuedPod

MAX_NODE_SCORE = 100.0


class Plugin(abc.ABC):
    name: ClassVar[str]

    def events(self) -> Sequence[ClusterEvent]:
        """Cluster events that may make a pod this plugin rejected fit again."""
        return ()


class QueueSortPlugin(Plugin):
    @abc.abstractmethod
    def sort_key(self, qp: QueuedPod) -> tuple[float, ...]:
        """Smaller keys leave the active queue first."""


class FilterPlugin(Plugin):
    static: ClassVar[bool] = False

    def skip(self, pod: PodInfo) -> bool:
        """True when this plugin has nothing to say about `pod` (passes every node)."""
        return False

    def signature(self, pod: PodInfo) -> Hashable:
        """For static plugins: the part of the pod the answer depends on."""
        raise NotImplementedError(f"{self.name} is static but has no signature()")

    def pre_filter(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        """Compute cluster-wide facts once per cycle (into `state`) that `filter` needs."""

    @abc.abstractmethod
    def filter(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status: ...

    def filter_batch(self, state: CycleState, pod: PodInfo, cache: Cache) -> BoolArray | None:
        """Every row at once, or None to let the framework loop over `filter`."""
        return None


class ScorePlugin(Plugin):
    static: ClassVar[bool] = False

    def skip(self, pod: PodInfo) -> bool:
        return False

    def signature(self, pod: PodInfo) -> Hashable:
        raise NotImplementedError(f"{self.name} is static but has no signature()")

    def pre_score(self, state: CycleState, pod: PodInfo, cache: Cache) -> None:
        """Compute cluster-wide facts once per cycle (into `state`) that `score` needs."""

    @abc.abstractmethod
    def score(self, state: CycleState, pod: PodInfo, node: NodeView) -> float:
        """Higher is better; 0..100 unless `normalize` maps it there."""

    def score_batch(self, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray) -> FloatArray | None:
        return None

    def normalize(self, state: CycleState, pod: PodInfo, scores: FloatArray) -> FloatArray:
        return scores


def normalize_max(scores: FloatArray, *, reverse: bool = False) -> FloatArray:
    """Scale so the best node gets 100 (reverse: fewest counts best)."""
    hi = float(scores.max()) if len(scores) else 0.0
    if hi <= 0:
        return np.full(len(scores), MAX_NODE_SCORE if reverse else 0.0)
    out = scores * (MAX_NODE_SCORE / hi)
    return MAX_NODE_SCORE - out if reverse else out


@dataclass(frozen=True, slots=True)
class Plan:
    """One placement: the pod at the revision the decision was based on, and the node."""

    pod: PodInfo
    node: NodeName


@dataclass(frozen=True, slots=True)
class BindOutcome:
    plan: Plan
    ok: bool
    # grpc.StatusCode name when not ok: ABORTED (stale), NOT_FOUND (pod or node gone)...
    code: str = ""
    message: str = ""


class FilterHandle(Protocol):
    """What a post-filter may ask of the framework: run the profile's filters on a
    node as it would be (some pods removed), the way `Framework` runs them."""

    def prepare_filters(self, pod: PodInfo, cache: Cache) -> CycleState:
        """A fresh cycle state with every enabled filter's `pre_filter` done."""
        ...

    def static_feasible(self, pod: PodInfo, cache: Cache) -> BoolArray:
        """Per row: do the static filters (labels, taints, cordon, readiness) pass?
        Removing pods cannot change their answer."""
        ...

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        """Every enabled filter's per-node method, in order; the first failure."""
        ...


@dataclass(frozen=True, slots=True)
class Nomination:
    """A post-filter's answer: the pod should wait for `node`, once `victims` are gone.
    `CLEAR` (no node) says the pod should wait for no node in particular any more."""

    node: NodeName
    victims: tuple[PodInfo, ...]


CLEAR = Nomination(NodeName(""), ())


class PostFilterPlugin(Plugin):
    """Runs when a pod passed no node's filters (Kubernetes' PostFilter)."""

    @abc.abstractmethod
    def post_filter(self, pod: PodInfo, cache: Cache, handle: FilterHandle) -> Nomination | None:
        """A node the pod could use after some change, `CLEAR`, or None (nothing to say:
        the next post filter is asked). Pure: the scheduler commits the answer."""


class BindPlugin(Plugin):
    @abc.abstractmethod
    async def bind(self, plans: Sequence[Plan]) -> list[BindOutcome]:
        """Commit plans (conditional writes); one outcome per plan, in order."""

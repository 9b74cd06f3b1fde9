"""Runs the plugins of one profile for one pod: filter, score, pick.

Filtering looks at every node, as numpy masks (one per filter, ANDed) and
stops at the first filter that leaves no node. Scoring looks at a *sample* of
the feasible nodes, as kube-scheduler's percentageOfNodesToScore and Nomad's
limit iterator do: past a few hundred candidates a better score is rarely
worth the time. The sample starts where the last one ended, so every node gets
its turn. Ties among the best are broken at random.

When no node is left, the diagnosis walks the filters in order and, for every
node, takes the reasons of the first filter that rejected it; the message
counts them: "0/5 nodes are available: 3 Insufficient memory, 2 node(s) had
untolerated taint {dedicated: gpu}."
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scheduler.framework.cache import BoolArray, Cache, FloatArray, IntArray, NodeView
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import FilterPlugin, Nomination, PostFilterPlugin, ScorePlugin
from scheduler.framework.queue import WILDCARD_REJECTOR
from scheduler.framework.status import SUCCESS, Code, Status
from scheduler.framework.types import NodeName, PodInfo

MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_PERCENTAGE_TO_SCORE = 5


@dataclass(frozen=True)
class Diagnosis:
    """Why a pod fits nowhere: reason -> node count, and the plugins that said no."""

    total_nodes: int
    reasons: Counter[str] = field(default_factory=Counter)
    rejectors: frozenset[str] = frozenset()
    code: Code = Code.UNSCHEDULABLE

    def message(self) -> str:
        head = f"0/{self.total_nodes} nodes are available"
        if not self.reasons:
            return head + "."
        parts = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        return head + ": " + ", ".join(f"{n} {r}" for r, n in parts) + "."


@dataclass(frozen=True)
class ScheduleResult:
    node: NodeName | None
    diagnosis: Diagnosis | None = None
    feasible: int = 0
    scored: int = 0


@dataclass(frozen=True)
class WeightedScore:
    plugin: ScorePlugin
    weight: float


def nodes_to_score(total: int, percentage: int) -> int:
    """How many feasible nodes to score (kube-scheduler's adaptive rule when percentage is 0)."""
    if total < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return total
    pct = percentage
    if pct <= 0:
        pct = max(MIN_PERCENTAGE_TO_SCORE, 50 - total // 125)
    return max(MIN_FEASIBLE_NODES_TO_FIND, total * pct // 100)


class Framework:
    def __init__(
        self,
        filters: Sequence[FilterPlugin],
        scores: Sequence[WeightedScore],
        *,
        post_filters: Sequence[PostFilterPlugin] = (),
        percentage_of_nodes_to_score: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.filters = list(filters)
        self.scores = list(scores)
        self.post_filters = list(post_filters)
        self.percentage = percentage_of_nodes_to_score
        self._rng = rng or random.Random()
        self._next_start = 0

    # ---- filtering ---------------------------------------------------------------

    def _static_statuses(self, f: FilterPlugin, pod: PodInfo, cache: Cache) -> tuple[list[Status], BoolArray]:
        def compute() -> tuple[list[Status], BoolArray]:
            state = CycleState()
            sts = [f.filter(state, pod, s) for s in cache.states]
            return sts, np.fromiter((s.ok for s in sts), np.bool_, len(sts))

        return cache.memo(("filter", f.name, f.signature(pod)), compute)

    def _filter_mask(self, f: FilterPlugin, state: CycleState, pod: PodInfo, cache: Cache) -> BoolArray:
        if f.static:
            return self._static_statuses(f, pod, cache)[1]
        m = f.filter_batch(state, pod, cache)
        if m is not None:
            return m
        return np.fromiter((f.filter(state, pod, s).ok for s in cache.states), np.bool_, cache.n)

    def _node_status(
        self, f: FilterPlugin, state: CycleState, pod: PodInfo, cache: Cache, row: int
    ) -> Status:
        if f.static:
            return self._static_statuses(f, pod, cache)[0][row]
        return f.filter(state, pod, cache.states[row])

    def find_feasible(
        self, state: CycleState, pod: PodInfo, cache: Cache
    ) -> tuple[BoolArray, list[tuple[FilterPlugin, BoolArray]]]:
        mask = np.ones(cache.n, np.bool_)
        applied: list[tuple[FilterPlugin, BoolArray]] = []
        for f in self.filters:
            if f.skip(pod):
                continue
            if not f.static:
                f.pre_filter(state, pod, cache)
            m = self._filter_mask(f, state, pod, cache)
            applied.append((f, m))
            mask &= m
            if not mask.any():
                break
        return mask, applied

    def diagnose(
        self, state: CycleState, pod: PodInfo, cache: Cache, applied: list[tuple[FilterPlugin, BoolArray]]
    ) -> Diagnosis:
        if cache.n == 0:
            return Diagnosis(0, Counter(), frozenset({WILDCARD_REJECTOR}))
        remaining = np.ones(cache.n, np.bool_)
        reasons: Counter[str] = Counter()
        rejectors: set[str] = set()
        code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE
        for f, m in applied:
            failing = np.flatnonzero(remaining & ~m)
            if len(failing) == 0:
                continue
            rejectors.add(f.name)
            for row in failing.tolist():
                st = self._node_status(f, state, pod, cache, row)
                if st.ok:  # batch and per-node disagree: report it rather than hide it
                    st = Status.error(f"{f.name}: batch and per-node filters disagree")
                for r in st.reasons:
                    reasons[r] += 1
                if st.code == Code.UNSCHEDULABLE:
                    code = Code.UNSCHEDULABLE
            remaining &= m
        return Diagnosis(cache.n, reasons, frozenset(rejectors), code)

    # ---- for post filters (FilterHandle) ----------------------------------------

    def prepare_filters(self, pod: PodInfo, cache: Cache) -> CycleState:
        """`find_feasible` stops at the first filter that leaves no node, so later
        filters' `pre_filter` may not have run: a post filter gets a state where all did."""
        state = CycleState()
        for f in self.filters:
            if not f.static and not f.skip(pod):
                f.pre_filter(state, pod, cache)
        return state

    def static_feasible(self, pod: PodInfo, cache: Cache) -> BoolArray:
        mask = np.ones(cache.n, np.bool_)
        for f in self.filters:
            if f.static and not f.skip(pod):
                mask &= self._static_statuses(f, pod, cache)[1]
        return mask

    def run_filters(self, state: CycleState, pod: PodInfo, node: NodeView) -> Status:
        for f in self.filters:
            if f.skip(pod):
                continue
            st = f.filter(state, pod, node)
            if not st.ok:
                return st if st.plugin else st.with_plugin(f.name)
        return SUCCESS

    def post_filter(self, pod: PodInfo, cache: Cache) -> Nomination | None:
        """The first post filter's answer (Kubernetes runs them until one succeeds)."""
        for p in self.post_filters:
            got = p.post_filter(pod, cache, self)
            if got is not None:
                return got
        return None

    # ---- scoring -----------------------------------------------------------------

    def _sample(self, feasible: IntArray, total: int) -> IntArray:
        k = nodes_to_score(total, self.percentage)
        if len(feasible) <= k:
            return feasible
        start = int(np.searchsorted(feasible, self._next_start))
        rows = np.concatenate((feasible[start:], feasible[:start]))[:k]
        self._next_start = (int(rows[-1]) + 1) % max(total, 1)
        return rows

    def _score_rows(
        self, sc: ScorePlugin, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray
    ) -> FloatArray:
        if sc.static:

            def compute() -> FloatArray:
                st = CycleState()
                return np.fromiter((sc.score(st, pod, s) for s in cache.states), np.float64, cache.n)

            full: FloatArray = cache.memo(("score", sc.name, sc.signature(pod)), compute)
            return full[rows]
        out = sc.score_batch(state, pod, cache, rows)
        if out is not None:
            return out
        states = cache.states
        return np.fromiter((sc.score(state, pod, states[r]) for r in rows.tolist()), np.float64, len(rows))

    def score(self, state: CycleState, pod: PodInfo, cache: Cache, rows: IntArray) -> FloatArray:
        total = np.zeros(len(rows), np.float64)
        for ws in self.scores:
            if ws.plugin.skip(pod):
                continue
            if not ws.plugin.static:
                ws.plugin.pre_score(state, pod, cache)
            s = self._score_rows(ws.plugin, state, pod, cache, rows)
            total += ws.weight * ws.plugin.normalize(state, pod, s)
        return total

    # ---- one pod -----------------------------------------------------------------

    def schedule(self, pod: PodInfo, cache: Cache) -> ScheduleResult:
        state = CycleState()
        if cache.n == 0:
            return ScheduleResult(None, self.diagnose(state, pod, cache, []))
        mask, applied = self.find_feasible(state, pod, cache)
        feasible = np.flatnonzero(mask)
        if len(feasible) == 0:
            return ScheduleResult(None, self.diagnose(state, pod, cache, applied))
        rows = self._sample(feasible, cache.n)
        if len(rows) == 1 or not self.scores:
            pick = int(rows[self._rng.randrange(len(rows))]) if len(rows) > 1 else int(rows[0])
        else:
            total = self.score(state, pod, cache, rows)
            best = np.flatnonzero(total >= total.max() - 1e-9)
            pick = int(rows[best[self._rng.randrange(len(best))]])
        return ScheduleResult(cache.states[pick].info.name, feasible=len(feasible), scored=len(rows))

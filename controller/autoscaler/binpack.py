"""First-fit decreasing: how many fresh nodes would these pods need?

A `Bin` is one node's worth of room: a node that is coming (a VM in flight, a
node that just turned Ready) or one the planner is considering making. Pods
go in biggest first; each takes the first bin with room whose fit check says
yes. This is the Cluster Autoscaler's binpacking estimator in miniature,
and a good enough answer to an NP-hard question (FFD uses at most 11/9 of
the optimum plus one bin).

The fit predicate (labels, taints, "bigger than the node") is asked of the
scheduler once per pod group and bin kind; resources and host ports are
counted here, pod by pod.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controller.autoscaler.model import HostPort, PodView
from cowpod.api.resources import Resources

# A verdict reached this soon after a node turned Ready may not have seen it: the
# scheduler learns of the node through the API's watch a moment after the agent
# says Ready. Such pods still count on the node (at worst a legitimate refusal
# delays their scale-up until the next verdict or newNodeGrace).
VERDICT_LAG_S = 1.0


@dataclass
class Bin:
    name: str
    free: Resources
    # The key the fit cache is kept by: a class name or a node name.
    kind: str
    # When the node turned Ready; None for capacity still on its way. A Ready
    # node takes only pods the scheduler judged before it was Ready (give or take
    # VERDICT_LAG_S): a later "unschedulable" verdict already considered it.
    ready_since: float | None = None
    ports: set[HostPort] = field(default_factory=set)
    placed: list[PodView] = field(default_factory=list)

    def room_for(self, pod: PodView) -> bool:
        if self.ready_since is not None and (
            pod.unschedulable_since is None or pod.unschedulable_since >= self.ready_since + VERDICT_LAG_S
        ):
            return False
        return pod.requests.fits_in(self.free) and not (pod.host_ports & self.ports)

    def put(self, pod: PodView) -> None:
        self.free = self.free - pod.requests
        self.ports |= pod.host_ports
        self.placed.append(pod)


Feasible = Callable[[PodView, str], bool]
"""Would the pod pass the scheduler's filters on an empty node of this bin kind?"""


def decreasing(pods: Iterable[PodView]) -> list[PodView]:
    """Biggest first (cpu, then memory); name breaks ties so plans are deterministic."""
    return sorted(pods, key=lambda p: (-p.requests.cpu_millis, -p.requests.memory_bytes, p.ref))


def place(pods: Iterable[PodView], bins: list[Bin], feasible: Feasible) -> list[PodView]:
    """Put each pod in the first bin that takes it; return the pods no bin took."""
    left: list[PodView] = []
    for pod in decreasing(pods):
        for b in bins:
            if b.room_for(pod) and feasible(pod, b.kind):
                b.put(pod)
                break
        else:
            left.append(pod)
    return left


def pack_new(
    pods: Iterable[PodView],
    new_bin: Callable[[int], Bin],
    feasible: Feasible,
    limit: int,
) -> tuple[list[Bin], list[PodView]]:
    """Open fresh bins (at most `limit`) as first-fit decreasing needs them.

    Returns the bins opened (each with its pods) and the pods that did not go in."""
    bins: list[Bin] = []
    left: list[PodView] = []
    for pod in decreasing(pods):
        for b in bins:
            if b.room_for(pod):
                b.put(pod)
                break
        else:
            if len(bins) < limit:
                b = new_bin(len(bins))
                if feasible(pod, b.kind) and b.room_for(pod):
                    b.put(pod)
                    bins.append(b)
                    continue
            left.append(pod)
    return bins, left

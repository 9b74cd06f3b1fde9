"""The Deployment controller's pure plan, run against a tiny simulated ReplicaSet controller:
rolling updates never take availability below replicas - maxUnavailable nor the total above
replicas + maxSurge; Recreate empties the old set first; conditions; history; undo."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from controller.deployment import (
    HASH_LABEL,
    REVISION_ANNOTATION,
    CreateReplicaSet,
    DeleteReplicaSet,
    ScaleReplicaSet,
    SetRevision,
    UpdateDeploymentStatus,
    limits,
    plan_deployment,
    plan_orphan_sets,
    progress_deadline_in,
)
from controller.deployment_api import apply_defaults
from controller.resource import get_time
from cowpod.v1 import workload_pb2

NOW = 1_700_000_000.0


def make_deployment(replicas: int = 3, image: str = "web:1", surge: str = "", unavailable: str = "",
                    strategy: str = "") -> workload_pb2.Deployment:
    d = workload_pb2.Deployment()
    d.metadata.namespace, d.metadata.name, d.metadata.uid = "default", "web", "uid-d"
    d.metadata.generation = 1
    d.spec.replicas = replicas
    d.spec.template.metadata.labels["app"] = "web"
    d.spec.template.spec.containers.add(name="c", image=image)
    if strategy:
        d.spec.strategy.type = strategy
    if surge:
        d.spec.strategy.rolling_update.max_surge = surge
    if unavailable:
        d.spec.strategy.rolling_update.max_unavailable = unavailable
    apply_defaults(d)
    return d


class Cluster:
    """ReplicaSets whose pods become available one pass after they are asked for, and go at once."""

    def __init__(self) -> None:
        self.sets: dict[str, workload_pb2.ReplicaSet] = {}
        self.pending: dict[str, int] = {}

    def apply(self, d: workload_pb2.Deployment, actions: Sequence[object]) -> None:
        for a in actions:
            if isinstance(a, CreateReplicaSet):
                rs = workload_pb2.ReplicaSet()
                rs.CopyFrom(a.rs)
                rs.metadata.uid = f"uid-{a.name}"
                rs.metadata.generation = 1
                self.sets[a.name] = rs
            elif isinstance(a, ScaleReplicaSet):
                self.sets[a.name].spec.replicas = a.replicas
                self.sets[a.name].metadata.generation += 1
            elif isinstance(a, SetRevision):
                self.sets[a.name].metadata.annotations[REVISION_ANNOTATION] = str(a.revision)
            elif isinstance(a, DeleteReplicaSet):
                del self.sets[a.name]
            elif isinstance(a, UpdateDeploymentStatus):
                d.status.CopyFrom(a.status)

    def settle(self) -> None:
        """The ReplicaSet controller's pass: scale-downs land at once, scale-ups one pass later."""
        for rs in self.sets.values():
            st = rs.status
            if rs.spec.replicas < st.replicas:
                st.replicas = st.available_replicas = st.ready_replicas = rs.spec.replicas
            elif rs.spec.replicas > st.replicas:
                st.available_replicas = st.ready_replicas = st.replicas
                st.replicas = rs.spec.replicas
            else:
                st.available_replicas = st.ready_replicas = st.replicas
            st.observed_generation = rs.metadata.generation

    def available(self) -> int:
        return sum(rs.status.available_replicas for rs in self.sets.values())

    def total(self) -> int:
        return sum(rs.spec.replicas for rs in self.sets.values())


def roll(d: workload_pb2.Deployment, cluster: Cluster, passes: int = 40) -> list[tuple[int, int]]:
    """Run passes until nothing changes; (available, total spec) after each."""
    seen = []
    for i in range(passes):
        acts = plan_deployment(d, list(cluster.sets.values()), NOW + i)
        cluster.apply(d, acts)
        seen.append((cluster.available(), cluster.total()))
        cluster.settle()
        seen.append((cluster.available(), cluster.total()))
        if not acts:
            break
    return seen


def test_first_rollout_creates_a_hashed_set_with_all_replicas() -> None:
    d = make_deployment(replicas=3)
    [create, *_] = plan_deployment(d, [], NOW)
    assert isinstance(create, CreateReplicaSet)
    rs = create.rs
    h = rs.metadata.labels[HASH_LABEL]
    assert rs.metadata.name == f"web-{h}" and rs.spec.replicas == 3
    assert rs.spec.selector.match_labels[HASH_LABEL] == h
    assert rs.spec.template.metadata.labels[HASH_LABEL] == h
    assert rs.metadata.annotations[REVISION_ANNOTATION] == "1"
    assert rs.metadata.owner_references[0].uid == "uid-d"


@pytest.mark.parametrize(("replicas", "surge", "unavailable"), [
    (3, "1", "1"), (3, "0", "1"), (3, "1", "0"), (4, "25%", "25%"), (10, "30%", "10%"), (1, "1", "0"),
])
def test_rolling_update_keeps_availability_and_surge_bounds(replicas: int, surge: str, unavailable: str
                                                            ) -> None:
    d = make_deployment(replicas=replicas, surge=surge, unavailable=unavailable)
    cluster = Cluster()
    roll(d, cluster)
    assert cluster.available() == replicas
    d.spec.template.spec.containers[0].image = "web:2"
    d.metadata.generation += 1
    max_surge, max_unavailable = limits(d)
    seen = roll(d, cluster)
    assert len(seen) > 4  # it took several steps
    assert all(avail >= replicas - max_unavailable for avail, _ in seen), seen
    assert all(total <= replicas + max_surge for _, total in seen), seen
    new = [rs for rs in cluster.sets.values() if rs.spec.template.spec.containers[0].image == "web:2"]
    assert len(new) == 1 and new[0].status.available_replicas == replicas
    assert new[0].metadata.annotations[REVISION_ANNOTATION] == "2"
    assert all(rs.spec.replicas == 0 for rs in cluster.sets.values() if rs is not new[0])
    progressing = {c.type: c for c in d.status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("True", "NewReplicaSetAvailable")
    assert d.status.updated_replicas == replicas


def test_recreate_scales_old_to_zero_before_the_new_set() -> None:
    d = make_deployment(replicas=2, strategy="Recreate")
    cluster = Cluster()
    roll(d, cluster)
    d.spec.template.spec.containers[0].image = "web:2"
    acts = plan_deployment(d, list(cluster.sets.values()), NOW)
    creates = [a for a in acts if isinstance(a, CreateReplicaSet)]
    assert creates and creates[0].rs.spec.replicas == 0
    assert [a.replicas for a in acts if isinstance(a, ScaleReplicaSet)] == [0]
    cluster.apply(d, acts)
    # The old set still has active pods: the new one stays at 0.
    assert not any(isinstance(a, ScaleReplicaSet) and a.replicas > 0
                   for a in plan_deployment(d, list(cluster.sets.values()), NOW))
    cluster.settle()
    roll(d, cluster)
    assert cluster.available() == 2


def test_scale_without_a_rollout() -> None:
    d = make_deployment(replicas=2)
    cluster = Cluster()
    roll(d, cluster)
    d.spec.replicas = 5
    roll(d, cluster)
    assert cluster.available() == 5 and len(cluster.sets) == 1


def test_progress_deadline_exceeded_when_no_step_is_taken() -> None:
    d = make_deployment(replicas=2)
    d.spec.progress_deadline_seconds = 60
    cluster = Cluster()
    cluster.apply(d, plan_deployment(d, [], NOW))
    stuck = list(cluster.sets.values())  # its pods never become available
    cluster.apply(d, plan_deployment(d, stuck, NOW + 1))
    progressing = {c.type: c for c in d.status.conditions}["Progressing"]
    assert progressing.status == "True"
    assert plan_deployment(d, stuck, NOW + 30) == []  # nothing changed: no write
    cluster.apply(d, plan_deployment(d, stuck, NOW + 62))
    progressing = {c.type: c for c in d.status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    available = {c.type: c for c in d.status.conditions}["Available"]
    assert available.status == "False"
    assert get_time(progressing.last_transition_time) == NOW + 62


def test_a_rollout_in_progress_is_requeued_for_its_progress_deadline() -> None:
    d = make_deployment(replicas=2)
    d.spec.progress_deadline_seconds = 60
    cluster = Cluster()
    acts = plan_deployment(d, [], NOW)
    assert progress_deadline_in(d, acts, NOW) == 60  # from the status this plan writes
    cluster.apply(d, acts)
    stuck = list(cluster.sets.values())
    cluster.apply(d, plan_deployment(d, stuck, NOW + 1))  # its pods never become available
    assert progress_deadline_in(d, [], NOW + 30) == 30
    # At the moment it named, the plan sets the condition False; then nothing is running.
    acts = plan_deployment(d, stuck, NOW + 60)
    assert progress_deadline_in(d, acts, NOW + 60) is None
    cluster.apply(d, acts)
    progressing = {c.type: c for c in d.status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")


def test_no_progress_deadline_runs_once_complete_or_paused() -> None:
    d = make_deployment(replicas=2)
    cluster = Cluster()
    roll(d, cluster)
    assert progress_deadline_in(d, [], NOW) is None  # NewReplicaSetAvailable
    d.spec.template.spec.containers[0].image = "web:2"
    d.spec.paused = True
    acts = plan_deployment(d, list(cluster.sets.values()), NOW)
    assert progress_deadline_in(d, acts, NOW) is None


def test_revision_history_limit_and_undo() -> None:
    d = make_deployment(replicas=1)
    d.spec.revision_history_limit = 1
    cluster = Cluster()
    for image in ("web:1", "web:2", "web:3"):
        d.spec.template.spec.containers[0].image = image
        roll(d, cluster)
    images = sorted(rs.spec.template.spec.containers[0].image for rs in cluster.sets.values())
    assert images == ["web:2", "web:3"]  # web:1's empty set went beyond the limit
    # Undo: the template of revision 2 comes back; its set is reused and renumbered 4.
    d.spec.template.spec.containers[0].image = "web:2"
    acts = plan_deployment(d, list(cluster.sets.values()), NOW)
    assert any(isinstance(a, SetRevision) and a.revision == 4 for a in acts)
    assert not any(isinstance(a, CreateReplicaSet) for a in acts)


def test_sets_of_a_deleted_deployment_are_collected() -> None:
    rs = workload_pb2.ReplicaSet()
    rs.metadata.name, rs.metadata.uid = "web-abc", "uid-rs"
    rs.metadata.owner_references.add(kind="Deployment", name="web", uid="gone", controller=True)
    assert plan_orphan_sets([rs], {"uid-d"}) == [DeleteReplicaSet("web-abc", "uid-rs", "gone", "orphan")]
    assert plan_orphan_sets([rs], {"gone"}) == []


def test_steady_state_plans_nothing() -> None:
    d = make_deployment(replicas=2)
    cluster = Cluster()
    roll(d, cluster)
    assert plan_deployment(d, list(cluster.sets.values()), NOW + 1000) == []


def test_recreate_waits_for_terminating_old_pods() -> None:
    d = make_deployment(replicas=2, strategy="Recreate")
    cluster = Cluster()
    roll(d, cluster)
    [old] = cluster.sets
    d.spec.template.spec.containers[0].image = "web:2"
    cluster.apply(d, plan_deployment(d, list(cluster.sets.values()), NOW))
    cluster.settle()  # the old set's pods are no longer active, but one is still terminating
    acts = plan_deployment(d, list(cluster.sets.values()), NOW, old_pods={old})
    assert not any(isinstance(a, ScaleReplicaSet) and a.replicas > 0 for a in acts)
    acts = plan_deployment(d, list(cluster.sets.values()), NOW, old_pods=set())
    assert [a.replicas for a in acts if isinstance(a, ScaleReplicaSet)] == [2]

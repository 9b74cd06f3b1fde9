"""Who may touch Deployments, Jobs and DaemonSets: edit writes them (not their status), view
reads them, nodes and the scheduler neither."""

from __future__ import annotations

import pytest

from controller.auth.authorizer import authorize
from controller.auth.identity import Identity, Role

EDIT, VIEW = Identity("dev", Role.EDIT), Identity("ro", Role.VIEW)
NODE, SCHED = Identity("system:node:n1", Role.NODE, node_name="n1"), Identity("sched", Role.SCHEDULER)


@pytest.mark.parametrize(("who", "method", "allowed"), [
    (EDIT, "/cowpod.v1.DeploymentService/Create", True),
    (EDIT, "/cowpod.v1.DeploymentService/Scale", True),
    (EDIT, "/cowpod.v1.DeploymentService/UpdateStatus", False),
    (EDIT, "/cowpod.v1.JobService/Delete", True),
    (EDIT, "/cowpod.v1.JobService/UpdateStatus", False),
    (EDIT, "/cowpod.v1.DaemonSetService/Update", True),
    (VIEW, "/cowpod.v1.DeploymentService/Get", True),
    (VIEW, "/cowpod.v1.JobService/Watch", True),
    (VIEW, "/cowpod.v1.DaemonSetService/List", True),
    (VIEW, "/cowpod.v1.DeploymentService/Scale", False),
    (VIEW, "/cowpod.v1.JobService/Create", False),
    (NODE, "/cowpod.v1.DaemonSetService/List", False),
    (NODE, "/cowpod.v1.JobService/Create", False),
    (SCHED, "/cowpod.v1.DeploymentService/Get", False),
])
def test_workload_kinds(who: Identity, method: str, allowed: bool) -> None:
    assert authorize(who, method, None).allowed is allowed

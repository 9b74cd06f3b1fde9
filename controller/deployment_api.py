"""Deployments as stored objects: the kind, defaults, validation and update rules.

The controller that rolls ReplicaSets is `controller.deployment`; CRUD and the
servicer are the shared `controller.workload_api`.

Defaults and rules, as Kubernetes apps/v1 has them:
- `spec.replicas` absent -> 1; `revisionHistoryLimit` -> 10; `progressDeadlineSeconds` -> 600;
  `strategy.type` -> RollingUpdate with `maxSurge` and `maxUnavailable` 25%.
- `maxSurge` and `maxUnavailable` are whole numbers or percents and may not both be 0
  (the rollout could never take a step); `Recreate` takes no `rollingUpdate`.
- `progressDeadlineSeconds` must exceed `minReadySeconds`, or every rollout would time out.
- `spec.selector` empty -> the template's labels; it must match them and it is immutable.
- `spec.template.spec.restartPolicy` must be Always.
"""

from __future__ import annotations

from controller import validation, workload_api
from controller.kinds import Kind
from controller.labelselector import is_empty
from cowpod.errors import Invalid
from cowpod.v1 import workload_pb2

DEPLOYMENTS: Kind[workload_pb2.Deployment] = Kind(
    "deployments", "Deployment", "apps/v1", True, workload_pb2.Deployment, workload_pb2.DeploymentList,
    workload_pb2.DeploymentWatchEvent,
)

ROLLING_UPDATE = "RollingUpdate"
RECREATE = "Recreate"
DEFAULT_SURGE = "25%"
DEFAULT_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY = 10
DEFAULT_PROGRESS_DEADLINE = 600


def apply_defaults_spec(spec: workload_pb2.DeploymentSpec) -> None:
    if not spec.HasField("replicas"):
        spec.replicas = 1
    workload_api.default_selector(spec.selector, spec.template)
    if not spec.template.spec.restart_policy:
        spec.template.spec.restart_policy = "Always"
    if not spec.strategy.type:
        spec.strategy.type = ROLLING_UPDATE
    if spec.strategy.type == ROLLING_UPDATE:
        ru = spec.strategy.rolling_update
        if not ru.max_surge:
            ru.max_surge = DEFAULT_SURGE
        if not ru.max_unavailable:
            ru.max_unavailable = DEFAULT_UNAVAILABLE
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = DEFAULT_REVISION_HISTORY
    if not spec.HasField("progress_deadline_seconds"):
        spec.progress_deadline_seconds = DEFAULT_PROGRESS_DEADLINE


def apply_defaults(d: workload_pb2.Deployment) -> None:
    apply_defaults_spec(d.spec)


def validate_spec(errs: validation.Errors, spec: workload_pb2.DeploymentSpec) -> None:
    if spec.replicas < 0:
        errs.add("spec.replicas", f"must be greater than or equal to 0 (got {spec.replicas})")
    if spec.min_ready_seconds < 0:
        errs.add("spec.minReadySeconds", "must be greater than or equal to 0")
    if spec.revision_history_limit < 0:
        errs.add("spec.revisionHistoryLimit", "must be greater than or equal to 0")
    if spec.progress_deadline_seconds <= spec.min_ready_seconds:
        errs.add("spec.progressDeadlineSeconds",
                 f"must be greater than minReadySeconds ({spec.min_ready_seconds})")
    st = spec.strategy
    validation.one_of(errs, "spec.strategy.type", st.type, (ROLLING_UPDATE, RECREATE))
    if st.type == RECREATE and st.HasField("rolling_update"):
        errs.add("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'")
    if st.type == ROLLING_UPDATE:
        ru = st.rolling_update
        workload_api.check_rolling_update(errs, "spec.strategy.rollingUpdate", ru.max_surge,
                                          ru.max_unavailable)
    workload_api.template(errs, spec.selector, spec.template, kind="Deployment")


def validate(d: workload_pb2.Deployment) -> None:
    workload_api.check_object(d, validate_spec)


def merge(cur: workload_pb2.Deployment, req: workload_pb2.Deployment) -> workload_pb2.DeploymentSpec:
    spec = workload_pb2.DeploymentSpec()
    spec.CopyFrom(req.spec)
    if not spec.HasField("replicas"):
        spec.replicas = cur.spec.replicas
    if is_empty(spec.selector):
        spec.selector.CopyFrom(cur.spec.selector)
    apply_defaults_spec(spec)
    if spec.selector != cur.spec.selector:
        raise Invalid("spec.selector", "field is immutable: delete and recreate the Deployment")
    return spec

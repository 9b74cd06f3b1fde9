"""DaemonSets as stored objects: the kind, defaults, validation and update rules.

The controller that keeps one pod per matching node is `controller.daemonset`;
CRUD and the servicer are the shared `controller.workload_api`.

Defaults and rules, as Kubernetes apps/v1 has them:
- `updateStrategy.type` -> RollingUpdate with `maxUnavailable` 1 and `maxSurge` 0; the two may
  not both be 0; `OnDelete` takes no `rollingUpdate`.
- `spec.selector` empty -> the template's labels; it must match them and it is immutable.
- `spec.template.spec.restartPolicy` must be Always.
"""

from __future__ import annotations

from controller import validation, workload_api
from controller.kinds import Kind
from controller.labelselector import is_empty
from cowpod.errors import Invalid
from cowpod.v1 import workload_pb2

DAEMONSETS: Kind[workload_pb2.DaemonSet] = Kind(
    "daemonsets", "DaemonSet", "apps/v1", True, workload_pb2.DaemonSet, workload_pb2.DaemonSetList,
    workload_pb2.DaemonSetWatchEvent,
)

ROLLING_UPDATE = "RollingUpdate"
ON_DELETE = "OnDelete"
DEFAULT_UNAVAILABLE = "1"
DEFAULT_SURGE = "0"
DEFAULT_REVISION_HISTORY = 10


def apply_defaults_spec(spec: workload_pb2.DaemonSetSpec) -> None:
    workload_api.default_selector(spec.selector, spec.template)
    if not spec.template.spec.restart_policy:
        spec.template.spec.restart_policy = "Always"
    st = spec.update_strategy
    if not st.type:
        st.type = ROLLING_UPDATE
    if st.type == ROLLING_UPDATE:
        if not st.rolling_update.max_unavailable:
            st.rolling_update.max_unavailable = DEFAULT_UNAVAILABLE
        if not st.rolling_update.max_surge:
            st.rolling_update.max_surge = DEFAULT_SURGE
    if not spec.HasField("revision_history_limit"):
        spec.revision_history_limit = DEFAULT_REVISION_HISTORY


def apply_defaults(ds: workload_pb2.DaemonSet) -> None:
    apply_defaults_spec(ds.spec)


def validate_spec(errs: validation.Errors, spec: workload_pb2.DaemonSetSpec) -> None:
    if spec.min_ready_seconds < 0:
        errs.add("spec.minReadySeconds", "must be greater than or equal to 0")
    if spec.revision_history_limit < 0:
        errs.add("spec.revisionHistoryLimit", "must be greater than or equal to 0")
    st = spec.update_strategy
    validation.one_of(errs, "spec.updateStrategy.type", st.type, (ROLLING_UPDATE, ON_DELETE))
    if st.type == ON_DELETE and st.HasField("rolling_update"):
        errs.add("spec.updateStrategy.rollingUpdate", "may not be specified when `type` is 'OnDelete'")
    if st.type == ROLLING_UPDATE:
        ru = st.rolling_update
        workload_api.check_rolling_update(errs, "spec.updateStrategy.rollingUpdate", ru.max_surge,
                                          ru.max_unavailable)
    workload_api.template(errs, spec.selector, spec.template, kind="DaemonSet")


def validate(ds: workload_pb2.DaemonSet) -> None:
    workload_api.check_object(ds, validate_spec)


def merge(cur: workload_pb2.DaemonSet, req: workload_pb2.DaemonSet) -> workload_pb2.DaemonSetSpec:
    spec = workload_pb2.DaemonSetSpec()
    spec.CopyFrom(req.spec)
    if is_empty(spec.selector):
        spec.selector.CopyFrom(cur.spec.selector)
    apply_defaults_spec(spec)
    if spec.selector != cur.spec.selector:
        raise Invalid("spec.selector", "field is immutable: delete and recreate the DaemonSet")
    return spec

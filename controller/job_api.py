"""Jobs as stored objects: the kind, defaults, validation and update rules.

The controller that runs pods to completion is `controller.job`; CRUD and the
servicer are the shared `controller.workload_api`.

Defaults and rules, as Kubernetes batch/v1 has them:
- `parallelism` and `completions` absent -> 1; `backoffLimit` -> 6.
- The selector is generated: `controller-uid: <job uid>`, and the template gets the labels
  `controller-uid`, `job-name` (and their `batch.kubernetes.io/` forms), so two Jobs never
  claim each other's pods. A selector of one's own needs `manualSelector: true`.
- `spec.template.spec.restartPolicy` must be Never or OnFailure (there is no default: a pod
  that restarts for ever never completes).
- After create only `parallelism`, `activeDeadlineSeconds`, `suspend` and
  `ttlSecondsAfterFinished` may change; `completions`, the selector and the template are
  immutable.
"""

from __future__ import annotations

from controller import validation, workload_api
from controller.kinds import Kind
from controller.labelselector import is_empty
from cowpod.api.labels import JOB_CONTROLLER_UID_LABEL, JOB_NAME_LABEL
from cowpod.errors import Invalid
from cowpod.v1 import workload_pb2

JOBS: Kind[workload_pb2.Job] = Kind(
    "jobs", "Job", "batch/v1", True, workload_pb2.Job, workload_pb2.JobList, workload_pb2.JobWatchEvent,
)

DEFAULT_BACKOFF_LIMIT = 6
_BATCH = "batch.kubernetes.io/"
RESTART_POLICIES = ("Never", "OnFailure")
NON_INDEXED = "NonIndexed"


def apply_defaults(job: workload_pb2.Job) -> None:
    """On create, with the uid assigned."""
    spec = job.spec
    if not spec.HasField("parallelism"):
        spec.parallelism = 1
    if not spec.HasField("completions"):
        spec.completions = 1
    if not spec.HasField("backoff_limit"):
        spec.backoff_limit = DEFAULT_BACKOFF_LIMIT
    if not spec.completion_mode:
        spec.completion_mode = NON_INDEXED
    if spec.manual_selector:
        return
    if not is_empty(spec.selector):
        raise Invalid("spec.selector", "will be generated from the Job's uid; to set it yourself, "
                                       "also set `manualSelector: true`")
    uid, name = job.metadata.uid, job.metadata.name
    labels = spec.template.metadata.labels
    for prefix in ("", _BATCH):
        labels[prefix + JOB_CONTROLLER_UID_LABEL] = uid
        labels[prefix + JOB_NAME_LABEL] = name
    spec.selector.match_labels[JOB_CONTROLLER_UID_LABEL] = uid


def validate_spec(errs: validation.Errors, spec: workload_pb2.JobSpec) -> None:
    for path, value in (("spec.parallelism", spec.parallelism), ("spec.completions", spec.completions),
                        ("spec.backoffLimit", spec.backoff_limit)):
        if value < 0:
            errs.add(path, f"must be greater than or equal to 0 (got {value})")
    if spec.completion_mode not in ("", NON_INDEXED):
        errs.add("spec.completionMode",
                 f"{spec.completion_mode!r} is not supported: Jobs here are NonIndexed")
    if spec.HasField("active_deadline_seconds") and spec.active_deadline_seconds <= 0:
        errs.add("spec.activeDeadlineSeconds", f"must be greater than 0 (got {spec.active_deadline_seconds})")
    if spec.HasField("ttl_seconds_after_finished") and spec.ttl_seconds_after_finished < 0:
        errs.add("spec.ttlSecondsAfterFinished", "must be greater than or equal to 0")
    workload_api.template(errs, spec.selector, spec.template, kind="Job", restart_policies=RESTART_POLICIES,
                          restart_default="Always")


def validate(job: workload_pb2.Job) -> None:
    workload_api.check_object(job, validate_spec)


def merge(cur: workload_pb2.Job, req: workload_pb2.Job) -> workload_pb2.JobSpec:
    spec = workload_pb2.JobSpec()
    spec.CopyFrom(cur.spec)
    r = req.spec
    if r.HasField("parallelism"):
        spec.parallelism = r.parallelism
    spec.ClearField("active_deadline_seconds")
    if r.HasField("active_deadline_seconds"):
        spec.active_deadline_seconds = r.active_deadline_seconds
    spec.ClearField("ttl_seconds_after_finished")
    if r.HasField("ttl_seconds_after_finished"):
        spec.ttl_seconds_after_finished = r.ttl_seconds_after_finished
    spec.suspend = r.suspend
    if r.HasField("completions") and r.completions != cur.spec.completions:
        raise Invalid("spec.completions", "field is immutable")
    if not is_empty(r.selector) and r.selector != cur.spec.selector:
        raise Invalid("spec.selector", "field is immutable")
    if r.HasField("template"):
        want = workload_pb2.PodTemplateSpec()
        want.CopyFrom(r.template)
        for k, v in cur.spec.template.metadata.labels.items():
            want.metadata.labels.setdefault(k, v)
        if want != cur.spec.template:
            raise Invalid("spec.template", "field is immutable: delete and recreate the Job")
    return spec

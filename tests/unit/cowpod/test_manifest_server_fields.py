"""What the server owns in a manifest is ignored, not refused: `kubectl get -o yaml` output from a
Kubernetes cluster (or `cowpod get -o yaml`) decodes, with its status read leniently and the
server-set metadata cowpod does not keep dropped; everything the user owns stays strict."""

from __future__ import annotations

import pytest

from cowpod.manifest import ManifestError, encode_object, load_text, user_owned
from cowpod.v1 import workload_pb2

# As `kubectl get deployment web -o yaml` prints it on a Kubernetes cluster.
EXPORTED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: "1"
  creationTimestamp: "2026-11-30T09:12:44Z"
  generation: 3
  managedFields:
  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1: {f:spec: {f:replicas: {}}}
    manager: kubectl-client-side-apply
    operation: Update
    time: "2026-11-30T09:12:44Z"
  name: web
  namespace: default
  resourceVersion: "918273"
  selfLink: /apis/apps/v1/namespaces/default/deployments/web
  uid: 6c1d9a59-3a4e-4c55-9b0e-2f7d8c1e0a11
spec:
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector: {matchLabels: {app: web}}
  strategy:
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
    type: RollingUpdate
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - image: cowpod/busybox:latest
        imagePullPolicy: IfNotPresent
        name: c
      restartPolicy: Always
status:
  availableReplicas: 2
  conditions:
  - lastTransitionTime: "2026-11-30T09:12:50Z"
    lastUpdateTime: "2026-11-30T09:12:50Z"
    message: Deployment has minimum availability.
    reason: MinimumReplicasAvailable
    status: "True"
    type: Available
  observedGeneration: 3
  readyReplicas: 2
  replicas: 2
  collisionCount: many
  updatedReplicas: 2
"""


def test_a_kubernetes_export_decodes_with_its_server_fields_ignored() -> None:
    [doc] = load_text(EXPORTED, "web.yaml")
    d = doc.obj
    assert isinstance(d, workload_pb2.Deployment)
    assert d.spec.replicas == 2 and d.spec.strategy.rolling_update.max_surge == "25%"
    # The status is read as far as it fits: the condition without `lastUpdateTime` (cowpod has
    # none), a field of the wrong type dropped.
    assert d.status.ready_replicas == 2 and [c.type for c in d.status.conditions] == ["Available"]
    assert d.status.conditions[0].reason == "MinimumReplicasAvailable"


def test_what_the_user_owns_stays_strict() -> None:
    typos = (("  revisionHistoryLimit: 10\n", "  revisionHistoryLimitt: 10\n", "spec.revisionHistoryLimitt"),
             ("  name: web\n", "  nam: web\n", "metadata.nam"))
    for good, bad, path in typos:
        with pytest.raises(ManifestError, match=f"{path}: unknown field"):
            load_text(EXPORTED.replace(good, bad, 1), "web.yaml")
    # A status that is not even a mapping: dropped like any status field that does not fit.
    text = EXPORTED[: EXPORTED.index("status:")] + "status: running\n"
    [doc] = load_text(text, "web.yaml")
    assert doc.obj.spec.replicas == 2 and not doc.obj.HasField("status")


def test_user_owned_leaves_out_status_and_server_set_metadata() -> None:
    [doc] = load_text(EXPORTED, "web.yaml")
    owned = user_owned(encode_object(doc.obj))
    assert "status" not in owned
    assert owned["metadata"] == {"name": "web", "namespace": "default",
                                 "annotations": {"deployment.kubernetes.io/revision": "1"}}
    assert owned["spec"]["replicas"] == 2

"""Pure rules of ConfigMaps, Secrets and pod references to them (controller/configs.py,
controller/validation.py), and the namespace controller's order on an in-memory store."""

from __future__ import annotations

import pytest

from controller.configs import CONFIGMAPS, fold_string_data, key_error, validate_configmap, validate_secret
from controller.kinds import PODS
from controller.memstore import MemoryStore
from controller.namespaces import NAMESPACES, TERMINATING, NamespaceController, Namespaces, new_namespace
from controller.replicaset_api import REPLICASETS
from controller.resource import Resource
from controller.validation import Errors, pod_spec
from cowpod.clock import FakeClock
from cowpod.errors import Invalid
from cowpod.v1 import config_pb2, meta_pb2, pod_pb2, workload_pb2


@pytest.mark.parametrize(("key", "ok"), [
    ("game.properties", True), ("a-b_c", True), (".dockerconfigjson", True),
    (".", False), ("..", False), ("a/b", False), ("", False), ("x" * 254, False), ("sp ace", False),
])
def test_key_rules(key: str, ok: bool) -> None:
    assert (key_error(key) is None) is ok


def test_configmap_too_big_and_duplicate_keys() -> None:
    cm = config_pb2.ConfigMap(metadata=meta_pb2.ObjectMeta(namespace="default", name="big"))
    cm.data["a"] = "x" * (1024 * 1024)
    with pytest.raises(Invalid, match="data: must be no more than 1048576 bytes"):
        validate_configmap(cm)


def test_secret_string_data_wins_and_basic_auth_needs_a_key() -> None:
    s = config_pb2.Secret(metadata=meta_pb2.ObjectMeta(namespace="default", name="s"),
                          type="kubernetes.io/basic-auth")
    s.data["user"] = b"x"
    with pytest.raises(Invalid, match=r"data\[username\]: required .* \(or password\)"):
        validate_secret(s)
    s.data["password"] = b"old"
    s.string_data["password"] = "new"
    fold_string_data(s)
    assert s.data["password"] == b"new" and not s.string_data
    validate_secret(s)


def errors_of(spec: pod_pb2.PodSpec) -> list[tuple[str, str]]:
    errs = Errors()
    pod_spec(errs, spec)
    return errs.items


def test_pod_references_are_checked_with_their_paths() -> None:
    c = pod_pb2.Container(name="app", image="img")
    e = c.env.add(name="A")
    e.value_from.config_map_key_ref.name = "Bad_Name"
    both = c.env.add(name="B")
    both.value_from.config_map_key_ref.CopyFrom(pod_pb2.ConfigMapKeySelector(name="cm", key="k"))
    both.value_from.secret_key_ref.CopyFrom(pod_pb2.SecretKeySelector(name="s", key="k"))
    c.env_from.add(prefix="1BAD")
    spec = pod_pb2.PodSpec(containers=[c])
    v = spec.volumes.add(name="cfg")
    v.config_map.name = "cm"
    v.config_map.default_mode = 0o1777
    v.config_map.items.add(key="k", path="../etc/passwd")
    two = spec.volumes.add(name="two")
    two.config_map.name = "cm"
    two.secret.secret_name = "s"
    got = dict(errors_of(spec))
    assert "invalid value 'Bad_Name'" in got["spec.containers[0].env[0].valueFrom.configMapKeyRef.name"]
    assert got["spec.containers[0].env[0].valueFrom.configMapKeyRef.key"] == "required"
    assert got["spec.containers[0].env[1].valueFrom"].startswith("must specify exactly one of")
    assert got["spec.containers[0].envFrom[0]"] == "must specify exactly one of: configMapRef, secretRef"
    assert "invalid environment variable name prefix" in got["spec.containers[0].envFrom[0].prefix"]
    assert "between 0 and 0777" in got["spec.volumes[0].configMap.defaultMode"]
    assert "without '..'" in got["spec.volumes[0].configMap.items[0].path"]
    assert got["spec.volumes[1]"] == "may not specify more than 1 volume type"


async def test_namespace_controller_deletes_workloads_then_pods_then_the_namespace() -> None:
    store, clock = MemoryStore(), FakeClock()
    namespaces = Namespaces(Resource(NAMESPACES, store, clock), clock)
    await namespaces.create(new_namespace("doomed"))
    rs = workload_pb2.ReplicaSet(metadata=meta_pb2.ObjectMeta(namespace="doomed", name="rs"))
    await store.create(REPLICASETS.key("doomed", "rs"), rs)
    pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="doomed", name="p"))
    await store.create(PODS.key("doomed", "p"), pod)
    await store.create(CONFIGMAPS.key("doomed", "c"), config_pb2.ConfigMap())
    kept = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="other", name="p"))
    await store.create(PODS.key("other", "p"), kept)
    deleted_pods: list[str] = []

    async def delete_pod(opts: meta_pb2.DeleteOptions) -> None:
        deleted_pods.append(f"{opts.key.namespace}/{opts.key.name}")
        await store.delete(PODS.key(opts.key.namespace, opts.key.name), pod_pb2.Pod)

    ctl = NamespaceController(store, namespaces, [PODS, REPLICASETS, CONFIGMAPS, NAMESPACES], delete_pod,
                              clock, first=("replicasets",))
    await ctl.sync()  # not terminating: nothing happens
    assert await store.get_raw(REPLICASETS.key("doomed", "rs")) is not None
    gone = await namespaces.delete(meta_pb2.DeleteOptions(key=meta_pb2.ObjectKey(name="doomed")))
    assert gone.status.phase == TERMINATING
    await ctl.sync()  # first the workloads only
    assert await store.get_raw(REPLICASETS.key("doomed", "rs")) is None
    assert deleted_pods == [] and await store.get_raw(PODS.key("doomed", "p")) is not None
    await ctl.sync()  # then pods (gracefully) and the rest
    assert deleted_pods == ["doomed/p"] and await store.get_raw(CONFIGMAPS.key("doomed", "c")) is None
    assert await store.get_raw(NAMESPACES.key("", "doomed")) is not None
    await ctl.sync()  # nothing left: the namespace goes
    assert await store.get_raw(NAMESPACES.key("", "doomed")) is None
    assert await store.get_raw(PODS.key("other", "p")) is not None

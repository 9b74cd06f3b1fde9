"""Who may touch Namespaces, ConfigMaps and Secrets: edit writes ConfigMaps and Secrets and
reads Secrets, view reads everything but Secrets, only admin makes or deletes namespaces, a
node may only Get the ones its bound pods reference (checked by the interceptor)."""

from __future__ import annotations

import pytest

from controller.auth.authorizer import Requirement, authorize
from controller.auth.identity import Identity, Role
from cowpod.v1 import meta_pb2

EDIT, VIEW = Identity("dev", Role.EDIT), Identity("ro", Role.VIEW)
NODE, SCHED = Identity("system:node:n1", Role.NODE, node_name="n1"), Identity("sched", Role.SCHEDULER)
ADMIN = Identity("admin", Role.ADMIN)
CM, SECRET, NS = "/cowpod.v1.ConfigMapService", "/cowpod.v1.SecretService", "/cowpod.v1.NamespaceService"


@pytest.mark.parametrize(("who", "method", "allowed"), [
    (EDIT, f"{CM}/Create", True),
    (EDIT, f"{CM}/Update", True),
    (EDIT, f"{SECRET}/Delete", True),
    (EDIT, f"{SECRET}/Get", True),
    (EDIT, f"{SECRET}/Watch", True),
    (EDIT, f"{NS}/List", True),
    (EDIT, f"{NS}/Create", False),
    (EDIT, f"{NS}/Delete", False),
    (VIEW, f"{CM}/Get", True),
    (VIEW, f"{CM}/List", True),
    (VIEW, f"{NS}/Watch", True),
    (VIEW, f"{SECRET}/Get", False),
    (VIEW, f"{SECRET}/List", False),
    (VIEW, f"{SECRET}/Watch", False),
    (VIEW, f"{CM}/Create", False),
    (NODE, f"{SECRET}/List", False),
    (NODE, f"{SECRET}/Watch", False),
    (NODE, f"{CM}/Create", False),
    (NODE, f"{NS}/Create", False),
    (SCHED, f"{SECRET}/Get", False),
    (SCHED, f"{CM}/Get", False),
    (ADMIN, f"{NS}/Delete", True),
    (ADMIN, f"{SECRET}/List", True),
])
def test_config_kinds(who: Identity, method: str, allowed: bool) -> None:
    req = meta_pb2.ObjectKey(namespace="default", name="x") if method.endswith("/Get") else None
    assert authorize(who, method, req).allowed is allowed


@pytest.mark.parametrize(("service", "kind"), [(CM, "ConfigMap"), (SECRET, "Secret")])
def test_a_node_get_carries_the_reference_check(service: str, kind: str) -> None:
    d = authorize(NODE, f"{service}/Get", meta_pb2.ObjectKey(namespace="prod", name="db"))
    assert d.allowed and d.check is not None
    assert (d.check.requirement, d.check.node, d.check.namespace, d.check.name, d.check.kind) == (
        Requirement.REFERENCED, "n1", "prod", "db", kind)

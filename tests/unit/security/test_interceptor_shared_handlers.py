"""The interceptor builds each method's wrapped handler once and shares it by every call: each
call must still be judged on its own credentials (certificate, bearer token), also when
calls of different callers on one method run at the same time."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import grpc
import pytest

from controller.limits import Limits
from controller.testing import code_of
from cowpod.pki import node_subject
from cowpod.v1 import auth_pb2, auth_pb2_grpc, meta_pb2, pod_pb2, pod_pb2_grpc
from tests.unit.security.test_interceptor import Harness, transport


@pytest.fixture
async def h(tmp_path: pathlib.Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start(Limits(user_rate=1000, user_burst=1000, system_rate=1000, system_burst=1000))
    yield harness
    await harness.stop()


async def test_calls_of_different_callers_on_one_method_are_judged_each_on_its_own(h: Harness) -> None:
    view = await h.tokens.create(role="view")
    edit = await h.tokens.create(role="edit")
    callers = {
        "admin": h.channel(h.pki.load("admin")),
        "view": h.channel(transport(h), view.token),
        "edit": h.channel(transport(h), edit.token),
        "node": h.channel(h.cert(node_subject("n1"))),
        "anonymous": h.channel(transport(h)),
        "bad-token": h.channel(h.pki.load("admin"), "abcdefgh." + "x" * 32),
    }
    want_who = {
        "admin": ("admin", "admin", "certificate"),
        "view": (f"token:{view.metadata.name}", "view", "token"),
        "edit": (f"token:{edit.metadata.name}", "edit", "token"),
        "node": ("system:node:n1", "node", "certificate"),
        "anonymous": ("system:anonymous", "anonymous", "certificate"),
    }
    want_create = {
        "admin": grpc.StatusCode.OK,
        "view": grpc.StatusCode.PERMISSION_DENIED,
        "edit": grpc.StatusCode.OK,
        "node": grpc.StatusCode.PERMISSION_DENIED,
        "anonymous": grpc.StatusCode.UNAUTHENTICATED,
        "bad-token": grpc.StatusCode.UNAUTHENTICATED,
    }

    async def who(name: str) -> tuple[str, tuple[str, str, str] | grpc.StatusCode]:
        call = auth_pb2_grpc.IdentityServiceStub(callers[name]).WhoAmI(auth_pb2.WhoAmIRequest(), timeout=5)
        try:
            r = await call
        except grpc.aio.AioRpcError as err:
            return name, err.code()
        return name, (r.user, r.role, r.authenticated_by)

    async def create(name: str, i: int) -> tuple[str, grpc.StatusCode]:
        pod = pod_pb2.Pod(metadata=meta_pb2.ObjectMeta(namespace="default", name=f"{name}-{i}"))
        return name, await code_of(pod_pb2_grpc.PodServiceStub(callers[name]).Create(pod, timeout=5))

    for _ in range(3):  # interleaved, many at once, on the same two methods
        whos = await asyncio.gather(*(who(n) for n in callers for _ in range(3)))
        for name, got in whos:
            assert got == want_who.get(name, grpc.StatusCode.UNAUTHENTICATED), name
        creates = await asyncio.gather(*(create(n, i) for n in callers for i in range(3)))
        for name, code in creates:
            assert code == want_create[name], name
    allowed = [f"{n}-{i}" for n in ("admin", "edit") for i in range(3)]
    assert sorted(h.pods.created) == sorted(allowed * 3)

"""The controller is SIGKILLed in the middle of a burst of 500 creates.

Every create that returned OK must be in etcd after the restart, as the very object
the client was given (same uid); clients ride out the outage by retrying UNAVAILABLE
with back-off; and no retry makes a duplicate (creates are idempotent by name and
create-id, see `Client.create`), including pods named by `generateName`.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess

import grpc
import pytest

from cowpod.api.labels import CREATE_ID_ANNOTATION
from tests.faults.cluster import ProcCluster, list_pods, sleeper_pod

pytestmark = pytest.mark.faults

TOTAL = 500
KILL_AFTER = 150


def etcd_pod_keys(cluster: ProcCluster) -> list[str]:
    out = subprocess.run(
        [
            "etcdctl",
            "--endpoints",
            cluster.etcd_endpoints,
            "get",
            "--prefix",
            "--keys-only",
            "/cowpod/registry/pods/default/",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"ETCDCTL_API": "3"},
    ).stdout
    return [k for k in out.split() if k]


async def test_sigkill_during_a_burst_of_creates_loses_nothing(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster: ProcCluster = make_cluster()
    cluster.start_etcd()
    cluster.start_controller()
    await cluster.wait_serving()

    acked: dict[str, tuple[str, str]] = {}  # name -> (uid, create id)
    failures: list[str] = []
    kill_now = asyncio.Event()
    acked_at_kill: list[int] = []

    async with cluster.client() as c:
        sem = asyncio.Semaphore(32)
        codes: collections.Counter[str] = collections.Counter()

        async def counted_create(pod, **kw):  # type: ignore[no-untyped-def]
            try:
                return await c.pods.Create(pod, **kw)
            except grpc.RpcError as err:
                codes[err.code().name] += 1
                raise

        async def create(i: int) -> None:
            pod = sleeper_pod(f"burst-{i:03d}")
            if i % 2:  # half of them named by the server-style generateName
                pod.metadata.name = ""
                pod.metadata.generate_name = "burst-gen-"
            async with sem:
                try:
                    got = await c.create(
                        counted_create, c.pods.Get, pod, timeout=10, attempts=40, max_delay=1.0
                    )
                except grpc.RpcError as err:
                    failures.append(f"{pod.metadata.name}: {err}")
                    return
            acked[got.metadata.name] = (got.metadata.uid, got.metadata.annotations[CREATE_ID_ANNOTATION])
            if len(acked) >= KILL_AFTER:
                kill_now.set()

        async def chaos() -> None:
            await kill_now.wait()
            acked_at_kill.append(len(acked))
            cluster.kill("controller")
            await asyncio.sleep(0.5)
            cluster.start_controller()

        await asyncio.gather(chaos(), *(create(i) for i in range(TOTAL)))

        assert not failures, failures[:5]
        assert len(acked) == TOTAL
        assert acked_at_kill and acked_at_kill[0] < TOTAL, "the kill must land mid-burst"
        assert cluster.procs["controller"].starts == 2
        # The kill hit requests in flight; they came back as UNAVAILABLE and were retried.
        assert codes["UNAVAILABLE"] > 0, codes
        assert set(codes) <= {"UNAVAILABLE", "ALREADY_EXISTS", "DEADLINE_EXCEEDED"}, codes

        await cluster.wait_serving()
        stored = {p.metadata.name: p for p in await list_pods(c)}
        missing = sorted(set(acked) - set(stored))
        assert not missing, f"acknowledged but lost: {missing[:10]}"
        wrong = [n for n, (uid, _) in acked.items() if stored[n].metadata.uid != uid]
        assert not wrong, f"stored object differs from the acknowledged one: {wrong[:10]}"
        # No duplicates: one stored object per create request.
        per_id = collections.Counter(
            p.metadata.annotations.get(CREATE_ID_ANNOTATION) for p in stored.values()
        )
        assert len(stored) == TOTAL and max(per_id.values()) == 1

    # And straight from etcd, not only through the restarted controller.
    keys = etcd_pod_keys(cluster)
    assert {k.rsplit("/", 1)[1] for k in keys} == set(acked)

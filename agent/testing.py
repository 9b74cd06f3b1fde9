"""Run a node agent in-process for tests (yours and other engineers').

    async with AgentRunner(controller.address, "node-a") as runner:
        ...  # runner.agent, runner.address (its AgentService)

The runner's agent labels every Docker object `cowpod.test=1` and uses short
back-off, heartbeat and grace defaults; `cleanup_docker(node)` removes what a
test left behind (containers first, then volumes), even after a failure.
`ensure_images()` builds cowpod/busybox and cowpod/pause with
deploy/build-images.sh (or an equivalent from busybox-static if the script is
missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import pathlib
import shutil
import subprocess
import tempfile
from typing import Any

from agent.config import AgentConfig, BackoffPolicy
from agent.controlplane import GrpcControlPlane
from agent.daemon import Agent
from agent.runtime_docker import DockerRuntime
from agent.server import serve
from cowpod.client import Client

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUSYBOX = "cowpod/busybox:latest"
PAUSE = "cowpod/pause:latest"
TEST_LABEL = "cowpod.test"


def _image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def ensure_images() -> None:
    script = ROOT / "deploy" / "build-images.sh"
    if script.exists():
        subprocess.run([str(script), "--quiet", "busybox", "pause"], check=True, capture_output=True)
        return
    for name, cmd in ((BUSYBOX, '["/bin/sh"]'), (PAUSE, '["/bin/busybox", "sleep", "2147483647"]')):
        if _image_exists(name):
            continue
        with tempfile.TemporaryDirectory() as d:
            bb = shutil.which("busybox") or "/bin/busybox"
            shutil.copy(bb, pathlib.Path(d) / "busybox")
            (pathlib.Path(d) / "Dockerfile").write_text(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
                f"CMD {cmd}\n"
            )
            subprocess.run(["docker", "build", "-q", "-t", name, d], check=True, capture_output=True)


def cleanup_docker(node_name: str) -> None:
    """Remove every container and volume a test agent on `node_name` made."""
    flt = ["--filter", f"label={TEST_LABEL}=1", "--filter", f"label=cowpod.node={node_name}"]
    ids = subprocess.run(
        ["docker", "ps", "-aq", *flt], capture_output=True, text=True, check=False
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=False)
    vols = subprocess.run(
        ["docker", "volume", "ls", "-q", *flt], capture_output=True, text=True, check=False
    ).stdout.split()
    if vols:
        subprocess.run(["docker", "volume", "rm", "-f", *vols], capture_output=True, check=False)


def make_config(controller: str, node_name: str, **overrides: Any) -> AgentConfig:
    cfg = AgentConfig(
        controller=controller,
        node_name=node_name,
        pause_image=PAUSE,
        no_pull=True,
        heartbeat_seconds=2.0,
        resync_seconds=2.0,
        backoff=BackoffPolicy(initial=1.0, maximum=4.0, reset_after=600.0),
        image_backoff=BackoffPolicy(initial=1.0, maximum=4.0),
        extra_docker_labels={TEST_LABEL: "1"},
    )
    return dataclasses.replace(cfg, **overrides)


class AgentRunner:
    def __init__(self, controller: str, node_name: str, **overrides: Any) -> None:
        self.config = make_config(controller, node_name, **overrides)
        self.client: Client | None = None
        self.runtime: DockerRuntime | None = None
        self.agent: Agent | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        assert self.agent is not None
        if self.config.listen.startswith("unix://"):
            return self.config.listen
        return f"127.0.0.1:{self.agent.bound_port}"

    async def start(self, timeout: float = 60.0) -> AgentRunner:
        self.client = Client(self.config.controller)
        self.runtime = DockerRuntime(self.config.node_name, threads=self.config.docker_threads)
        self.agent = Agent(
            self.config,
            GrpcControlPlane(self.client),
            self.runtime,
            serve=serve if self.config.listen else None,
        )
        # The runner is this task's single owner: stop() cancels and awaits it.
        self._task = asyncio.create_task(self.agent.run(), name=f"agent-{self.config.node_name}")
        ready = asyncio.ensure_future(self.agent.ready.wait())
        done, _ = await asyncio.wait(
            {self._task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done:
            ready.cancel()
            self._task.result()
            raise RuntimeError("agent exited during start")
        if ready not in done:
            ready.cancel()
            await self.stop()
            raise TimeoutError(f"agent {self.config.node_name} not ready within {timeout:.0f}s")
        if self.config.listen:
            await asyncio.wait_for(self.agent.serving.wait(), timeout)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.client is not None:
            await self.client.close()
        if self.runtime is not None:
            await self.runtime.close()

    async def __aenter__(self) -> AgentRunner:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------- pod helpers for tests


def make_pod(name: str, *containers: Any, namespace: str = "default", **spec: Any) -> Any:
    """A Pod proto: `containers` are `pod_pb2.Container`s or (name, shell script) pairs
    run by busybox sh; `spec` sets PodSpec fields (restart_policy, volumes, ...)."""
    from cowpod.v1 import meta_pb2, pod_pb2

    cs = []
    for c in containers:
        if isinstance(c, tuple):
            c = pod_pb2.Container(
                name=c[0], image=BUSYBOX, command=["/bin/sh", "-c", c[1]], image_pull_policy="IfNotPresent"
            )
        cs.append(c)
    spec.setdefault("termination_grace_period_seconds", 2)
    return pod_pb2.Pod(
        api_version="v1",
        kind="Pod",
        metadata=meta_pb2.ObjectMeta(name=name, namespace=namespace),
        spec=pod_pb2.PodSpec(containers=cs, **spec),
    )


async def create_and_bind(client: Client, pod: Any, node_name: str) -> Any:
    from cowpod.v1 import meta_pb2, pod_pb2

    created = await client.pods.Create(pod)
    await client.pods.Bind(
        pod_pb2.Binding(
            pod=meta_pb2.ObjectKey(namespace=created.metadata.namespace, name=created.metadata.name),
            node_name=node_name,
            pod_uid=created.metadata.uid,
        )
    )
    return created


async def wait_pod(
    client: Client, name: str, predicate: Any, *, namespace: str = "default", timeout: float = 120.0
) -> Any:
    """Poll the pod until predicate(pod) is true; the last pod in the error."""
    import grpc

    from cowpod.v1 import meta_pb2

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = None
    while True:
        try:
            last = await client.pods.Get(meta_pb2.ObjectKey(namespace=namespace, name=name))
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise
            last = None
        if predicate(last):
            return last
        if loop.time() > deadline:
            raise TimeoutError(f"pod {namespace}/{name} did not reach the wanted state; last seen:\n{last}")
        await asyncio.sleep(0.2)


def phase_is(*phases: str) -> Any:
    return lambda p: p is not None and p.status.phase in phases


def gone(p: Any) -> bool:
    return p is None

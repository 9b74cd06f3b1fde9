"""The docker provider's registry entry: its settings, preflight and factory.

    provider:
      name: docker
      image: cowpod/vm:latest   # the VM template image (deploy/build-images.sh)
      network: cowpod           # the bridge network VMs get their IPs on
      warmShells: 2             # child containers made ahead per warm parent
      warmClones: true          # fork a clone's agent from the parent's zygote
      poolPaused: false         # keep idle shells frozen (no CPU; a take unpauses)
      pidsLimit: 4096           # processes and threads per VM, its pods included
      blockMetadata: true       # drop VM/pod traffic to 169.254.169.254 (iptables DOCKER-USER)
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cowpod.errors import FailedPrecondition
from cowpod.local import docker_env
from hypervisor.provider import Provider, ProviderContext
from hypervisor.providers.docker.provider import DockerProvider, DockerProviderConfig
from hypervisor.settings import Fields

_DEFAULTS = DockerProviderConfig(data_dir=pathlib.Path("."))  # only for its defaults


@dataclass(frozen=True)
class DockerSettings:
    image: str = _DEFAULTS.image
    network: str = _DEFAULTS.network
    warm_shells: int = _DEFAULTS.pool_size
    # The pool grows to the last bursts' size, up to this (poolsize.py).
    max_warm_shells: int = _DEFAULTS.pool_max
    warm_clones: bool = True
    pool_paused: bool = False
    pids_limit: int = _DEFAULTS.pids_limit
    block_metadata: bool = _DEFAULTS.block_metadata


class DockerPlugin:
    name = "docker"

    def parse_settings(self, raw: Mapping[str, Any], where: str) -> DockerSettings:
        f = Fields(raw, where)
        d = DockerSettings()
        s = DockerSettings(
            image=f.string("image", d.image),
            network=f.string("network", d.network),
            warm_shells=f.integer("warmShells", d.warm_shells),
            max_warm_shells=f.integer("maxWarmShells", d.max_warm_shells),
            warm_clones=f.boolean("warmClones", d.warm_clones),
            pool_paused=f.boolean("poolPaused", d.pool_paused),
            pids_limit=f.integer("pidsLimit", d.pids_limit),
            block_metadata=f.boolean("blockMetadata", d.block_metadata),
        )
        f.done()
        return s

    async def check(self, settings: DockerSettings, ctx: ProviderContext) -> None:
        try:
            await asyncio.to_thread(docker_env.check_engine_and_image, settings.image)
        except docker_env.DockerProblem as err:
            raise FailedPrecondition(str(err)) from None

    def create(self, settings: DockerSettings, ctx: ProviderContext) -> Provider:
        cfg = DockerProviderConfig(
            data_dir=ctx.data_dir, cluster_id=ctx.cluster_id, image=settings.image, network=settings.network,
            pool_size=settings.warm_shells, pool_max=settings.max_warm_shells,
            pool_paused=settings.pool_paused, pids_limit=settings.pids_limit,
            block_metadata=settings.block_metadata,
        )
        if not settings.warm_clones:
            return DockerProvider(cfg, tasks=ctx.tasks)
        from hypervisor.providers.docker.zygote_warm import ZygoteWarmStarter

        warm = ZygoteWarmStarter(ZygoteWarmStarter.default_socket_dir(ctx.data_dir))
        return DockerProvider(cfg, warm_start=warm, tasks=ctx.tasks)

    async def leftovers(self, ctx: ProviderContext) -> frozenset[str]:
        """The cluster's VM containers now, so `sweep` can still find their pods after they are gone."""
        try:
            return frozenset(await asyncio.to_thread(docker_env.cluster_vm_ids, ctx.cluster_id))
        except docker_env.DockerProblem:
            return frozenset()

    async def sweep(self, ctx: ProviderContext, known: frozenset[str]) -> list[str]:
        try:
            return await asyncio.to_thread(docker_env.remove_cluster_containers, ctx.cluster_id, set(known))
        except docker_env.DockerProblem as err:
            raise FailedPrecondition(f"could not check for leftover containers: {err}") from None


PLUGIN = DockerPlugin()

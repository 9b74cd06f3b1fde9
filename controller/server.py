"""Assemble the controller: store, watch hubs, domains, servicers, gRPC server, loops.

`Controller.run` is the one owner of every task in the process (an
asyncio.TaskGroup): the gRPC server, one watch hub (and its bookmark ticker) per
watched kind, the etcd health probe, node lifecycle, the metrics endpoint and,
with --provider, the VM manager. Cancel `run` to stop everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from controller.agent_proxy import AgentProxy
from controller.auth.setup import SERVICES as AUTH_SERVICES
from controller.auth.setup import SecurityConfigError, ServerSecurity
from controller.autoscaler.reconciler import Autoscaler, Options
from controller.compactor import run_compactor
from controller.config import ControllerConfig
from controller.configs import CONFIGMAPS, SECRETS, ConfigObjectServicer, configmaps, secrets
from controller.encryption import rewrite as rewrite_encrypted
from controller.endpoints import EndpointsController
from controller.events import Events
from controller.eviction import Evictor, StoredEvents
from controller.kinds import EVENTS, LEASES, NODES, PODS, VMS, Kind
from controller.leases import Leases
from controller.metrics import Metrics
from controller.namespaces import (
    NAMESPACES,
    NamespaceAdmission,
    NamespaceController,
    Namespaces,
    NamespaceServicer,
)
from controller.node_lifecycle import NodeLifecycle
from controller.node_usage import NodeUsage
from controller.nodes import Nodes
from controller.pod_informer import SharedPodInformer
from controller.pods import Pods
from controller.priorityclasses import PRIORITYCLASSES, PriorityClasses, PriorityClassServicer
from controller.reconcile import hub_objects, hub_watch, hub_watches
from controller.replicaset import ReplicaSetController
from controller.replicaset_api import REPLICASETS, ReplicaSets, ReplicaSetServicer
from controller.replicaset_executor import GrpcWorkloadAPI
from controller.resource import Resource
from controller.rpc import service_handler
from controller.servicers.events import EventServicer
from controller.servicers.leases import LeaseServicer
from controller.servicers.nodes import NodeServicer
from controller.servicers.pods import PodServicer
from controller.servicers.vms import VMServicer
from controller.services_api import ENDPOINTS, EndpointsServicer, Services, ServiceServicer
from controller.services_api import SERVICES as SERVICE_OBJECTS
from controller.store import EtcdStore, Store
from controller.supervise import supervise
from controller.vms import VMs
from controller.watch import WatchHub
from controller.workload_kinds import WORKLOAD_KINDS, WORKLOAD_RESOURCES
from cowpod.auth.credentials import connect
from cowpod.client import CHANNEL_OPTIONS
from cowpod.clock import Clock, RealClock
from cowpod.clusterconfig import ClusterConfig
from cowpod.errors import CowpodError
from cowpod.informer import Informer
from cowpod.metrics_http import serve_metrics
from cowpod.v1 import (
    config_pb2,
    event_pb2,
    lease_pb2,
    namespace_pb2,
    node_pb2,
    pod_pb2,
    scheduling_pb2,
    service_pb2,
    vm_pb2,
    workload_pb2,
)
from hypervisor.manager import VMManager, check_provider
from hypervisor.provider import ControllerAddress

log = logging.getLogger(__name__)

SERVICES = (
    pod_pb2.DESCRIPTOR.services_by_name["PodService"],
    node_pb2.DESCRIPTOR.services_by_name["NodeService"],
    vm_pb2.DESCRIPTOR.services_by_name["VMService"],
    event_pb2.DESCRIPTOR.services_by_name["EventService"],
    lease_pb2.DESCRIPTOR.services_by_name["LeaseService"],
    workload_pb2.DESCRIPTOR.services_by_name["ReplicaSetService"],
    *(w.service for w in WORKLOAD_KINDS),  # Deployments, Jobs, DaemonSets (never indexed)
    service_pb2.DESCRIPTOR.services_by_name["ServiceService"],
    service_pb2.DESCRIPTOR.services_by_name["EndpointsService"],
)


# Namespaces, ConfigMaps, Secrets (controller/namespaces.py, controller/configs.py).
CORE_SERVICES = (
    namespace_pb2.DESCRIPTOR.services_by_name["NamespaceService"],
    config_pb2.DESCRIPTOR.services_by_name["ConfigMapService"],
    config_pb2.DESCRIPTOR.services_by_name["SecretService"],
)
# Workloads whose objects a Terminating namespace loses before its pods (they would recreate them).
NAMESPACE_DELETE_FIRST = ("deployments", "daemonsets", "jobs", "replicasets")


class ConfigError(Exception):
    """A configuration problem found before serving (bad flag, missing module)."""


class Controller:
    def __init__(self, config: ControllerConfig, clock: Clock | None = None,
                 store: Store | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.store: Store = store or EtcdStore(config.etcd, config.etcd_prefix, timeout=config.etcd_timeout,
                                               group_commit=config.etcd_group_commit, tls=config.etcd_tls,
                                               encryption=config.encryption)
        self.metrics = Metrics()
        self.port: int = 0  # the TCP port actually bound, once started
        self.metrics_port: int = 0
        self.started = asyncio.Event()
        self.health = health.aio.HealthServicer()

        q, b = config.watch_queue_size, config.watch_buffer_size
        # What every node has bound to it, kept from the pods watch: binds check capacity on it.
        self.node_usage = NodeUsage(self.store)
        hub_kinds: tuple[Kind[Any], ...] = (PODS, NODES, VMS, EVENTS, REPLICASETS, *WORKLOAD_RESOURCES,
                                            SERVICE_OBJECTS, ENDPOINTS)
        self.hubs: dict[str, WatchHub[Any]] = {
            k.resource: WatchHub(self.store, k, self.clock, buffer_size=b, queue_size=q,
                                 observer=self.node_usage if k is PODS else None)
            for k in hub_kinds
        }
        pods_r = Resource(PODS, self.store, self.clock, self.hubs["pods"])
        nodes_r = Resource(NODES, self.store, self.clock, self.hubs["nodes"])
        vms_r = Resource(VMS, self.store, self.clock, self.hubs["vms"])
        events_r = Resource(EVENTS, self.store, self.clock, self.hubs["events"])
        leases_r = Resource(LEASES, self.store, self.clock)
        self.pods = Pods(pods_r, nodes_r, self.store, self.clock, usage=self.node_usage,
                         bind_timeout=config.etcd_timeout)
        self.nodes = Nodes(nodes_r, leases_r, self.store, self.clock, lease_seconds=config.node_lease_seconds)
        self.vms = VMs(vms_r, self.store, self.clock)
        self.events = Events(events_r, self.store, self.clock)
        self.leases = Leases(leases_r)
        self.proxy = AgentProxy(pods_r, nodes_r)
        self.lifecycle = NodeLifecycle(self.store, self.clock, grace=config.node_monitor_grace,
                                       period=config.node_monitor_period, metrics=self.metrics)
        self.servicers: list[tuple[Any, object]] = [
            (SERVICES[0], PodServicer(self.pods, self.proxy, self.metrics, config.limits)),
            (SERVICES[1], NodeServicer(self.nodes, self.metrics)),
            (SERVICES[2], VMServicer(self.vms, self.metrics)),
            (SERVICES[3], EventServicer(self.events, self.metrics)),
            (SERVICES[4], LeaseServicer(self.leases)),
        ]
        # Workloads and eviction (controller/replicaset*.py, controller/eviction.py).
        rs_r = Resource(REPLICASETS, self.store, self.clock, self.hubs["replicasets"])
        self.replicasets = ReplicaSets(rs_r, self.store, self.clock)
        # The in-process loops (ReplicaSets, VM manager, autoscaler) watch the hubs directly.
        self.watches = hub_watches(pods_r, nodes_r, vms_r, rs_r)
        # One pod cache for the in-process loops (ReplicaSets, Jobs, DaemonSets, Endpoints), fed
        # the objects the pods hub decoded (controller/pod_informer.py).
        self.pod_informer = SharedPodInformer(hub_objects(pods_r, pod_pb2.PodWatchEvent), self.clock)
        # The evictor's and node lifecycle's nodes (instead of listing every node from etcd every period).
        self.node_informer: Informer[node_pb2.Node] = Informer(
            hub_objects(nodes_r, node_pb2.NodeWatchEvent), clock=self.clock, name="controller-node-informer")
        self.lifecycle.node_cache = self.node_informer  # node lifecycle's nodes, too
        # Binds check pods and nodes on these two, their transactions compare (controller/binder.py).
        self.pods.binder.use_caches(self.pod_informer, self.node_informer)
        self.servicers.append((SERVICES[5], ReplicaSetServicer(self.replicasets, self.metrics)))
        # Deployments, Jobs, DaemonSets (controller/workload_kinds.py).
        for w in WORKLOAD_KINDS:
            self.servicers.append((w.service, w.servicer(self.store, self.clock, self.hubs[w.kind.resource],
                                                         self.metrics)))
        # Services and their Endpoints (controller/services_api.py, controller/endpoints.py).
        self.endpoints_r = Resource(ENDPOINTS, self.store, self.clock, self.hubs["endpoints"])
        self.services = Services(Resource(SERVICE_OBJECTS, self.store, self.clock, self.hubs["services"]),
                                 self.endpoints_r)
        self.servicers.append((SERVICES[-2], ServiceServicer(self.services, self.metrics)))
        self.servicers.append((SERVICES[-1], EndpointsServicer(self.endpoints_r, self.metrics)))
        # PriorityClasses (controller/priorityclasses.py): a new pod's priority comes from its class.
        self.hubs[PRIORITYCLASSES.resource] = WatchHub(self.store, PRIORITYCLASSES, self.clock,
                                                       buffer_size=b, queue_size=q)
        pc_r = Resource(PRIORITYCLASSES, self.store, self.clock, self.hubs[PRIORITYCLASSES.resource])
        self.priority_classes = PriorityClasses(pc_r, self.clock)
        self.pods.priority = self.priority_classes.resolve
        self.servicers.append((scheduling_pb2.DESCRIPTOR.services_by_name["PriorityClassService"],
                               PriorityClassServicer(self.priority_classes, self.metrics)))
        # Namespaces (their admission step guards every create), ConfigMaps and Secrets.
        for k in (NAMESPACES, CONFIGMAPS, SECRETS):
            self.hubs[k.resource] = WatchHub(self.store, k, self.clock, buffer_size=b, queue_size=q)
        self.namespaces = Namespaces(Resource(NAMESPACES, self.store, self.clock, self.hubs["namespaces"]),
                                     self.clock, content_kinds=[h.kind for h in self.hubs.values()])
        self.admission = NamespaceAdmission(self.namespaces, cluster_scoped=[
            k.message.DESCRIPTOR.full_name for k in (*(h.kind for h in self.hubs.values()), LEASES)
            if not k.namespaced])
        self.namespace_controller = NamespaceController(
            self.store, self.namespaces, [*(h.kind for h in self.hubs.values()), LEASES], self.pods.delete,
            self.clock, first=NAMESPACE_DELETE_FIRST)
        secret_objects = secrets(Resource(SECRETS, self.store, self.clock, self.hubs["secrets"]))
        self.servicers.extend([
            (CORE_SERVICES[0], NamespaceServicer(self.namespaces, self.metrics)),
            (CORE_SERVICES[1], ConfigObjectServicer(
                configmaps(Resource(CONFIGMAPS, self.store, self.clock, self.hubs["configmaps"])),
                config_pb2.ConfigMapList, self.metrics)),
            (CORE_SERVICES[2], ConfigObjectServicer(secret_objects, config_pb2.SecretList, self.metrics)),
        ])
        self.evictor = Evictor(self.store, self.clock, default_toleration_seconds=config.pod_eviction_timeout,
                               period=config.node_monitor_period, startup_grace=config.node_monitor_grace,
                               events=StoredEvents(self.events), registry=self.metrics.registry,
                               node_cache=self.node_informer, pod_cache=self.pod_informer)
        # TLS, authentication, authorization and limits (controller/auth, controller/limits).
        pki_dir = config.pki_dir
        if pki_dir is None and config.data_dir is not None and (config.data_dir / "pki" / "ca.crt").exists():
            pki_dir = config.data_dir / "pki"
        try:
            self.security = ServerSecurity.create(
                pki_dir=pki_dir, insecure=config.insecure, limits=config.limits,
                store=self.store, clock=self.clock, token_ttl=config.token_ttl,
            )
        except SecurityConfigError as err:
            raise ConfigError(str(err)) from err
        self.servicers.extend(self.security.servicers())
        self.proxy.credentials = self.security.agent_channel_credentials()

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0] or "127.0.0.1"
        if host in ("0.0.0.0", "[::]", "::"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def _build_server(self) -> grpc.aio.Server:
        # The request size limit first: for a repeated channel argument gRPC takes the first.
        server = grpc.aio.server(interceptors=self.security.interceptors(), options=[
            *self.security.server_options(),
            *CHANNEL_OPTIONS,
            ("grpc.so_reuseport", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ])
        server.add_generic_rpc_handlers(
            [service_handler(desc, svc, self.metrics, self.admission) for desc, svc in self.servicers]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [*(d.full_name for d in (*SERVICES, *CORE_SERVICES, *AUTH_SERVICES)), health.SERVICE_NAME,
             reflection.SERVICE_NAME],
            server,
        )
        try:
            self.port = self.security.add_port(server, self.config.listen)
        except RuntimeError as err:
            raise ConfigError(f"cannot listen on {self.config.listen}: {err}") from err
        if self.config.listen_unix:
            path = pathlib.Path(self.config.listen_unix)
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.security.add_port(server, f"unix:{path}")
        return server

    async def run(self) -> None:
        cfg = self.config
        if cfg.encryption is not None:
            log.info("encryption at rest: %s", cfg.encryption.describe())
            if cfg.encryption_rewrite:  # before serving: a failure stops the start, loudly
                await rewrite_encrypted(self.store, cfg.encryption)
        if cfg.provider != "none":
            await self._check_provider()
        # Secure: CA certificate, transport pair and a rotating join token where VMs' agents find them.
        join_dir = await asyncio.to_thread(self.security.join_run_dir, cfg.data_dir)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        server = self._build_server()
        await server.start()
        log.info("controller listening on %s%s (etcd %s, prefix %s)", self.address,
                 f" and unix:{cfg.listen_unix}" if cfg.listen_unix else "",
                 ",".join(cfg.etcd), cfg.etcd_prefix)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._health_loop(), name="etcd-health")
                for name, hub in self.hubs.items():
                    tg.create_task(hub.run(), name=f"watch-hub-{name}")
                    tg.create_task(hub.run_ticker(), name=f"watch-ticker-{name}")
                tg.create_task(self._progress_loop(), name="watch-progress")
                if cfg.etcd_compaction_interval > 0:
                    tg.create_task(run_compactor(self.store, self.clock, cfg.etcd_compaction_interval),
                                   name="etcd-compactor")
                tg.create_task(self.lifecycle.run(), name="node-lifecycle")
                tg.create_task(self.namespaces.run_ensure_system(), name="system-namespaces")
                tg.create_task(supervise("namespace controller", self.namespace_controller.run, self.clock),
                               name="namespace-controller")
                tg.create_task(supervise("node informer", self.node_informer.run, self.clock),
                               name="controller-node-informer")
                tg.create_task(supervise("eviction", self.evictor.run, self.clock), name="eviction")
                if cfg.replicaset_controller:
                    tg.create_task(supervise("shared pod informer", self.pod_informer.run, self.clock),
                                   name="shared-pod-informer")
                    tg.create_task(self._run_replicasets(), name="replicaset-controller")
                    tg.create_task(self._run_workload_controllers(), name="workload-controllers")
                    tg.create_task(self._run_endpoints(), name="endpoints-controller")
                if join_dir is not None:
                    tg.create_task(self.security.run_join_tokens(join_dir), name="join-token")
                if cfg.metrics_listen:
                    host, _, port = cfg.metrics_listen.rpartition(":")
                    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
                    tg.create_task(serve_metrics(self.metrics.render, host or "127.0.0.1", int(port),
                                                 started=fut), name="metrics")
                    self.metrics_port = await fut
                if cfg.provider != "none":
                    tg.create_task(self._run_vm_manager(), name="vm-manager")
                if cfg.autoscaler is not None:
                    tg.create_task(self._run_autoscaler(cfg.autoscaler), name="autoscaler")
                # The gRPC server serves on its own (C core) until stopped below. No task here
                # awaits server.wait_for_termination(): cancelling that await cancels the
                # future stop() waits on, and shutdown would end in CancelledError.
                self.started.set()
        finally:
            await self.health.enter_graceful_shutdown()
            await server.stop(cfg.shutdown_grace)
            await self.proxy.close()
            await self.store.close()
            if cfg.listen_unix:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(cfg.listen_unix)
            log.info("controller stopped")

    async def _health_loop(self) -> None:
        serving: bool | None = None
        while True:
            try:
                await self.store.current_revision()
                ok = True
            except CowpodError as err:
                ok = False
                if serving is not False:
                    log.warning("etcd not answering: %s; health NOT_SERVING", err)
            if ok != serving:
                serving = ok
                status = health_pb2.HealthCheckResponse
                await self.health.set("", status.SERVING if ok else status.NOT_SERVING)
                if ok:
                    log.info("etcd answers; health SERVING")
            await self.clock.sleep(self.config.health_period)

    async def _progress_loop(self, period: float = 5.0) -> None:
        """Ask etcd where every watch stands, so idle streams' BOOKMARKs move forward."""
        request = getattr(self.store, "request_progress", None)
        if request is None:
            return
        while True:
            await self.clock.sleep(period)
            request()

    def _vm_data_dir(self) -> pathlib.Path:
        # The CLI's default data directory (`cowpod up`), never the working directory.
        return self.config.data_dir or pathlib.Path.home() / ".cowpod"

    async def _check_provider(self) -> None:
        """The provider's preflight (engine, image, credentials, inventory): a wrong
        setting stops the controller with one line, before it serves anything."""
        cfg = self.config
        try:
            await check_provider(cfg.provider, cfg.provider_settings, self._vm_data_dir(), self.clock,
                                 self._controller_address())
        except CowpodError as err:
            raise ConfigError(f"provider {cfg.provider}: {err}") from None

    def _controller_address(self) -> ControllerAddress:
        return ControllerAddress(tcp=self.address, unix=self.config.listen_unix)

    async def _run_vm_manager(self) -> None:
        address = f"unix://{self.config.listen_unix}" if self.config.listen_unix else self.address
        data_dir = self._vm_data_dir()
        async with connect(self.security.self_client_settings(address)) as client:
            # Clone/destroy durations and VMs by phase go on this controller's /metrics.
            manager = VMManager(client, self.config.provider, data_dir, self.clock,
                                settings=self.config.provider_settings, controller=self._controller_address(),
                                registry=self.metrics.registry, watches=self.watches)
            log.info("VM manager started (provider %s, data dir %s)", self.config.provider, data_dir)
            await manager.run()

    async def _run_autoscaler(self, cluster: ClusterConfig) -> None:
        address = f"unix://{self.config.listen_unix}" if self.config.listen_unix else self.address
        options = Options(parent_idle_pause_s=self.config.autoscaler_parent_idle_pause)
        async with connect(self.security.self_client_settings(address)) as client:
            await Autoscaler(client, cluster, clock=self.clock, options=options, watches=self.watches,
                             registry=self.metrics.registry).run()

    async def _run_replicasets(self) -> None:
        address = f"unix://{self.config.listen_unix}" if self.config.listen_unix else self.address
        async with connect(self.security.self_client_settings(address)) as client:
            rsc = ReplicaSetController(GrpcWorkloadAPI(client), self.watches, self.clock,
                                       resync_seconds=self.config.replicaset_resync,
                                       registry=self.metrics.registry, pod_informer=self.pod_informer)
            await supervise("replicaset controller", rsc.run, self.clock)

    async def _run_workload_controllers(self) -> None:
        """Deployments, Jobs and DaemonSets (controller/deployment.py, job.py, daemonset.py), on
        one client of the local API; each loop supervised on its own. Imported here: the
        DaemonSet controller asks the scheduler's pure rules (as the autoscaler does), and the
        controller imports `scheduler` only where a loop that needs it starts."""
        from google.protobuf.message import Message

        from controller.daemonset import DaemonSetController
        from controller.daemonset_api import DAEMONSETS
        from controller.deployment import DeploymentController
        from controller.deployment_api import DEPLOYMENTS
        from controller.job import JobController
        from controller.job_api import JOBS
        from cowpod.v1.workload_pb2 import DaemonSetWatchEvent, DeploymentWatchEvent, JobWatchEvent

        address = f"unix://{self.config.listen_unix}" if self.config.listen_unix else self.address
        reg, w = self.metrics.registry, self.watches
        # Watches from the hubs in process (as the ReplicaSet controller's); writes over the API.
        def own(kind: Kind[Any], event: type[Message]) -> Any:
            return hub_watch(Resource(kind, self.store, self.clock, self.hubs[kind.resource]), event)

        async with connect(self.security.self_client_settings(address)) as client:
            loops = {
                "deployment controller": DeploymentController(
                    client, self.clock, registry=reg,
                    watch_deployments=own(DEPLOYMENTS, DeploymentWatchEvent), watch_sets=w.replicasets,
                    watch_pods=w.pods).run,
                "job controller": JobController(client, self.clock, registry=reg,
                                                watch_jobs=own(JOBS, JobWatchEvent),
                                                watch_pods=self.pod_informer).run,
                "daemonset controller": DaemonSetController(
                    client, self.clock, registry=reg, watch_sets=own(DAEMONSETS, DaemonSetWatchEvent),
                    watch_nodes=w.nodes, watch_pods=self.pod_informer).run,
            }
            async with asyncio.TaskGroup() as tg:
                for name, run in loops.items():
                    tg.create_task(supervise(name, run, self.clock), name=name.replace(" ", "-"))

    async def _run_endpoints(self) -> None:
        # Reads and writes in process: Endpoints have no write verb in the API.
        services = hub_watch(self.services.res, service_pb2.ServiceWatchEvent)
        epc = EndpointsController(services, self.pod_informer, self.endpoints_r, self.clock)
        await supervise("endpoints controller", epc.run, self.clock)

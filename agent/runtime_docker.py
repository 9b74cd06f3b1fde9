"""`Runtime` on the Docker engine through the blocking `docker` SDK.

Every SDK call runs on a private thread pool (`_call`), never on the event
loop; the pool is sized for slow calls (log follows, exec) to not starve the
others. Inspect results are cached per (container id, state) because a
container's facts only change when its state does: Docker never restarts our
containers (restart policy "no"), the agent does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import re
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
from docker.types import Mount as DockerMount

from agent import labels as L
from agent.metrics import AgentMetrics
from agent.runtime import (
    ContainerInfo,
    CreateSpec,
    EngineError,
    ExecResult,
    ImageError,
    Kind,
    RunState,
    VMInfo,
)
from cowpod.images import PAUSE_IMAGE, internal_labels_violation

log = logging.getLogger(__name__)
T = TypeVar("T")

# Go's os.ModeSymlink, in the mode of Docker's path stat.
_GO_MODE_SYMLINK = 1 << 27
_PROBE_LABEL = "cowpod.hostpath-probe"
# The engine's per-container files a container joining another's network shares.
_VM_HOST_FILES = (("HostsPath", "/etc/hosts"), ("ResolvConfPath", "/etc/resolv.conf"),
                  ("HostnamePath", "/etc/hostname"))

_NOT_FOUND_HINTS = ("not found", "manifest unknown", "does not exist", "pull access denied", "no such image")
# No registry answers at all (cowpod clusters usually have none): for an image
# that is not on the node this is "not found", not a transient pull failure.
_NO_REGISTRY_HINTS = ("no such host", "connection refused", "network is unreachable", "server misbehaving")


_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def parse_time(text: str | None) -> float | None:
    """Docker's RFC 3339 nanosecond times; the zero time means 'never'."""
    if not text or text.startswith("0001-01-01"):
        return None
    m = _TIME_RE.match(text)
    if m is None:
        return None
    tz = m.group(3) or "Z"
    stamp = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if tz == "Z" else tz))
    frac = m.group(2) or ""
    return stamp.timestamp() + (float("0." + frac) if frac else 0.0)


def info_from_inspect(attrs: Mapping[str, Any]) -> ContainerInfo | None:
    cfg = attrs.get("Config") or {}
    lab: Mapping[str, str] = cfg.get("Labels") or {}
    if L.POD_UID not in lab:
        return None
    st = attrs.get("State") or {}
    status = st.get("Status", "")
    if status in ("running", "paused", "restarting"):
        state = RunState.RUNNING
    elif status == "created":
        state = RunState.CREATED
    else:
        state = RunState.EXITED
    started = parse_time(st.get("StartedAt"))
    net = attrs.get("NetworkSettings") or {}
    ip = net.get("IPAddress") or ""
    if not ip:
        for n in (net.get("Networks") or {}).values():
            if n.get("IPAddress"):
                ip = n["IPAddress"]
                break
    try:
        kind = Kind(lab.get(L.CONTAINER_KIND, "app"))
    except ValueError:
        kind = Kind.APP
    return ContainerInfo(
        id=attrs["Id"],
        pod_uid=lab.get(L.POD_UID, ""),
        pod_name=lab.get(L.POD_NAME, ""),
        pod_namespace=lab.get(L.POD_NAMESPACE, ""),
        name=lab.get(L.CONTAINER_NAME, ""),
        kind=kind,
        attempt=_int(lab.get(L.ATTEMPT)),
        streak=_int(lab.get(L.BACKOFF_STREAK)),
        spec_hash=lab.get(L.SPEC_HASH, ""),
        state=state,
        exit_code=int(st.get("ExitCode") or 0),
        oom_killed=bool(st.get("OOMKilled")),
        error=st.get("Error") or "",
        created_at=parse_time(attrs.get("Created")) or 0.0,
        started_at=started,
        finished_at=parse_time(st.get("FinishedAt")),
        image=cfg.get("Image", ""),
        image_id=attrs.get("Image", ""),
        ip=ip,
        grace_seconds=_int(lab.get(L.GRACE), 30),
        labels=dict(lab),
    )


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


class DockerRuntime:
    def __init__(
        self,
        node_name: str,
        *,
        client: docker.DockerClient | None = None,
        threads: int = 32,
        metrics: AgentMetrics | None = None,
        probe_image: str = PAUSE_IMAGE,
    ) -> None:
        self._node = node_name
        self._probe_image = probe_image
        self._probes: dict[str, str] = {}  # host path prefix -> probe container id
        self._metrics = metrics
        self._docker = client or docker.from_env(timeout=120)
        self._api = self._docker.api
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        self._cache: dict[str, tuple[str, ContainerInfo]] = {}
        self._lock = threading.Lock()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        if self._metrics is None:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        call = getattr(fn, "__name__", "call").strip("_").removesuffix("_sync")
        t0 = time.monotonic()
        ok = False
        try:
            out = await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
            ok = True
            return out
        finally:
            self._metrics.docker_call(call, time.monotonic() - t0, ok)

    def _filters(self, pod_uid: str | None) -> dict[str, Any]:
        lab = [f"{L.MANAGED}=1", f"{L.NODE}={self._node}"]
        if pod_uid is not None:
            lab.append(f"{L.POD_UID}={pod_uid}")
        return {"label": lab}

    def _list_sync(self, pod_uid: str | None) -> list[ContainerInfo]:
        summaries = self._api.containers(all=True, filters=self._filters(pod_uid))
        out: list[ContainerInfo] = []
        seen: set[str] = set()
        for s in summaries:
            cid, state = s["Id"], s.get("State", "")
            seen.add(cid)
            with self._lock:
                hit = self._cache.get(cid)
            if hit is not None and hit[0] == state and state != "created":
                out.append(hit[1])
                continue
            try:
                attrs = self._api.inspect_container(cid)
            except docker.errors.NotFound:
                continue
            info = info_from_inspect(attrs)
            if info is None:
                continue
            with self._lock:
                self._cache[cid] = (attrs.get("State", {}).get("Status", ""), info)
            out.append(info)
        if pod_uid is None:
            with self._lock:
                for cid in [c for c in self._cache if c not in seen]:
                    del self._cache[cid]
        return out

    async def list_containers(self, *, pod_uid: str | None = None) -> list[ContainerInfo]:
        return await self._call(self._list_sync, pod_uid)

    def _image_present_sync(self, image: str) -> bool:
        try:
            self._api.inspect_image(image)  # type: ignore[no-untyped-call]
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False

    async def image_present(self, image: str) -> bool:
        return await self._call(self._image_present_sync, image)

    def _pull_sync(self, image: str) -> None:
        repo, tag = _split_ref(image)
        try:
            self._api.pull(repo, tag=tag)
        except docker.errors.APIError as err:
            text = str(err.explanation or err)
            low = text.lower()
            missing = any(h in low for h in (*_NOT_FOUND_HINTS, *_NO_REGISTRY_HINTS))
            reason = "ErrImageNotFound" if missing else "ErrImagePull"
            raise ImageError(reason, f"pulling image {image!r} failed: {text}") from err

    async def pull_image(self, image: str) -> None:
        await self._call(self._pull_sync, image)

    def _create_sync(self, spec: CreateSpec) -> str:
        mounts = [
            DockerMount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only)  # type: ignore[arg-type]
            for m in spec.mounts
        ]
        host_cfg: dict[str, Any] = {
            "mounts": mounts,
            "restart_policy": {"Name": "no"},
            "init": False,
        }
        if spec.network_mode:
            host_cfg["network_mode"] = spec.network_mode
        if spec.ipc_mode:
            host_cfg["ipc_mode"] = spec.ipc_mode
        if spec.pid_mode:
            host_cfg["pid_mode"] = spec.pid_mode
        if spec.cgroup_parent:
            host_cfg["cgroup_parent"] = spec.cgroup_parent
        if spec.nano_cpus:
            host_cfg["nano_cpus"] = spec.nano_cpus
        if spec.cpu_shares:
            host_cfg["cpu_shares"] = spec.cpu_shares
        if spec.memory_limit:
            host_cfg["mem_limit"] = spec.memory_limit
            # No swap beyond the limit: a pod over its memory is OOMKilled,
            # as in Kubernetes, rather than slowly swapping.
            host_cfg["memswap_limit"] = spec.memory_limit
        if spec.memory_reservation:
            host_cfg["mem_reservation"] = spec.memory_reservation
        if spec.published_ports:
            host_cfg["port_bindings"] = {k: v for k, v in spec.published_ports.items()}
        if spec.pids_limit:
            host_cfg["pids_limit"] = spec.pids_limit
        if spec.cap_drop:
            host_cfg["cap_drop"] = list(spec.cap_drop)
        if spec.group_add:
            host_cfg["group_add"] = [str(g) for g in spec.group_add]
        if spec.read_only_rootfs:
            host_cfg["read_only"] = True
        if spec.no_new_privileges:
            host_cfg["security_opt"] = ["no-new-privileges"]
        self._refuse_internal_image(spec.image)
        user = self._user_sync(spec)
        for m in spec.mounts:
            if m.kind == "bind" and m.host_prefix:
                self._refuse_host_path_links(m.host_prefix, m.source)
        hc = self._api.create_host_config(**host_cfg)
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "name": spec.name,
            "labels": dict(spec.labels),
            "environment": dict(spec.env),
            "host_config": hc,
            "tty": spec.tty,
            "stdin_open": spec.stdin_open,
        }
        if spec.entrypoint is not None:
            kwargs["entrypoint"] = list(spec.entrypoint)
        if spec.cmd is not None:
            kwargs["command"] = list(spec.cmd)
        if spec.working_dir:
            kwargs["working_dir"] = spec.working_dir
        if user:
            kwargs["user"] = user
        if spec.hostname:
            kwargs["hostname"] = spec.hostname
        if spec.published_ports:
            kwargs["ports"] = [_port_key(k) for k in spec.published_ports]
        try:
            res = self._api.create_container(**kwargs)
        except docker.errors.ImageNotFound as err:
            raise ImageError(
                "ErrImageNotFound", f"image {spec.image!r} not found: {err.explanation}"
            ) from err
        except docker.errors.APIError as err:
            if err.status_code == 409:
                # A container of this name exists: a crash between create and
                # label read. Remove the stale one and retry once.
                self._api.remove_container(spec.name, force=True)
                res = self._api.create_container(**kwargs)
            else:
                raise EngineError(f"create {spec.name}: {err.explanation or err}") from err
        return str(res["Id"])

    def _user_sync(self, spec: CreateSpec) -> str:
        """Docker's `--user` for runAsUser/runAsGroup ("" = the image's user), refusing
        runAsNonRoot when the process would be uid 0, as kubelet does."""
        uid = spec.run_as_user
        image_user = ""
        if uid is None and (spec.run_as_non_root or spec.run_as_group is not None):
            try:
                attrs = self._api.inspect_image(spec.image)  # type: ignore[no-untyped-call]
                image_user = str((attrs.get("Config") or {}).get("User") or "")
            except docker.errors.ImageNotFound as err:
                raise ImageError("ErrImageNotFound", f"image {spec.image!r} not found") from err
        if spec.run_as_non_root:
            who = str(uid) if uid is not None else image_user.split(":")[0]
            if who in ("", "0", "root"):
                raise EngineError("container has runAsNonRoot and image will run as root "
                                  f"(user {who or 'unset'}): set runAsUser or use an image with a "
                                  "numeric non-root USER")
            if not who.isdigit():
                raise EngineError(f"container has runAsNonRoot and image has non-numeric user ({who}), "
                                  "cannot verify user is non-root")
        if uid is None and spec.run_as_group is None:
            return ""
        name = str(uid) if uid is not None else (image_user.split(":")[0] or "0")
        return f"{name}:{spec.run_as_group}" if spec.run_as_group is not None else name

    def _refuse_internal_image(self, image: str) -> None:
        """Raise if `image` is a cowpod VM disk or snapshot. Checked on the image
        the engine resolves the reference to, so an image named by id, digest
        or a second tag is caught as well as its name (cowpod/images.py)."""
        try:
            attrs = self._api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return  # the create reports the missing image
        why = internal_labels_violation(attrs.get("Config", {}).get("Labels"))
        if why is not None:
            raise ImageError("InvalidImageName", f"image {image!r}: {why}")

    def _probe_sync(self, prefix: str) -> str:
        """A container created (never started) with `prefix` bound read-only at /h: the
        engine's own view of the host directory, which it resolves binds in."""
        cid = self._probes.get(prefix)
        if cid is not None:
            return cid
        name = f"cowpod-hostpath-{self._node}-{hashlib.sha256(prefix.encode()).hexdigest()[:12]}"
        try:
            cid = str(self._api.inspect_container(name)["Id"])
        except docker.errors.NotFound:
            hc = self._api.create_host_config(
                mounts=[DockerMount(target="/h", source=prefix, type="bind", read_only=True)],
                network_mode="none")
            try:
                res = self._api.create_container(
                    self._probe_image, name=name, labels={L.NODE: self._node, _PROBE_LABEL: "1"},
                    host_config=hc, network_disabled=True)
            except docker.errors.APIError as err:
                if err.status_code != 409:  # 409: another thread made it just now
                    raise EngineError(f"host path prefix {prefix!r}: {err.explanation or err}") from err
                res = self._api.inspect_container(name)
            cid = str(res["Id"])
        self._probes[prefix] = cid
        return cid

    def _lstat_sync(self, cid: str, path: str) -> dict[str, Any] | None:
        """Docker's path stat in a container: lstat (the last component is not followed)."""
        api: Any = self._api  # the SDK has no call for HEAD /archive (a stat without the content)
        res = api.head(api._url("/containers/{0}/archive", cid), params={"path": path})
        if res.status_code == 404:
            return None
        api._raise_for_status(res)
        stat: dict[str, Any] = json.loads(base64.b64decode(res.headers["X-Docker-Container-Path-Stat"]))
        return stat

    def _refuse_host_path_links(self, prefix: str, path: str) -> None:
        """Raise unless every component of `path` below `prefix` exists on the host and
        none is a symbolic link (agent/hostpath.py): dockerd follows links when it binds,
        so a link planted by a pod with a writable mount could point at its own socket."""
        cid = self._probe_sync(prefix)
        inside = "/h"
        for part in path[len(prefix):].strip("/").split("/") if path != prefix else []:
            inside += "/" + part
            stat = self._lstat_sync(cid, inside)
            where = prefix + inside[2:]
            if stat is None:
                raise EngineError(f"hostPath {path!r}: {where} does not exist on the host")
            if int(stat.get("mode", 0)) & _GO_MODE_SYMLINK:
                raise EngineError(f"hostPath {path!r}: {where} is a symbolic link, which is never followed")

    def _close_probes_sync(self) -> None:
        """Remove the host-path probe containers (a VM's also go with the VM)."""
        for cid in self._probes.values():
            with contextlib.suppress(docker.errors.APIError):
                self._api.remove_container(cid, force=True)
        self._probes.clear()

    async def create_container(self, spec: CreateSpec) -> str:
        return await self._call(self._create_sync, spec)

    def _start_sync(self, cid: str) -> None:
        try:
            self._api.start(cid)
        except docker.errors.APIError as err:
            raise EngineError(f"start: {err.explanation or err}") from err

    async def start_container(self, container_id: str) -> None:
        await self._call(self._start_sync, container_id)

    def _is_running_sync(self, cid: str) -> bool:
        try:
            st = self._api.inspect_container(cid).get("State") or {}
        except docker.errors.NotFound:
            return False
        return bool(st.get("Running"))

    async def is_running(self, container_id: str) -> bool:
        return await self._call(self._is_running_sync, container_id)

    def _signal_sync(self, cid: str, sig: str) -> None:
        try:
            self._api.kill(cid, signal=sig)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            # 409: not running any more; that is what we wanted.
            if err.status_code != 409:
                raise EngineError(f"signal {sig}: {err.explanation or err}") from err

    async def signal_container(self, container_id: str, signal: str) -> None:
        await self._call(self._signal_sync, container_id, signal)

    def _remove_sync(self, cid: str) -> None:
        try:
            self._api.remove_container(cid, force=True, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            if "already in progress" not in str(err):
                raise EngineError(f"remove: {err.explanation or err}") from err
        with self._lock:
            self._cache.pop(cid, None)

    async def remove_container(self, container_id: str) -> None:
        await self._call(self._remove_sync, container_id)

    def _exec_sync(self, cid: str, command: Sequence[str], stdin: bytes) -> ExecResult:
        try:
            ex = self._api.exec_create(cid, list(command), stdout=True, stderr=True, stdin=bool(stdin))
            if stdin:
                sock = self._api.exec_start(ex["Id"], socket=True)
                raw: Any = getattr(sock, "_sock", sock)
                raw.sendall(stdin)
                with contextlib.suppress(OSError):
                    raw.shutdown(1)  # SHUT_WR: the command sees EOF
                out, err = _read_multiplexed(raw)
                raw.close()
            else:
                out_b, err_b = self._api.exec_start(ex["Id"], demux=True)
                out, err = out_b or b"", err_b or b""
            code = self._api.exec_inspect(ex["Id"]).get("ExitCode")
        except docker.errors.APIError as e:
            raise EngineError(f"exec: {e.explanation or e}") from e
        return ExecResult(exit_code=int(code if code is not None else 126), stdout=out, stderr=err)

    async def exec(
        self, container_id: str, command: Sequence[str], *, stdin: bytes = b"", timeout: float | None = None
    ) -> ExecResult:
        fut = self._call(self._exec_sync, container_id, command, stdin)
        if timeout is None:
            return await fut
        return await asyncio.wait_for(fut, timeout)

    def _exec_session_sync(self, cid: str, command: Sequence[str], tty: bool) -> DockerExecSession:
        try:
            ex = self._api.exec_create(cid, list(command), stdout=True, stderr=True, stdin=True, tty=tty)
            sock = self._api.exec_start(ex["Id"], socket=True, tty=tty)
        except docker.errors.APIError as e:
            raise EngineError(f"exec: {e.explanation or e}") from e
        return DockerExecSession(self, str(ex["Id"]), getattr(sock, "_sock", sock), tty)

    async def exec_session(self, container_id: str, command: Sequence[str], *,
                           tty: bool) -> DockerExecSession:
        return await self._call(self._exec_session_sync, container_id, command, tty)

    async def logs(
        self,
        container_id: str,
        *,
        follow: bool = False,
        tail: int = 0,
        timestamps: bool = False,
        since: float = 0.0,
    ) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=64)
        holder: list[Any] = []

        def put(item: bytes | BaseException | None) -> None:
            fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            with contextlib.suppress(Exception):
                fut.result()

        def pump() -> None:
            try:
                kwargs: dict[str, Any] = {
                    "stream": True,
                    "follow": follow,
                    "timestamps": timestamps,
                    "tail": tail if tail > 0 else "all",
                }
                if since > 0:
                    kwargs["since"] = since
                stream = self._api.logs(container_id, **kwargs)
                holder.append(stream)
                for chunk in stream:
                    put(chunk)
            except docker.errors.NotFound as err:
                put(EngineError(f"container {container_id[:12]} is gone: {err.explanation}"))
            except Exception as err:  # the stream was closed under us, or the engine failed
                if not closed.is_set():
                    put(err)
            finally:
                put(None)

        closed = threading.Event()
        task = loop.run_in_executor(self._pool, pump)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            closed.set()
            for s in holder:
                with contextlib.suppress(Exception):
                    s.close()
            # Drain so the pump thread is never stuck on a full queue.
            while not task.done():
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(0.01)

    def _ensure_volume_sync(self, name: str, lab: Mapping[str, str], tmpfs: bool, size: int) -> None:
        try:
            self._api.inspect_volume(name)
            return
        except docker.errors.NotFound:
            pass
        opts: dict[str, str] = {}
        if tmpfs:
            opts = {"type": "tmpfs", "device": "tmpfs", "o": f"size={size}" if size else ""}
            if not opts["o"]:
                del opts["o"]
        self._api.create_volume(name=name, driver="local", driver_opts=opts or None, labels=dict(lab))

    async def ensure_volume(self, name: str, labels: Mapping[str, str], *, tmpfs: bool, size: int) -> None:
        await self._call(self._ensure_volume_sync, name, labels, tmpfs, size)

    def _remove_volume_sync(self, name: str) -> None:
        try:
            self._api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as err:
            raise EngineError(f"remove volume {name}: {err.explanation or err}") from err

    async def remove_volume(self, name: str) -> None:
        await self._call(self._remove_volume_sync, name)

    def _put_files_sync(self, container_id: str, directory: str, files: Mapping[str, bytes],
                        mode: int) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        try:
            self._api.put_archive(container_id, directory, buf.getvalue())
        except docker.errors.APIError as err:
            why = err.explanation or err
            raise EngineError(f"write files into {container_id[:12]}:{directory}: {why}") from err

    async def put_files(self, container_id: str, directory: str, files: Mapping[str, bytes],
                        *, mode: int = 0o644) -> None:
        await self._call(self._put_files_sync, container_id, directory, files, mode)

    def _list_volumes_sync(self) -> list[tuple[str, Mapping[str, str]]]:
        res = self._api.volumes(filters={"label": [f"{L.MANAGED}=1", f"{L.NODE}={self._node}"]})
        return [(v["Name"], v.get("Labels") or {}) for v in (res.get("Volumes") or [])]

    def _volume_usage_sync(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self._api.df().get("Volumes") or []:
            size = int((v.get("UsageData") or {}).get("Size", -1))
            if size >= 0:  # -1: not measured
                out[str(v["Name"])] = size
        return out

    def _layer_usage_sync(self) -> dict[str, int]:
        flt = self._filters(None)
        return {str(s["Id"]): int(s.get("SizeRw") or 0) for s in self._api.containers(size=True, filters=flt)}

    async def writable_layer_usage(self) -> Mapping[str, int]:
        """`docker ps --size` of this node's running containers (the engine measures on the host)."""
        return await self._call(self._layer_usage_sync)

    async def volume_usage(self) -> Mapping[str, int]:
        """The engine's `system df`: it measures every volume's directory (du) on the host,
        where a VM's agent cannot look. Called only while some pod needs it."""
        return await self._call(self._volume_usage_sync)

    async def list_volumes(self) -> list[tuple[str, Mapping[str, str]]]:
        return await self._call(self._list_volumes_sync)

    async def events(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        holder: list[Any] = []
        stopping = threading.Event()

        def pump() -> None:
            try:
                stream = self._api.events(
                    decode=True,
                    filters={"type": "container", "label": [f"{L.MANAGED}=1", f"{L.NODE}={self._node}"]},
                )
                holder.append(stream)
                for ev in stream:
                    uid = ((ev.get("Actor") or {}).get("Attributes") or {}).get(L.POD_UID)
                    if not uid:
                        continue
                    if ev.get("status") == "die":
                        # Docker announces "die" a moment before inspect says
                        # the container stopped; hold the news until it does.
                        self._wait_stopped(ev.get("id", ""))
                    loop.call_soon_threadsafe(queue.put_nowait, uid)
            except Exception as err:
                if not stopping.is_set():
                    log.warning("docker event stream broke: %s", err)
            finally:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(queue.put_nowait, None)

        task = loop.run_in_executor(self._pool, pump)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            stopping.set()
            for s in holder:
                with contextlib.suppress(Exception):
                    s.close()
            await asyncio.wait({task}, timeout=2)

    def _wait_stopped(self, cid: str) -> None:
        for _ in range(40):
            if not cid or not self._is_running_sync(cid):
                return
            time.sleep(0.025)

    def _vm_info_sync(self, name: str) -> VMInfo:
        try:
            attrs = self._api.inspect_container(name)
        except docker.errors.NotFound as err:
            raise EngineError(f"--vm-container {name!r}: no such container") from err
        net = attrs.get("NetworkSettings") or {}
        ip = net.get("IPAddress") or ""
        if not ip:
            for n in (net.get("Networks") or {}).values():
                if n.get("IPAddress"):
                    ip = n["IPAddress"]
                    break
        cid = attrs["Id"]
        parent = (attrs.get("HostConfig") or {}).get("CgroupParent") or "/docker"
        files = tuple((str(attrs[k]), at) for k, at in _VM_HOST_FILES if attrs.get(k))
        mounts = tuple((str(m["Source"]), str(m["Destination"])) for m in attrs.get("Mounts") or []
                       if m.get("Type") == "bind" and m.get("RW"))
        return VMInfo(id=cid, ip=ip, cgroup_parent=f"{parent.rstrip('/')}/{cid}", host_files=files,
                      mounts=mounts)

    async def vm_info(self, name: str) -> VMInfo:
        return await self._call(self._vm_info_sync, name)

    async def version(self) -> str:
        v = await self._call(self._api.version)
        return str(v.get("Version", "unknown"))

    async def data_root(self) -> str:
        # Only a hint for measuring the disk (agent/capacity.py falls back to "/"),
        # so an engine that does not answer here must not stop the agent's start.
        try:
            info = await self._call(self._api.info)
        except Exception as e:  # any engine or transport error
            log.warning("docker info: %s; measuring ephemeral-storage on /", e)
            return ""
        return str(info.get("DockerRootDir", ""))

    async def close(self) -> None:
        if self._probes:
            await self._call(self._close_probes_sync)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._docker.close()


def _split_ref(image: str) -> tuple[str, str]:
    if "@" in image:
        return image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = image.rpartition(":")
        return repo, tag
    return image, "latest"


def _port_key(key: str) -> str | tuple[int, str]:
    port, _, proto = key.partition("/")
    return (int(port), proto) if proto and proto != "tcp" else port


class DockerExecSession:
    """One `docker exec -i [-t]` attached by its socket. The socket is read by a thread
    of its own (a blocking recv must not hold one of the engine-call threads for as long
    as a shell stays open); writes, resizes and the exit code go through the runtime."""

    def __init__(self, runtime: DockerRuntime, exec_id: str, sock: Any, tty: bool) -> None:
        self._rt = runtime
        self.exec_id = exec_id
        self._sock = sock
        self._tty = tty

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)

        def put(item: tuple[int, bytes] | None) -> None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        def pump() -> None:
            buf = b""
            try:
                while True:
                    chunk = self._sock.recv(65536)
                    if not chunk:
                        break
                    if self._tty:
                        put((1, chunk))
                        continue
                    buf += chunk
                    while len(buf) >= 8 and len(buf) >= 8 + int.from_bytes(buf[4:8], "big"):
                        size = int.from_bytes(buf[4:8], "big")
                        put((2 if buf[0] == 2 else 1, buf[8:8 + size]))
                        buf = buf[8 + size:]
            except OSError:
                pass
            finally:
                put(None)

        threading.Thread(target=pump, name=f"exec-{self.exec_id[:12]}", daemon=True).start()
        while (item := await queue.get()) is not None:
            yield item

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._sock.sendall, data)

    async def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self._sock.shutdown, 1)  # SHUT_WR: the command reads EOF

    async def resize(self, width: int, height: int) -> None:
        if self._tty and width and height:
            with contextlib.suppress(docker.errors.APIError):
                await self._rt._call(self._rt._api.exec_resize, self.exec_id, height=height, width=width)

    async def exit_code(self) -> int:
        for _ in range(50):  # the engine may still say Running for a moment after the output ends
            info = await self._rt._call(self._rt._api.exec_inspect, self.exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else 126
            await asyncio.sleep(0.02)
        return 126

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def _read_multiplexed(sock: Any) -> tuple[bytes, bytes]:
    """Read Docker's multiplexed stream (8-byte headers) until EOF."""
    out, err = bytearray(), bytearray()
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 8:
            size = int.from_bytes(buf[4:8], "big")
            if len(buf) < 8 + size:
                break
            (out if buf[0] != 2 else err).extend(buf[8 : 8 + size])
            buf = buf[8 + size :]
    return bytes(out), bytes(err)

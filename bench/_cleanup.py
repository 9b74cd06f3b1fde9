"""One owner for what a benchmark starts, so a bench stopped any way leaves nothing.

    with BenchRun("schedule") as run:          # sweeps what killed runs left, first
        run.own_path(work)                     # files and globs to remove at the end
        run.own_docker(cluster=env.cluster_id) # VMs of a cluster id and the pods in them
        figures = asyncio.run(main())

A bench ends one of four ways. It finishes or raises: its own `finally` blocks
run, then BenchRun sweeps what is still there. It gets SIGINT (Ctrl-C) or
SIGTERM (`timeout`, a CI cancel): SIGTERM is turned into what SIGINT does
(under `asyncio.run`, the main task is cancelled, so `finally` blocks that
await still run), then the same sweep, and the exit status is 128 + the
signal, as a shell reports it. It gets SIGKILL: nothing of it runs, so every
BenchRun starts by sweeping what runs whose owner is dead left behind.

What belongs to a run is found by labels, never by guessing at names:

- processes: the run sets COWPOD_BENCH_RUN=<run id> in its environment, so
  everything it starts inherits it (etcd, the controller, the scheduler, node
  agents, QEMU, vcsim), also through start_new_session and grandchildren;
- Docker objects, and files: written to a record, one small JSON file per run
  in RUNS_DIR (COWPOD_BENCH_RUNS_DIR overrides it), because a container does
  not inherit an environment: containers by label, a cluster's VMs and the
  pod containers nested in them (`cowpod.local.docker_env`, as `cowpod down`
  finds them), a cluster's images, a network by name.

A run id names its owner, "<bench>.<pid>.<start time>" (the start time from
/proc, in clock ticks), so "is the owner alive" is one read of /proc that a
reused pid cannot fool. Another run whose owner is alive is never touched: two
benches, or a bench and the test suite, can run side by side.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from types import FrameType, TracebackType
from typing import Any

from cowpod.local.process import stat_state

ENV = "COWPOD_BENCH_RUN"
RUN_LABEL = "cowpod.bench.run"  # containers a bench makes itself carry <RUN_LABEL>=<run id>
RUNS_DIR_ENV = "COWPOD_BENCH_RUNS_DIR"
GRACE_S = 10.0

log = logging.getLogger("bench.cleanup")


def runs_dir() -> pathlib.Path:
    default = pathlib.Path(tempfile.gettempdir(), "cowpod-bench-runs")
    return pathlib.Path(os.environ.get(RUNS_DIR_ENV) or default)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19])


def owner_alive(run_id: str) -> bool:
    """Is the process that owns `run_id` still the one running under its pid?"""
    try:
        _, pid, started = run_id.rsplit(".", 2)
        return start_time(int(pid)) == int(started)
    except ValueError:
        return False  # not an id BenchRun made: nobody owns it


def marked_processes() -> Iterator[tuple[int, str]]:
    """(pid, run id) of every process carrying COWPOD_BENCH_RUN in its environment."""
    needle = f"{ENV}=".encode()
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        for var in environ.split(b"\0"):
            if var.startswith(needle):
                yield int(proc.name), var[len(needle) :].decode(errors="replace")
                break


def terminate(pids: list[int], grace: float = GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds. Returns the pids signalled."""
    sent = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
    deadline = time.monotonic() + grace
    alive = list(sent)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sent


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent to reap it."""
    try:
        state = stat_state(pathlib.Path(f"/proc/{pid}/stat"))
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours: reap it
        return False
    return True


@dataclass
class Record:
    """What a run owns besides its processes (those carry the run id themselves)."""

    run: str
    bench: str
    clusters: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    @staticmethod
    def load(path: pathlib.Path) -> Record | None:
        try:
            return Record(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)  # a reader never sees half a record


def remove_docker(rec: Record) -> list[str]:
    """Remove a record's containers (pods nested in them first), images and networks."""
    if not (rec.clusters or rec.labels or rec.networks):
        return []
    import docker.errors

    from cowpod.local.docker_env import DockerProblem, connect, nested_in, remove_cluster_containers

    try:
        client = connect()
    except DockerProblem as e:
        if rec.clusters or rec.networks:
            log.warning("cannot remove bench run %s's Docker objects: %s", rec.run, e)
        return []  # a run labelled only by its run label and no engine made no containers
    removed: list[str] = []
    for cid in rec.clusters:
        removed += remove_cluster_containers(cid)
    try:
        by_label = [f"cowpod.cluster={cid}" for cid in rec.clusters] + rec.labels
        owned = [c for lab in by_label for c in client.containers.list(all=True, filters={"label": lab})]
        ids = {str(c.id) for c in owned}
        nested = []
        if ids:
            for c in client.containers.list(all=True, filters={"label": "cowpod.managed=1"}):
                host = c.attrs.get("HostConfig", {}) or {}
                if c.id not in ids and nested_in(
                    str(host.get("NetworkMode", "")), str(host.get("CgroupParent", "")), ids
                ):
                    nested.append(c)
        for c in [*nested, *owned]:
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                c.remove(force=True, v=True)
                removed.append(str(c.name))
        for cid in rec.clusters:
            for _ in range(3):  # children's images first: one with dependants cannot go
                images = client.images.list(filters={"label": f"cowpod.cluster={cid}"})
                for img in images:
                    for ref in img.tags or [str(img.id)]:
                        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                            client.images.remove(ref, force=True)
                if not images:
                    break
        for name in rec.networks:
            from hypervisor.providers.docker import metadata_block

            for net in client.networks.list(names=[name]):
                if net.name == name:
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        net.remove()
                        removed.append(f"network {name}")
            metadata_block.unblock(name)
    finally:
        client.close()
    return removed


def remove_paths(rec: Record) -> None:
    for pattern in rec.paths:
        for p in glob.glob(pattern) or []:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(p)


@dataclass
class Swept:
    processes: list[int] = field(default_factory=list)
    docker: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.processes or self.docker or self.runs)


def sweep_dead_runs(directory: pathlib.Path | None = None, *, grace: float = GRACE_S) -> Swept:
    """Remove what runs whose owner is gone left: their processes, Docker objects and files."""
    directory = directory or runs_dir()
    out = Swept()
    orphans = [pid for pid, run in marked_processes() if not owner_alive(run) and pid != os.getpid()]
    out.processes = terminate(orphans, grace)
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        rec = Record.load(path)
        if rec is not None and owner_alive(rec.run):
            continue
        if rec is not None:
            out.docker += remove_docker(rec)
            remove_paths(rec)
            out.runs.append(rec.run)
        path.unlink(missing_ok=True)
    return out


class BenchRun:
    """A bench run's owner: sweeps dead runs on entry, its own leftovers on exit.

    `keep=True` (a bench's --keep) leaves everything of this run running and on
    disk for inspection; the next bench run sweeps it. `sweepers` run after the
    sweeps, for leftovers only a provider knows how to find (vcsim's guests)."""

    def __init__(
        self,
        bench: str,
        *,
        keep: bool = False,
        grace: float = GRACE_S,
        directory: pathlib.Path | None = None,
        sweepers: tuple[Callable[[], object], ...] = (),
    ) -> None:
        pid = os.getpid()
        self.id = f"{bench}.{pid}.{start_time(pid)}"
        self.keep = keep
        self.grace = grace
        self.directory = directory or runs_dir()
        self.record = Record(run=self.id, bench=bench, labels=[f"{RUN_LABEL}={self.id}"])
        self.sweepers = sweepers
        self.signal = 0
        self._saved_env: str | None = None
        self._saved_term: Any = None

    @property
    def path(self) -> pathlib.Path:
        return self.directory / f"{self.id}.json"

    def own_docker(self, *, cluster: str = "", label: str = "", network: str = "") -> None:
        """Docker objects to remove: a cluster id's VMs, pods and images; containers with
        `label` (k=v) and the pods nested in them; a network by name."""
        for items, value in (
            (self.record.clusters, cluster),
            (self.record.labels, label),
            (self.record.networks, network),
        ):
            if value and value not in items:
                items.append(value)
        self.record.save(self.path)

    def own_path(self, *paths: str | os.PathLike[str]) -> None:
        """Files or directories (globs allowed) to remove."""
        self.record.paths += [os.fspath(p) for p in paths if os.fspath(p) not in self.record.paths]
        self.record.save(self.path)

    # -- the context

    def __enter__(self) -> BenchRun:
        swept = sweep_dead_runs(self.directory, grace=self.grace)
        if swept:
            log.warning(
                "swept what killed bench runs left: %d processes, %s",
                len(swept.processes),
                ", ".join(swept.docker) or "no containers",
            )
        self._run_sweepers()
        self._saved_env = os.environ.get(ENV)
        os.environ[ENV] = self.id
        self.record.save(self.path)
        self._saved_term = signal.signal(signal.SIGTERM, self._on_sigterm)
        _active.append(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        # None: the old handler was not set from Python; the default is what stands then.
        signal.signal(signal.SIGTERM, self._saved_term if self._saved_term is not None else signal.SIG_DFL)
        _active.remove(self)
        if self._saved_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._saved_env
        if kind is KeyboardInterrupt and not self.signal:
            self.signal = signal.SIGINT
        if not self.keep:
            self.cleanup()
        if self.signal:
            what = "left for inspection (--keep)" if self.keep else "cleaned up"
            print(
                f"bench: stopped by {signal.Signals(self.signal).name}; {what}", file=sys.stderr, flush=True
            )
            raise SystemExit(128 + self.signal) from None

    def cleanup(self) -> Swept:
        """Stop this run's processes, remove its Docker objects and files, forget the record."""
        out = Swept()
        mine = [pid for pid, run in marked_processes() if run == self.id and pid != os.getpid()]
        out.processes = terminate(mine, self.grace)
        out.docker = remove_docker(self.record)
        remove_paths(self.record)
        self._run_sweepers()
        self.path.unlink(missing_ok=True)
        return out

    def _run_sweepers(self) -> None:
        for sweep in self.sweepers:
            try:
                sweep()
            except Exception:  # one sweeper failing must not keep the others from running
                log.exception("bench sweeper %s failed", getattr(sweep, "__name__", sweep))

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM does what SIGINT does: under asyncio.run its handler cancels the
        main task (so `finally` blocks that await still run); elsewhere it raises
        KeyboardInterrupt."""
        self.signal = signum
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
            return
        raise KeyboardInterrupt


_active: list[BenchRun] = []


def own_docker(*, cluster: str = "", label: str = "", network: str = "") -> None:
    """BenchRun.own_docker on the run in progress; nothing outside one (a bench's
    function called from a test owns its objects itself)."""
    if _active:
        _active[-1].own_docker(cluster=cluster, label=label, network=network)


def own_path(*paths: str | os.PathLike[str]) -> None:
    """BenchRun.own_path on the run in progress; nothing outside one."""
    if _active:
        _active[-1].own_path(*paths)


def run_labels() -> dict[str, str]:
    """Labels for a container a bench creates itself: the run in progress sweeps it."""
    return {RUN_LABEL: _active[-1].id} if _active else {}


__all__ = [
    "ENV",
    "RUN_LABEL",
    "BenchRun",
    "own_docker",
    "own_path",
    "owner_alive",
    "run_labels",
    "sweep_dead_runs",
]

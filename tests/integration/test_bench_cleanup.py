"""#16: a bench stopped with SIGTERM (as `timeout` does) or SIGINT leaves nothing
running, and a run after a SIGKILL sweeps what the killed one left.

Real processes: the scheduling bench at a small size (its own etcd, controller
and scheduler processes), and a small script that owns a process and files the
way a bench does (bench/_cleanup.py). What belongs to a run is found the way
the helper finds it: the COWPOD_BENCH_RUN=<run id> every process it starts
inherits, and its record under COWPOD_BENCH_RUNS_DIR (a private directory here,
so concurrent runs elsewhere on the machine are not this test's business).
"""

from __future__ import annotations

import pathlib
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.polling import eventually_sync

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is scripts, not an installed package

from bench._cleanup import RUNS_DIR_ENV, BenchRun, marked_processes, owner_alive, start_time  # noqa: E402

pytestmark = pytest.mark.integration

# Owns a child process and a file like a bench; prints READY and waits to be stopped.
OWNER = textwrap.dedent(
    """
    import pathlib, subprocess, sys, time
    sys.path.insert(0, {root!r})
    from bench._cleanup import BenchRun, own_path

    scratch = pathlib.Path(sys.argv[1])
    with BenchRun("owner", grace=2.0):
        scratch.mkdir()
        own_path(scratch)
        # start_new_session: not in the bench's process group, as etcd and the agents are not
        child = subprocess.Popen(["sleep", "1000"], start_new_session=True)
        print("READY", child.pid, flush=True)
        time.sleep(1000)
    """
)


def run_id(proc: subprocess.Popen[str], bench: str) -> str:
    return f"{bench}.{proc.pid}.{start_time(proc.pid)}"


def processes_of(run: str) -> list[int]:
    return [pid for pid, r in marked_processes() if r == run]


@pytest.fixture
def runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "runs"))
    return tmp_path / "runs"


def start_owner(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[str], int, str, pathlib.Path]:
    scratch = tmp_path / "scratch"
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(root=str(ROOT)), str(scratch)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    run = run_id(proc, "owner")
    return proc, int(line.split()[1]), run, scratch


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_run_stops_its_processes_and_removes_its_files(
    runs: pathlib.Path, tmp_path: pathlib.Path, sig: int, status: int
) -> None:
    proc, child, run, scratch = start_owner(tmp_path)
    assert processes_of(run) == [child] and scratch.is_dir()
    assert (runs / f"{run}.json").exists()
    proc.send_signal(sig)
    assert proc.wait(30) == status
    assert processes_of(run) == []
    assert not scratch.exists()
    assert list(runs.glob("*.json")) == []


def test_the_next_run_sweeps_what_a_sigkilled_run_left(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    proc, child, run, scratch = start_owner(tmp_path)
    proc.kill()
    proc.wait(30)
    # Nothing of the killed run ran: its child lives on, its files and record stay.
    assert processes_of(run) == [child] and not owner_alive(run)
    assert scratch.is_dir() and (runs / f"{run}.json").exists()
    with BenchRun("next", grace=2.0):
        assert processes_of(run) == []
        assert not scratch.exists()
        assert not (runs / f"{run}.json").exists()


def test_a_live_run_is_not_swept_by_another(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    proc, child, run, scratch = start_owner(tmp_path)
    try:
        with BenchRun("other", grace=2.0):
            assert processes_of(run) == [child] and scratch.is_dir()
    finally:
        proc.terminate()
        proc.wait(30)
    assert processes_of(run) == []


def schedule_bench(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[str], str, pathlib.Path]:
    """The scheduling bench, small, stopped while its cluster is up: after the hollow
    nodes registered, while it creates more pods than it will get to bind."""
    log = tmp_path / "bench.out"
    out = log.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "schedule.py"),
            "--nodes",
            "5",
            "--pods",
            "2000000",
            "--baseline-puts",
            "50",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    eventually_sync(
        lambda: "hollow nodes registered" in log.read_text() or proc.poll() is not None,
        timeout=120,
        what="the bench's cluster up",
    )
    text = log.read_text()
    assert proc.poll() is None, text
    found = re.search(r"work dir (\S+)", text)
    assert found is not None, text
    return proc, run_id(proc, "schedule"), pathlib.Path(found.group(1))


def test_schedule_bench_sigterm_leaves_no_process_or_file(runs: pathlib.Path, tmp_path: pathlib.Path) -> None:
    proc, run, work = schedule_bench(tmp_path)
    # etcd, the controller and the scheduler (which may still be starting)
    assert len(processes_of(run)) >= 2 and work.is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, (tmp_path / "bench.out").read_text()
    assert processes_of(run) == []
    assert not work.exists()


def test_schedule_bench_sigkill_then_the_next_run_starts_clean(
    runs: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    proc, run, work = schedule_bench(tmp_path)
    proc.kill()
    proc.wait(30)
    left = processes_of(run)
    assert len(left) >= 2 and work.is_dir()  # SIGKILL ran nothing: its cluster lives on
    with BenchRun("schedule"):
        assert processes_of(run) == []
        assert not work.exists()

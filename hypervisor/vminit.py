"""PID 1 of a docker-provider VM: the smallest init that behaves like a real VM's.

A VM container runs `python -m hypervisor.vminit`. It

1. takes on the VM's identity: writes /etc/machine-id from COWPOD_MACHINE_ID and
   remembers the VM name in /var/lib/cowpod/vm-name. When the remembered name
   differs from COWPOD_VM_NAME, this disk was copied from another VM (an
   instant clone starts from its parent's snapshot), so per-VM state the
   parent left behind is wiped first (like cloud-init's new instance-id);
2. starts the agent from COWPOD_AGENT_ARGV (a JSON list) and restarts it with
   back-off when it dies, as systemd's Restart=always would. With
   COWPOD_AGENT_START=wait it does not start the agent until SIGUSR1: an
   instant clone whose agent is injected warm (hypervisor/providers/docker/zygote.py) keeps it
   that way, and the provider sends SIGUSR1 to fall back to a cold start. A
   *warm shell* (a child container made ahead, before anyone knew its name)
   starts with no identity and no agent argv at all; the provider writes the
   identity it is given into /var/lib/cowpod/identity.json when it takes the
   shell, and a SIGUSR1 then makes the init read that file and start the agent.
   In wait mode step 1 is left to whoever starts the agent (the forked agent, or
   this init on SIGUSR1), never done at boot;
3. reaps every zombie (orphans reparent to PID 1);
4. on SIGTERM or SIGINT (`docker stop`) sends SIGTERM to the agent, waits up to
   COWPOD_STOP_GRACE seconds, kills what is left, and exits 0.

Signals are blocked and taken synchronously with sigtimedwait, so there is no
handler racing the main loop; children get an empty signal mask.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STATE_DIR = pathlib.Path("/var/lib/cowpod")
# Per-VM state that must not survive into a clone: the agent's node-local
# state and this init's own records.
PER_VM_STATE: tuple[str, ...] = ("agent", "vm-name", "identity.json")
# Written by the docker provider into a taken warm shell (see load_identity).
IDENTITY_FILE = "identity.json"

SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP}


@dataclass(frozen=True)
class InitConfig:
    vm_name: str
    machine_id: str
    agent_argv: tuple[str, ...]
    start_now: bool
    stop_grace: float
    root: pathlib.Path

    @staticmethod
    def from_env(env: Mapping[str, str], root: pathlib.Path = pathlib.Path("/")) -> InitConfig:
        raw = env.get("COWPOD_AGENT_ARGV", "")
        argv: tuple[str, ...] = ()
        if raw:
            parsed = json.loads(raw)
            if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
                raise ValueError("COWPOD_AGENT_ARGV: must be a JSON list of strings")
            argv = tuple(parsed)
        return InitConfig(
            vm_name=env.get("COWPOD_VM_NAME", ""),
            machine_id=env.get("COWPOD_MACHINE_ID", ""),
            agent_argv=argv,
            start_now=env.get("COWPOD_AGENT_START", "now") != "wait",
            stop_grace=float(env.get("COWPOD_STOP_GRACE", "8")),
            root=root,
        )


def log(msg: str) -> None:
    print(f"cowpod-init: {msg}", file=sys.stderr, flush=True)


def adopt_identity(cfg: InitConfig) -> bool:
    """Write the VM's identity to its disk; return True when the disk came from another VM.

    A warm shell boots with no name: it leaves the disk alone, and the provider
    wipes the parent's per-VM state and writes the new identity in one step when
    it takes the shell (hypervisor/providers/docker/vm_identity.py), so no boot-time write can
    race that."""
    if not cfg.vm_name:
        return False
    state = cfg.root / STATE_DIR.relative_to("/")
    state.mkdir(parents=True, exist_ok=True)
    name_file = state / "vm-name"
    previous = name_file.read_text().strip() if name_file.exists() else ""
    cloned = bool(previous) and previous != cfg.vm_name
    if cloned:
        log(f"disk was {previous!r}'s; wiping its per-VM state")
        for entry in PER_VM_STATE:
            p = state / entry
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
    if cfg.machine_id:
        etc = cfg.root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "machine-id").write_text(cfg.machine_id + "\n")
    if cfg.vm_name:
        name_file.write_text(cfg.vm_name + "\n")
    return cloned


def load_identity(cfg: InitConfig) -> InitConfig:
    """A warm shell's identity, given after it booted: `identity.json` holds
    {"vm_name", "agent_argv", "env"}. The env is added to os.environ so the
    agent gets what a VM started with its identity would have had. Returns
    `cfg` unchanged when there is no such file (or it is unreadable)."""
    path = cfg.root / STATE_DIR.relative_to("/") / IDENTITY_FILE
    try:
        data = json.loads(path.read_text())
        argv = tuple(str(a) for a in data["agent_argv"])
        env = {str(k): str(v) for k, v in dict(data.get("env") or {}).items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"no usable {path}: {err}")
        return cfg
    os.environ.update(env)
    return dataclasses.replace(cfg, vm_name=str(data.get("vm_name", cfg.vm_name)), agent_argv=argv)


class Init:
    """The supervision loop. `spawn` and `now` are parameters so tests can drive it."""

    def __init__(self, cfg: InitConfig) -> None:
        self.cfg = cfg
        self.agent_pid: int | None = None
        self.wanted = cfg.start_now and bool(cfg.agent_argv)
        self.backoff = 1.0
        self.next_start = 0.0
        self.started_at = 0.0
        self.stopping = False

    def spawn(self, argv: Sequence[str]) -> int:
        return os.posix_spawnp(argv[0], list(argv), dict(os.environ), setsigmask=())

    def maybe_start(self, now: float) -> None:
        if not self.wanted or self.stopping or self.agent_pid is not None or now < self.next_start:
            return
        try:
            self.agent_pid = self.spawn(self.cfg.agent_argv)
            self.started_at = now
            log(f"started agent (pid {self.agent_pid}): {' '.join(self.cfg.agent_argv)}")
        except OSError as err:
            log(f"cannot start agent: {err}; retrying in {self.backoff:.0f}s")
            self.next_start = now + self.backoff
            self.backoff = min(self.backoff * 2, 30.0)

    def reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.agent_pid:
                self.agent_pid = None
                code = os.waitstatus_to_exitcode(status)
                if not self.stopping:
                    if now - self.started_at > 60:
                        self.backoff = 1.0
                    log(f"agent exited ({code}); restarting in {self.backoff:.0f}s")
                    self.next_start = now + self.backoff
                    self.backoff = min(self.backoff * 2, 30.0)

    def on_signal(self, signo: int, now: float) -> None:
        if signo == signal.SIGCHLD:
            self.reap(now)
        elif signo == signal.SIGUSR1:
            if not self.cfg.agent_argv:
                self.cfg = load_identity(self.cfg)
            if not self.wanted and self.cfg.agent_argv:
                # A VM that waited took no identity at boot (see main): take it now,
                # before its agent reads the machine id.
                adopt_identity(self.cfg)
                log("SIGUSR1: starting the agent cold")
                self.wanted = True
                self.next_start = now
        elif signo in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True

    def shutdown(self) -> None:
        """Stop the agent (SIGTERM, then SIGKILL after the grace period), reap everything."""
        deadline = time.monotonic() + self.cfg.stop_grace
        if self.agent_pid is not None:
            log(f"stopping agent (pid {self.agent_pid})")
            _kill(self.agent_pid, signal.SIGTERM)
        while self.agent_pid is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                _kill(self.agent_pid, signal.SIGKILL)
                try:
                    os.waitpid(self.agent_pid, 0)
                except ChildProcessError:
                    pass
                self.agent_pid = None
                break
            signal.sigtimedwait({signal.SIGCHLD}, min(left, 0.5))
            self.reap(time.monotonic())
        # Whatever else is left (orphans of the agent) goes too; only as PID 1
        # of a namespace, where kill(-1) means "everything in this VM".
        if os.getpid() == 1:
            _kill(-1, signal.SIGKILL)
        self.reap(time.monotonic())

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        # Blocked signals are taken by sigtimedwait below, never by this handler;
        # installing it (after blocking) shows in /proc/1/status SigCgt, which is
        # how the provider tells that a SIGUSR1 sent now will not be lost (PID 1
        # ignores signals it has no handler for).
        signal.signal(signal.SIGUSR1, _never_called)
        while not self.stopping:
            now = time.monotonic()
            self.maybe_start(now)
            timeout = 1.0
            if self.wanted and self.agent_pid is None:
                timeout = max(0.05, min(timeout, self.next_start - now))
            info = signal.sigtimedwait(SIGNALS, timeout)
            if info is not None:
                self.on_signal(info.si_signo, time.monotonic())
            # A SIGCHLD can be merged with another pending one: reap anyway.
            self.reap(time.monotonic())
        self.shutdown()
        log("stopped")
        return 0


def _never_called(signo: int, frame: object) -> None:
    return None


def _kill(pid: int, signo: int) -> None:
    try:
        os.kill(pid, signo)
    except (ProcessLookupError, PermissionError):
        pass


def boot(cfg: InitConfig) -> Init:
    """What happens before the supervision loop.

    With COWPOD_AGENT_START=wait, whoever starts the agent gives the identity
    first: the warm agent forked into this VM (hypervisor/providers/docker/vm_agent.py)
    or this init on SIGUSR1. Adopting here too would race that start: this
    Python boots slower than a fork lands, and its wipe of the parent's state
    could land after the agent had begun."""
    if cfg.start_now:
        adopt_identity(cfg)
    if not cfg.agent_argv:
        log("COWPOD_AGENT_ARGV is empty: no agent to run; idling")
    return Init(cfg)


def main() -> int:
    return boot(InitConfig.from_env(os.environ)).run()


if __name__ == "__main__":
    sys.exit(main())

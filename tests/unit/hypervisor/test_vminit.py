"""The VM init: identity on disk, clone detection, agent supervision."""

from __future__ import annotations

import json
import pathlib
import signal
import sys
import time
from collections.abc import Callable, Sequence

import pytest

from hypervisor.vminit import Init, InitConfig, adopt_identity, boot


def cfg(
    root: pathlib.Path, name: str = "vm-a", argv: list[str] | None = None, start: str = "now"
) -> InitConfig:
    return InitConfig.from_env({
        "COWPOD_VM_NAME": name,
        "COWPOD_MACHINE_ID": "ab" * 16,
        "COWPOD_AGENT_ARGV": json.dumps(argv if argv is not None else ["true"]),
        "COWPOD_AGENT_START": start,
        "COWPOD_STOP_GRACE": "2",
    }, root=root)


def test_from_env_rejects_a_bad_argv(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="COWPOD_AGENT_ARGV"):
        InitConfig.from_env({"COWPOD_AGENT_ARGV": '"cowpod-agent"'}, root=tmp_path)


def test_first_boot_writes_identity(tmp_path: pathlib.Path) -> None:
    assert adopt_identity(cfg(tmp_path)) is False
    assert (tmp_path / "etc/machine-id").read_text() == "ab" * 16 + "\n"
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "vm-a\n"
    # A reboot of the same VM is not a clone.
    assert adopt_identity(cfg(tmp_path)) is False


def test_cloned_disk_wipes_the_parents_state(tmp_path: pathlib.Path) -> None:
    adopt_identity(cfg(tmp_path, "parent"))
    agent_state = tmp_path / "var/lib/cowpod/agent"
    agent_state.mkdir()
    (agent_state / "node-identity").write_text("parent")
    keep = tmp_path / "var/lib/cowpod/cache"
    keep.mkdir()
    assert adopt_identity(cfg(tmp_path, "child")) is True
    assert not agent_state.exists()
    assert keep.exists()  # warm caches survive the clone
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "child\n"


def test_agent_is_started_restarted_and_waits_in_wait_mode(tmp_path: pathlib.Path) -> None:
    spawned: list[list[str]] = []

    def recorder(pid: int) -> Callable[[Sequence[str]], int]:
        def spawn(argv: Sequence[str]) -> int:
            spawned.append(list(argv))
            return pid
        return spawn

    init = Init(cfg(tmp_path, argv=["agent", "--x"]))
    init.spawn = recorder(4242)  # type: ignore[method-assign,assignment]
    init.maybe_start(0.0)
    assert spawned == [["agent", "--x"]] and init.agent_pid == 4242

    waiting = Init(cfg(tmp_path, argv=["agent"], start="wait"))
    waiting.spawn = recorder(7)  # type: ignore[method-assign,assignment]
    waiting.maybe_start(0.0)
    assert waiting.agent_pid is None
    waiting.on_signal(signal.SIGUSR1, 1.0)
    waiting.maybe_start(1.0)
    assert waiting.agent_pid == 7


def test_real_child_is_reaped_and_restarted_with_backoff(tmp_path: pathlib.Path) -> None:
    init = Init(cfg(tmp_path, argv=[sys.executable, "-c", "pass"]))
    init.maybe_start(0.0)
    pid = init.agent_pid
    assert pid is not None
    # The init reaps it (not the test): poll as the init's SIGCHLD loop would.
    deadline = 200
    while init.agent_pid is not None and deadline:
        time.sleep(0.02)
        init.reap(100.0)
        deadline -= 1
    assert init.agent_pid is None
    assert init.next_start == 101.0  # restart after 1 s of back-off
    init.maybe_start(100.5)
    assert init.agent_pid is None
    init.maybe_start(101.0)
    assert init.agent_pid is not None
    # Stop it as docker stop would.
    init.on_signal(signal.SIGTERM, 102.0)
    init.shutdown()
    assert init.agent_pid is None


def test_a_warm_shell_takes_its_identity_file_on_sigusr1(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COWPOD_TEST_SHELL_VAR", raising=False)
    # A shell boots with no name and no agent: a cold fallback must find both in the file.
    shell = Init(InitConfig.from_env({"COWPOD_AGENT_START": "wait"}, root=tmp_path))
    spawned: list[list[str]] = []

    def spawn(argv: Sequence[str]) -> int:
        spawned.append(list(argv))
        return 9

    shell.spawn = spawn  # type: ignore[method-assign]
    shell.on_signal(signal.SIGUSR1, 0.0)  # no file yet: nothing to start
    shell.maybe_start(0.0)
    assert spawned == [] and shell.agent_pid is None
    state = tmp_path / "var/lib/cowpod"
    state.mkdir(parents=True)
    (state / "identity.json").write_text(json.dumps({
        "vm_name": "kid", "agent_argv": ["agent", "--node-name", "kid"],
        "env": {"COWPOD_TEST_SHELL_VAR": "kid"}}))
    shell.on_signal(signal.SIGUSR1, 1.0)
    shell.maybe_start(1.0)
    assert spawned == [["agent", "--node-name", "kid"]]
    assert shell.cfg.vm_name == "kid"
    import os
    assert os.environ["COWPOD_TEST_SHELL_VAR"] == "kid"
    # The identity file is per-VM state: a clone of this VM does not inherit it.
    (state / "vm-name").write_text("kid\n")  # the provider writes it when it takes the shell
    adopt_identity(cfg(tmp_path, "grandkid"))
    assert not (state / "identity.json").exists()


def test_a_nameless_shell_leaves_the_disk_to_the_provider(tmp_path: pathlib.Path) -> None:
    adopt_identity(cfg(tmp_path, "parent"))
    shell = InitConfig.from_env({"COWPOD_AGENT_START": "wait"}, root=tmp_path)
    assert adopt_identity(shell) is False
    # Nothing wiped at boot: the take wipes and writes in one step, so a late
    # boot can never undo a take.
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "parent\n"


def test_a_waiting_clone_takes_its_identity_from_whoever_starts_its_agent(tmp_path: pathlib.Path) -> None:
    # A clone's own container (no warm shell) boots on its parent's disk with its
    # own identity in the environment, its agent held back.
    adopt_identity(cfg(tmp_path, "parent"))
    (tmp_path / "var/lib/cowpod/agent").mkdir()
    init = boot(cfg(tmp_path, "kid", argv=["agent", "--node-name", "kid"], start="wait"))
    # Nothing at boot: a forked agent may be writing the identity at this moment.
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "parent\n"
    assert (tmp_path / "var/lib/cowpod/agent").exists()
    spawned: list[list[str]] = []

    def spawn(argv: Sequence[str]) -> int:
        spawned.append(list(argv))
        return 9

    init.spawn = spawn  # type: ignore[method-assign]
    # The cold fallback (SIGUSR1): identity first, then the agent.
    init.on_signal(signal.SIGUSR1, 0.0)
    init.maybe_start(0.0)
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "kid\n"
    assert (tmp_path / "etc/machine-id").read_text() == "ab" * 16 + "\n"
    assert not (tmp_path / "var/lib/cowpod/agent").exists()
    assert spawned == [["agent", "--node-name", "kid"]]


def test_a_vm_started_now_takes_its_identity_at_boot(tmp_path: pathlib.Path) -> None:
    adopt_identity(cfg(tmp_path, "parent"))
    boot(cfg(tmp_path, "full"))
    assert (tmp_path / "var/lib/cowpod/vm-name").read_text() == "full\n"

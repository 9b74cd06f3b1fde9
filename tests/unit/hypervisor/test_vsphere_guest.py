"""The vsphere guest init's pure parts and the provider client's fault, retry and re-login rules."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from cowpod.clock import FakeClock
from cowpod.errors import Unavailable
from hypervisor.guest import GuestBootstrap, GuestEndpoints
from hypervisor.providers.vsphere import guestinit
from hypervisor.providers.vsphere.client import VC, Session, fault_text, is_transient, vim, vmodl
from hypervisor.providers.vsphere.settings import parse_settings

T = TypeVar("T")

MOUNTINFO = (
    "104 87 254:0 /var/lib/docker/containers/1aa6467b/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n"
    "105 87 254:0 /var/lib/docker/containers/1aa6467b/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
)


def boot(**endpoint: str) -> GuestBootstrap:
    ep = {"controller": "127.0.0.1:7070", "agent_listen": "0.0.0.0:7071",
          "agent_advertise": "{guest_ip}:7071", **endpoint}
    return GuestBootstrap(node_name="kid", hostname="kid", machine_id="m" * 32, labels={"tier": "small"},
                          endpoints=GuestEndpoints(**ep, agent_args=("--vm-container", "{container_id}")))


def test_the_bootstrap_comes_from_vcsims_env_name_for_the_guestinfo_key() -> None:
    # vcsim: strings.ToUpper(key) with "." -> "_", prefixed VMX_.
    assert guestinit.ENV_KEY == "VMX_GUESTINFO_COWPOD_BOOTSTRAP"
    assert guestinit.read_bootstrap({"VMX_GUESTINFO_COWPOD_BOOTSTRAP": "abc"}) == "abc"


def test_the_init_env_carries_the_identity_and_fills_the_guests_own_values() -> None:
    env = guestinit.init_env(boot(), {"PATH": "/bin", "VMX_GUESTINFO_COWPOD_BOOTSTRAP": "secret"}, MOUNTINFO)
    argv = json.loads(env["COWPOD_AGENT_ARGV"])
    assert (env["COWPOD_VM_NAME"], env["COWPOD_MACHINE_ID"]) == ("kid", "m" * 32)
    assert argv[argv.index("--node-name") + 1] == "kid"
    assert argv[argv.index("--advertise") + 1] == "127.0.0.1:7071"
    assert argv[argv.index("--vm-container") + 1] == "1aa6467b"
    assert "--insecure" in argv
    # The join bundle (token, key) is not left in the agent's environment.
    assert "VMX_GUESTINFO_COWPOD_BOOTSTRAP" not in env and env["PATH"] == "/bin"


def test_outside_a_container_there_is_no_container_id() -> None:
    assert guestinit.container_id("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n") == ""


def test_a_fault_reads_as_its_name_message_and_own_fields() -> None:
    fault = vim.fault.InvalidPowerState(requestedState="poweredOff", existingState="poweredOn")
    assert fault_text(fault) == "InvalidPowerState (requestedState=poweredOff, existingState=poweredOn)"
    fault = vim.fault.InsufficientResourcesFault(msg="Insufficient memory resources.")
    assert fault_text(fault) == "InsufficientResourcesFault: Insufficient memory resources."
    # vcsim's messages are Go type names: dropped.
    assert fault_text(vmodl.fault.MethodNotFound(msg="*types.MethodNotFound", method="InstantClone_Task")
                      ) == "MethodNotFound (method=InstantClone_Task)"


def test_transient_faults() -> None:
    assert is_transient(ConnectionResetError()) and is_transient(vim.fault.TaskInProgress())
    assert not is_transient(vim.fault.InvalidLogin()) and not is_transient(vim.fault.DuplicateName())


def _session(retries: int = 2) -> tuple[Session, FakeClock]:
    clock = FakeClock()
    s = parse_settings({"server": "https://vc/sdk", "username": "u", "passwordFile": "/pw",
                        "datacenter": "DC", "cluster": "C", "controllerAddress": "h:1", "retries": retries},
                       "provider")
    return Session(s, "pw", clock), clock


def _no_server(session: Session) -> None:
    """Calls run their function directly, with no vCenter behind it."""
    def direct(fn: Callable[[VC], T]) -> T:
        return fn(VC(None, None))

    session.call_sync = direct  # type: ignore[method-assign]


async def _drive(clock: FakeClock, task: asyncio.Task[Any]) -> None:
    """Advance the clock whenever the retry loop sleeps, until the task ends."""
    while not task.done():
        await asyncio.sleep(0.01)
        await clock.advance(10.0)


async def test_transient_faults_are_retried_with_back_off_on_the_clock() -> None:
    session, clock = _session(retries=2)
    _no_server(session)
    calls: list[int] = []

    def flaky(vc: Any) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    task = asyncio.create_task(session.run(flaky))
    await _drive(clock, task)
    assert task.result() == "ok" and len(calls) == 3
    assert clock.monotonic() >= 0.5 + 1.0  # slept 0.5 s, then 1 s

    def down(vc: Any) -> str:
        raise ConnectionRefusedError("refused")

    task = asyncio.create_task(session.run(down))
    await _drive(clock, task)
    with pytest.raises(Unavailable, match="refused"):
        task.result()
    await session.close()


async def test_a_call_that_starts_a_task_is_not_retried() -> None:
    session, _ = _session()
    _no_server(session)
    calls: list[int] = []

    def start(vc: Any) -> None:
        calls.append(1)
        raise ConnectionResetError("lost")

    with pytest.raises(Unavailable):
        await session.run(start, idempotent=False)
    assert len(calls) == 1
    await session.close()


def test_an_expired_session_logs_in_again_once_and_repeats_the_call() -> None:
    session, _ = _session()
    logins: list[int] = []

    class SI:
        def RetrieveContent(self) -> str:
            return "content"

    def connect() -> SI:
        logins.append(1)
        return SI()

    session._connect_sync = connect  # type: ignore[method-assign]
    seen: list[VC] = []

    def call(vc: VC) -> str:
        seen.append(vc)
        if len(seen) == 1:
            raise vim.fault.NotAuthenticated()
        return "done"

    assert session.call_sync(call) == "done"
    assert len(logins) == 2 and seen[0] is not seen[1]


def test_on_a_real_vm_the_bootstrap_comes_from_vmware_rpctool(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tmp_path / "vmware-rpctool"
    tool.write_text('#!/bin/sh\n'
                    '[ "$1" = "info-get guestinfo.cowpod.bootstrap" ] && echo abc123 && exit 0\n'
                    'exit 1\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert guestinit.read_bootstrap({}) == "abc123"
    tool.write_text("#!/bin/sh\necho 'No value found' >&2\nexit 1\n")
    assert guestinit.read_bootstrap({}) == ""


class FakeInit:
    def __init__(self, text: str) -> None:
        self.text = text
        self.signals: list[int] = []
        self.waited = False

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)

    def wait(self, timeout: float | None = None) -> int:
        self.waited = True
        return 0


def test_a_new_bootstrap_in_guestinfo_restarts_the_init_with_it() -> None:
    """An instant clone resumes its parent's guest: its identity arrives in guestinfo afterwards."""
    started: list[FakeInit] = []
    guestinfo = ["parent-bootstrap"]

    def spawn(text: str) -> FakeInit:
        started.append(FakeInit(text))
        return started[-1]

    sup = guestinit.Supervisor("parent-bootstrap", spawn, lambda: guestinfo[0])
    assert not sup.check()  # unchanged: nothing happens
    guestinfo[0] = "child-bootstrap"
    assert sup.check()
    assert [i.text for i in started] == ["parent-bootstrap", "child-bootstrap"]
    assert started[0].signals == [signal.SIGTERM] and started[0].waited
    assert not sup.check()  # once only
    guestinfo[0] = ""  # unreadable for a moment: keep what runs
    assert not sup.check()
    sup.exited(1)
    assert [i.text for i in started][-1] == "child-bootstrap"
    sup.stop()
    assert sup.stopping and started[-1].signals == [signal.SIGTERM]

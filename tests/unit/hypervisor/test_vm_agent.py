"""The clone's entrypoint before the agent: its network, read off /etc/hosts."""

from __future__ import annotations

import pathlib

from hypervisor.providers.docker.vm_agent import own_address, wait_for_network

DOCKER_HOSTS_BEFORE = """127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
"""


def test_own_address_is_the_non_loopback_entry_for_the_hostname(tmp_path: pathlib.Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(DOCKER_HOSTS_BEFORE)
    assert own_address("kid", hosts) == ""  # not attached yet
    hosts.write_text(DOCKER_HOSTS_BEFORE + "127.0.1.1\tkid\n# 10.0.0.9 kid\n")
    assert own_address("kid", hosts) == ""  # loopback aliases and comments do not count
    hosts.write_text(DOCKER_HOSTS_BEFORE + "172.24.0.5\tkid-2\n172.24.0.2\tkid\n")
    assert own_address("kid", hosts) == "172.24.0.2"
    assert own_address("kid", tmp_path / "missing") == ""


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt


def test_wait_for_network_returns_once_the_engine_writes_the_address(tmp_path: pathlib.Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(DOCKER_HOSTS_BEFORE)
    clock = FakeClock()
    polls = 0

    def sleep(dt: float) -> None:
        nonlocal polls
        polls += 1
        clock.sleep(dt)
        if polls == 3:  # the attach lands while we wait
            hosts.write_text(DOCKER_HOSTS_BEFORE + "172.24.0.2\tkid\n")

    assert wait_for_network("kid", 30.0, hosts=hosts, now=clock.now, sleep=sleep) == "172.24.0.2"
    assert polls == 3


def test_wait_for_network_gives_up_at_the_deadline(tmp_path: pathlib.Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(DOCKER_HOSTS_BEFORE)
    clock = FakeClock()
    assert wait_for_network("kid", 1.0, hosts=hosts, now=clock.now, sleep=clock.sleep) == ""
    assert 1.0 <= clock.t < 1.1

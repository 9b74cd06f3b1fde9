"""The docker provider's metadata-address rule (#15), against a fake iptables: added
once however often the network is ensured, swept by its comment only, and a host
without iptables gets a warning, not a failed start. The real thing:
tests/e2e/test_metadata_block.py."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence

from hypervisor.providers.docker import metadata_block
from hypervisor.providers.docker.plugin import DockerPlugin


def _show(words: Sequence[str]) -> str:
    """A rule as `iptables -S` prints it: the comment in double quotes."""
    out = list(words)
    for i, w in enumerate(out[:-1]):
        if w == "--comment":
            out[i + 1] = f'"{out[i + 1]}"'
    return " ".join(out)


class FakeIptables:
    """The DOCKER-USER chain as word lists, answering -S, -C, -I and -D as iptables does."""

    def __init__(self, rules: Sequence[str] = (), *, broken: str = "") -> None:
        self.chain = [shlex.split(r) for r in rules]
        self.broken = broken

    @property
    def rules(self) -> list[str]:
        return [_show(r) for r in self.chain]

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        if self.broken:
            return subprocess.CompletedProcess(argv, 4, "", self.broken)
        assert argv[:2] == ["iptables", "-w"] and argv[3] == "DOCKER-USER"
        op, rest = argv[2], argv[4:]
        ok = subprocess.CompletedProcess(argv, 0, "", "")
        if op == "-S":
            ok.stdout = "-N DOCKER-USER\n" + "".join(f"-A DOCKER-USER {r}\n" for r in self.rules)
            return ok
        if op == "-I":
            self.chain.insert(int(rest[0]) - 1, rest[1:])
            return ok
        if op == "-C" and rest in self.chain:
            return ok
        if op == "-D" and rest in self.chain:
            self.chain.remove(rest)
            return ok
        return subprocess.CompletedProcess(argv, 1, "", "Bad rule (does a matching rule exist?)")


def test_block_is_idempotent_and_first_in_the_chain() -> None:
    ipt = FakeIptables(["-j RETURN"])
    assert metadata_block.block("cowpod", ["172.30.0.0/16"], run=ipt)
    assert metadata_block.block("cowpod", ["172.30.0.0/16"], run=ipt)
    assert ipt.rules == [
        '-s 172.30.0.0/16 -d 169.254.169.254/32 -m comment --comment "cowpod-metadata-block:cowpod" -j DROP',
        "-j RETURN",
    ]


def test_unblock_removes_only_its_networks_rules() -> None:
    other = "-s 10.9.0.0/16 -j DROP"  # somebody else's rule: never touched
    ipt = FakeIptables([other, "-j RETURN"])
    metadata_block.block("a", ["172.30.0.0/16"], run=ipt)
    metadata_block.block("b", ["172.31.0.0/16"], run=ipt)
    assert metadata_block.unblock("a", run=ipt) == 1
    assert [r for r in ipt.rules if "cowpod" in r] == [
        '-s 172.31.0.0/16 -d 169.254.169.254/32 -m comment --comment "cowpod-metadata-block:b" -j DROP'
    ]
    assert metadata_block.unblock(run=ipt) == 1  # every cowpod network's
    assert ipt.rules == [other, "-j RETURN"]


def test_no_iptables_is_a_warning_not_a_failed_start() -> None:
    ipt = FakeIptables(broken="iptables: Permission denied (you must be root)")
    assert metadata_block.block("cowpod", ["172.30.0.0/16"], run=ipt) is False
    assert metadata_block.unblock("cowpod", run=ipt) == 0

    def missing(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("iptables")

    assert metadata_block.block("cowpod", ["172.30.0.0/16"], run=missing) is False


def test_subnets_are_the_networks_ipv4_ones() -> None:
    attrs: dict[str, object] = {
        "IPAM": {"Config": [{"Subnet": "172.30.0.0/16", "Gateway": "172.30.0.1"}, {"Subnet": "fd00::/64"}]}
    }
    assert metadata_block.subnets_of(attrs) == ["172.30.0.0/16"]
    assert metadata_block.subnets_of({}) == []


def test_block_metadata_is_a_docker_setting_on_by_default() -> None:
    plugin = DockerPlugin()
    assert plugin.parse_settings({}, "provider").block_metadata is True
    assert plugin.parse_settings({"blockMetadata": False}, "provider").block_metadata is False

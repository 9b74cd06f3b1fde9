"""#15: pods must not reach the cloud metadata address (169.254.169.254) through the
host's NAT. The docker provider drops that traffic in iptables' DOCKER-USER chain
when it ensures its VM network; shown here on the real engine and the real
iptables, against a real listener at 169.254.169.254.

The listener lives in its own network namespace behind a veth pair, so the
container's packets are *forwarded* by the host as they would be to a cloud's
metadata endpoint (a listener on the host's own `lo` would be reached through
INPUT, which DOCKER-USER never sees). A control address in the same namespace
shows the network itself works, and a first pass without the rule shows the
metadata listener is reachable when nothing blocks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import docker
import pytest

from hypervisor.providers.docker import metadata_block
from hypervisor.testing import TEST_LABELS, DockerTestEnv

pytestmark = pytest.mark.e2e

METADATA = "169.254.169.254"
PORT = 8080
SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    f"s.bind(('0.0.0.0', {PORT})); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'meta\\n'); c.close()\n"
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def metadata_listener() -> Iterator[str]:
    """A TCP listener on 169.254.169.254 and on a control address; yields the control address."""
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        pytest.skip("needs root, ip and iptables")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"cpmeta-{tag}", f"cpm{tag}a", f"cpm{tag}b"
    # A /30 from the benchmarking range (RFC 2544): never a real network's.
    third = int(tag[:2], 16)
    host_addr, control = f"198.18.{third}.1", f"198.18.{third}.2"
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{control}/30", "dev", ns_if)
        _ip("-n", ns, "addr", "add", f"{METADATA}/32", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", host_addr)
        _ip("route", "add", f"{METADATA}/32", "via", control, "dev", host_if)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER])
        yield control
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "route", "del", f"{METADATA}/32", "via", control, "dev", host_if],
                       capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _rules(network: str) -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", "DOCKER-USER"], check=True, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if metadata_block.comment(network) in line]


def _connects(box: docker.models.containers.Container, addr: str) -> bool:
    res = box.exec_run(["sh", "-c", f"timeout 6 nc -w 4 {addr} {PORT} </dev/null"])
    return res.exit_code == 0 and b"meta" in (res.output or b"")


async def test_containers_on_the_vm_network_cannot_reach_the_metadata_address(
    env: DockerTestEnv, metadata_listener: str
) -> None:
    control = metadata_listener
    open_provider = env.provider(block_metadata=False)
    try:
        await open_provider._ensure_network()
    finally:
        await open_provider.close()
    assert _rules(env.network) == []
    box = env.client.containers.run(
        "cowpod/busybox:latest", ["sleep", "300"], detach=True, name=f"meta-{env.cluster_id}",
        network=env.network, labels={**TEST_LABELS, "cowpod.cluster": env.cluster_id},
    )
    # Nothing blocks yet: both listeners answer (so the test below proves the rule, not a typo).
    assert _connects(box, control)
    assert _connects(box, METADATA)

    for _ in range(2):  # ensuring twice (a second start) adds no second rule
        p = env.provider()
        try:
            await p._ensure_network()
        finally:
            await p.close()
    subnet = metadata_block.subnets_of(env.client.networks.get(env.network).attrs)[0]
    assert _rules(env.network) == [
        f'-A DOCKER-USER -s {subnet} -d {METADATA}/32 -m comment --comment '
        f'"{metadata_block.comment(env.network)}" -j DROP'
    ]
    assert not _connects(box, METADATA)
    assert _connects(box, control)

    # Swept by its comment, the address is reachable again: the rule was what stopped it.
    assert metadata_block.unblock(env.network) == 1
    assert _rules(env.network) == []
    assert _connects(box, METADATA)

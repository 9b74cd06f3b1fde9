"""What a zygote runs in an instant clone: the VM's identity, then its network, then the agent.

`ZygoteWarmStarter` forks this (not `agent.main:run` directly) into a child
VM container that the docker provider started with `COWPOD_AGENT_START=wait`:

1. **Identity first.** The child's disk is its parent's snapshot, so it still
   holds the parent's /etc/machine-id, vm-name and per-VM state. A container
   the provider made for this child (no warm shell) carries the child's
   identity in its environment, and its init leaves the disk alone in wait
   mode (hypervisor/vminit.py); `vminit.adopt_identity` here writes it, in
   process (no exec), before the agent reads the machine id. For a warm shell
   the provider already wrote it (vm_identity.py): the call finds the disk
   named and only rewrites the same machine id.
2. **Network next.** The provider starts a clone's container before attaching
   it to the VM network, and attaches it while this process starts (Docker's
   per-container DNS and IPv6 set-up on a user-defined network is a third of a
   container start). With `COWPOD_NETWORK_PENDING=1` we wait until the engine
   has written the VM's own address for its hostname into /etc/hosts, so the
   node registers with its real InternalIP and is never Ready without a
   network — as a kubelet reports NotReady until its network is up.
3. `agent.main.run(argv)`.
"""

from __future__ import annotations

import os
import pathlib
import socket
import sys
import time
from collections.abc import Callable, Sequence

from hypervisor.vminit import InitConfig, adopt_identity

# The environment flag the provider sets when it attaches the network after the fork.
NETWORK_PENDING_ENV = "COWPOD_NETWORK_PENDING"
# How long the agent waits for the network before it starts anyway (it then
# registers with whatever address it finds, and says so in its log).
NETWORK_WAIT_S = 30.0
_POLL_S = 0.005


def own_address(hostname: str, hosts: pathlib.Path = pathlib.Path("/etc/hosts")) -> str:
    """The non-loopback address /etc/hosts gives `hostname`, or "" (not attached yet)."""
    try:
        text = hosts.read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and hostname in fields[1:]:
            addr = fields[0]
            if not addr.startswith("127.") and addr != "::1":
                return addr
    return ""


def wait_for_network(
    hostname: str,
    timeout: float = NETWORK_WAIT_S,
    *,
    hosts: pathlib.Path = pathlib.Path("/etc/hosts"),
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll /etc/hosts until `hostname` has its own address; "" after `timeout`.

    A plain poll: this runs before the agent's event loop exists, and the
    attach takes tens of milliseconds."""
    deadline = now() + timeout
    while True:
        addr = own_address(hostname, hosts)
        if addr or now() >= deadline:
            return addr
        sleep(_POLL_S)


def run(argv: Sequence[str]) -> None:
    """The zygote entrypoint (`hypervisor.providers.docker.vm_agent:run`)."""
    adopt_identity(InitConfig.from_env(os.environ))
    if os.environ.get(NETWORK_PENDING_ENV) == "1":
        hostname = socket.gethostname()
        if not wait_for_network(hostname):
            print(f"cowpod: no address for {hostname} after {NETWORK_WAIT_S:.0f}s; starting the agent anyway",
                  file=sys.stderr, flush=True)
    # Imported here, not at the top: the provider (in the controller) imports this
    # module for NETWORK_PENDING_ENV. The zygote has preloaded agent.main.
    from agent.main import run as run_agent

    run_agent(list(argv))

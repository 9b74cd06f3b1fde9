"""Keep pods away from the cloud metadata address (169.254.169.254).

Pods share their VM's network, and the VM's bridge network is NATed by the host,
so without a rule every pod reaches whatever the host reaches: on a cloud host,
the instance metadata service and the instance's credentials. Docker sends all
forwarded container traffic through the `DOCKER-USER` chain before its own
rules and never rewrites that chain, so a DROP there for the cowpod network's
subnets and the link-local metadata address stops pods (and VMs) without
touching anyone else's containers.

Rules carry the comment `cowpod-metadata-block:<network>`: adding checks for
the rule first (`iptables -C`), so it is idempotent; `unblock` deletes by that
comment, so leftovers can be swept without knowing the subnet. A rule left
behind after its network is gone is harmless: it drops traffic from a subnet
nobody then uses, to an address nobody should reach from it.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger(__name__)

METADATA_ADDRESS = "169.254.169.254/32"
CHAIN = "DOCKER-USER"
COMMENT_PREFIX = "cowpod-metadata-block"

Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


def comment(network: str) -> str:
    return f"{COMMENT_PREFIX}:{network}"


def rule(subnet: str, network: str) -> list[str]:
    """The rule's match and target, as `iptables -I/-C/-D CHAIN` takes them."""
    return [
        "-s", subnet, "-d", METADATA_ADDRESS, "-m", "comment", "--comment", comment(network), "-j", "DROP",
    ]


def block(network: str, subnets: Iterable[str], *, run: Runner = _run) -> bool:
    """Drop traffic from `subnets` to the metadata address; True when every rule is in place.

    Never raises: a host without iptables (or without the right to use it) gets
    a warning and a working cluster, as the docs say what that leaves open."""
    ok = True
    for subnet in subnets:
        try:
            if run(["iptables", "-w", "-C", CHAIN, *rule(subnet, network)]).returncode == 0:
                continue
            res = run(["iptables", "-w", "-I", CHAIN, "1", *rule(subnet, network)])
        except (OSError, subprocess.SubprocessError) as err:
            res = subprocess.CompletedProcess([], 1, "", str(err))
        if res.returncode != 0:
            ok = False
            log.warning(
                "could not block the metadata address for docker network %s (%s): iptables: %s; pods there "
                "can reach 169.254.169.254 (docs/security.md)", network, subnet, (res.stderr or "").strip(),
            )
        else:
            log.info("docker network %s (%s): traffic to %s dropped", network, subnet, METADATA_ADDRESS)
    return ok


def unblock(network: str | None = None, *, run: Runner = _run) -> int:
    """Delete the rules of `network` (every cowpod network when None); how many went."""
    try:
        res = run(["iptables", "-w", "-S", CHAIN])
    except (OSError, subprocess.SubprocessError):
        return 0
    if res.returncode != 0:
        return 0
    want = comment(network) if network is not None else None
    gone = 0
    for line in res.stdout.splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", CHAIN] or "--comment" not in words:
            continue
        c = words[words.index("--comment") + 1]
        if (c != want) if want is not None else not c.startswith(f"{COMMENT_PREFIX}:"):
            continue
        if run(["iptables", "-w", "-D", *words[1:]]).returncode == 0:
            gone += 1
    return gone


def subnets_of(network_attrs: dict[str, object]) -> list[str]:
    """The IPv4 subnets of a Docker network, from `docker network inspect`."""
    ipam = network_attrs.get("IPAM") or {}
    configs = ipam.get("Config") if isinstance(ipam, dict) else None
    out: list[str] = []
    for c in configs or []:
        subnet = c.get("Subnet", "") if isinstance(c, dict) else ""
        if subnet and ":" not in subnet:  # iptables is IPv4; 169.254.169.254 is too
            out.append(subnet)
    return out

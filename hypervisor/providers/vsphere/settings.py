"""The vsphere provider's settings: the cluster config's `provider:` section.

    provider:
      name: vsphere
      server: https://vc.example.com/sdk
      username: cowpod@vsphere.local
      passwordFile: /etc/cowpod/vc-password
      caFile: /etc/cowpod/vc-ca.pem        # or thumbprint: "AB:CD:...", or insecure: true
      datacenter: DC1
      cluster: Cluster1                    # or resourcePool: Cluster1/Resources/cowpod
      folder: cowpod                       # under the datacenter's VM folder
      datastore: vsanDatastore
      network: VM Network
      template: debian-cowpod              # default template VM; a class's `image` overrides it
      controllerAddress: 10.0.0.5:7070     # the controller as the guests reach it

Every problem is reported as `Invalid("provider.<key>", reason)` before
anything connects; whether the objects exist is `check()`'s business.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cowpod.errors import Invalid
from hypervisor.settings import Fields

GUEST_NETWORKS = ("vm", "host")


@dataclass(frozen=True)
class VSphereSettings:
    server: str
    username: str
    password_file: str
    datacenter: str
    cluster: str = ""
    resource_pool: str = ""
    folder: str = ""
    datastore: str = ""
    network: str = ""
    template: str = ""
    ca_file: str = ""
    thumbprint: str = ""
    insecure: bool = False
    # "vm": each VM has its own network stack (real vSphere): the agent listens
    # on agentPort and advertises the VM's address. "host": the guests share
    # this host's network namespace (vcsim's containers with --network host):
    # each VM's agent gets its own loopback port.
    guest_network: str = "vm"
    controller_address: str = ""
    agent_port: int = 7071
    # Threads for pyVmomi calls (it blocks); bounds the calls in flight.
    workers: int = 4
    task_timeout_s: float = 600.0
    # Transient faults (connection lost, TaskInProgress) are retried this often.
    retries: int = 4

    @property
    def url(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.server)

    @property
    def host(self) -> str:
        return self.url.hostname or ""

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)


def parse_settings(raw: Mapping[str, Any], where: str) -> VSphereSettings:
    """The `provider:` section (without `name`) -> settings; Invalid names `<where>.<key>`.

    An empty mapping (what `--provider vsphere` alone means) is refused with
    the first missing key: there is no default vCenter."""
    f = Fields(raw, where)
    d = VSphereSettings(server="", username="", password_file="", datacenter="")
    s = VSphereSettings(
        server=f.string("server", required=True).strip(),
        username=f.string("username", required=True).strip(),
        password_file=f.string("passwordFile", required=True).strip(),
        datacenter=f.string("datacenter", required=True).strip(),
        cluster=f.string("cluster").strip(),
        resource_pool=f.string("resourcePool").strip(),
        folder=f.string("folder").strip(),
        datastore=f.string("datastore").strip(),
        network=f.string("network").strip(),
        template=f.string("template").strip(),
        ca_file=f.string("caFile").strip(),
        thumbprint=f.string("thumbprint").strip(),
        insecure=f.boolean("insecure", d.insecure),
        guest_network=f.string("guestNetwork", d.guest_network).strip(),
        controller_address=f.string("controllerAddress").strip(),
        agent_port=f.integer("agentPort", d.agent_port),
        workers=f.integer("workers", d.workers),
        task_timeout_s=f.number("taskTimeoutSeconds", d.task_timeout_s),
        retries=f.integer("retries", d.retries),
    )
    f.done()

    url = s.url
    if url.scheme not in ("https", "http") or not url.hostname:
        raise Invalid(f"{where}.server", f"{s.server!r} must be a URL like https://vcenter.example.com/sdk")
    try:
        url.port  # noqa: B018 - raises on a bad port
    except ValueError as err:
        raise Invalid(f"{where}.server", str(err)) from None
    if url.scheme == "http" and not s.insecure:
        raise Invalid(f"{where}.server",
                      "plain http sends the password in clear: use https, or set insecure: true")
    if s.insecure and (s.ca_file or s.thumbprint):
        raise Invalid(f"{where}.insecure", "cannot be combined with caFile or thumbprint")
    if s.thumbprint and not _is_thumbprint(s.thumbprint):
        raise Invalid(f"{where}.thumbprint",
                      "must be the certificate's SHA-1 or SHA-256 fingerprint, hex pairs split by ':'")
    if s.cluster and s.resource_pool:
        raise Invalid(f"{where}.resourcePool", "give cluster or resourcePool, not both")
    if not s.cluster and not s.resource_pool:
        raise Invalid(f"{where}.cluster", "give cluster (its root resource pool is used) or resourcePool")
    if s.guest_network not in GUEST_NETWORKS:
        raise Invalid(f"{where}.guestNetwork", f"must be one of: {', '.join(GUEST_NETWORKS)}")
    if s.guest_network == "vm":
        if not s.controller_address:
            raise Invalid(f"{where}.controllerAddress",
                          "required: the controller's host:port as the VMs reach it")
        host, _, port = s.controller_address.rpartition(":")
        if not host or not port.isdigit():
            raise Invalid(f"{where}.controllerAddress", f"{s.controller_address!r} must be host:port")
    if not 0 < s.agent_port < 65536:
        raise Invalid(f"{where}.agentPort", "must be a TCP port (1-65535)")
    if not 1 <= s.workers <= 64:
        raise Invalid(f"{where}.workers", "must be between 1 and 64")
    if s.task_timeout_s <= 0:
        raise Invalid(f"{where}.taskTimeoutSeconds", "must be positive")
    if not 0 <= s.retries <= 20:
        raise Invalid(f"{where}.retries", "must be between 0 and 20")
    return s


def _is_thumbprint(text: str) -> bool:
    parts = text.split(":")
    hexdigits = set("0123456789abcdefABCDEF")
    return len(parts) in (20, 32) and all(len(p) == 2 and set(p) <= hexdigits for p in parts)

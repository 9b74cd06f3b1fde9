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


# cluster-config key -> (attribute, type)
_KEYS: Mapping[str, tuple[str, type]] = {
    "server": ("server", str),
    "username": ("username", str),
    "passwordFile": ("password_file", str),
    "datacenter": ("datacenter", str),
    "cluster": ("cluster", str),
    "resourcePool": ("resource_pool", str),
    "folder": ("folder", str),
    "datastore": ("datastore", str),
    "network": ("network", str),
    "template": ("template", str),
    "caFile": ("ca_file", str),
    "thumbprint": ("thumbprint", str),
    "insecure": ("insecure", bool),
    "guestNetwork": ("guest_network", str),
    "controllerAddress": ("controller_address", str),
    "agentPort": ("agent_port", int),
    "workers": ("workers", int),
    "taskTimeoutSeconds": ("task_timeout_s", float),
    "retries": ("retries", int),
}
_REQUIRED = ("server", "username", "passwordFile", "datacenter")


def parse_settings(raw: Mapping[str, Any], where: str) -> VSphereSettings:
    """The `provider:` section (without `name`) -> settings; Invalid names `<where>.<key>`.

    An empty mapping (what `--provider vsphere` alone means) is refused with
    the first missing key: there is no default vCenter."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _KEYS:
            raise Invalid(f"{where}.{key}", f"unknown setting (known: {', '.join(sorted(_KEYS))})")
        attr, typ = _KEYS[key]
        values[attr] = _typed(f"{where}.{key}", value, typ)
    for key in _REQUIRED:
        if not values.get(_KEYS[key][0]):
            raise Invalid(f"{where}.{key}", "required for the vsphere provider")
    s = VSphereSettings(**values)

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


def _typed(path: str, value: Any, typ: type) -> Any:
    if typ is bool:
        if not isinstance(value, bool):
            raise Invalid(path, "must be true or false")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, "must be a whole number")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, "must be a number")
        return float(value)
    if not isinstance(value, str):
        raise Invalid(path, "must be a string")
    return value.strip()


def _is_thumbprint(text: str) -> bool:
    parts = text.split(":")
    hexdigits = set("0123456789abcdefABCDEF")
    return len(parts) in (20, 32) and all(len(p) == 2 and set(p) <= hexdigits for p in parts)

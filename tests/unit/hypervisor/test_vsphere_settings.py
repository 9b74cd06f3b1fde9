"""The vsphere provider's settings: what the cluster config's `provider:` section may say."""

from __future__ import annotations

from typing import Any

import pytest

from cowpod.errors import Invalid
from hypervisor import registry
from hypervisor.providers.vsphere.settings import VSphereSettings, parse_settings

BASE: dict[str, Any] = {
    "server": "https://vc.example.com/sdk",
    "username": "cowpod@vsphere.local",
    "passwordFile": "/etc/cowpod/vc-password",
    "datacenter": "DC1",
    "cluster": "Cluster1",
    "controllerAddress": "10.0.0.5:7070",
}


def settings(**changes: Any) -> VSphereSettings:
    raw = {**BASE, **changes}
    return parse_settings({k: v for k, v in raw.items() if v is not None}, "provider")


def refused(**changes: Any) -> Invalid:
    with pytest.raises(Invalid) as err:
        settings(**changes)
    return err.value


def test_a_minimal_section_gives_verified_https_and_the_defaults() -> None:
    s = settings()
    assert (s.host, s.port, s.url.path) == ("vc.example.com", 443, "/sdk")
    assert not s.insecure and s.guest_network == "vm" and s.agent_port == 7071
    assert s.workers == 4 and s.retries == 4


def test_the_registry_parses_the_section_by_name() -> None:
    name, s = registry.resolve(None, "vsphere", BASE)
    assert name == "vsphere" and isinstance(s, VSphereSettings) and s.cluster == "Cluster1"
    with pytest.raises(Invalid) as err:
        registry.resolve("vsphere")  # --provider vsphere alone: there is no default vCenter
    assert err.value.field == "provider.server"


@pytest.mark.parametrize(("changes", "field", "reason"), [
    ({"server": None}, "provider.server", "required"),
    ({"username": ""}, "provider.username", "required"),
    ({"passwordFile": None}, "provider.passwordFile", "required"),
    ({"datacenter": None}, "provider.datacenter", "required"),
    ({"password": "hunter2"}, "provider.password", "unknown setting"),
    ({"server": "vc.example.com"}, "provider.server", "must be a URL"),
    ({"server": "ftp://vc/sdk"}, "provider.server", "must be a URL"),
    ({"server": "https://vc:99999/sdk"}, "provider.server", "out of range"),
    ({"server": "http://vc/sdk"}, "provider.server", "plain http"),
    ({"insecure": "yes"}, "provider.insecure", "true or false"),
    ({"insecure": True, "caFile": "/ca.pem"}, "provider.insecure", "cannot be combined"),
    ({"thumbprint": "AB:CD"}, "provider.thumbprint", "fingerprint"),
    ({"resourcePool": "Cluster1/Resources/cp"}, "provider.resourcePool", "not both"),
    ({"cluster": None}, "provider.cluster", "or resourcePool"),
    ({"guestNetwork": "bridge"}, "provider.guestNetwork", "one of: vm, host"),
    ({"controllerAddress": None}, "provider.controllerAddress", "required"),
    ({"controllerAddress": "10.0.0.5"}, "provider.controllerAddress", "host:port"),
    ({"agentPort": 0}, "provider.agentPort", "TCP port"),
    ({"agentPort": True}, "provider.agentPort", "whole number"),
    ({"workers": 0}, "provider.workers", "between 1 and 64"),
    ({"taskTimeoutSeconds": -1}, "provider.taskTimeoutSeconds", "positive"),
    ({"datastore": 7}, "provider.datastore", "expected a string"),
])
def test_a_bad_setting_is_refused_with_its_field_path(
        changes: dict[str, Any], field: str, reason: str) -> None:
    err = refused(**changes)
    assert err.field == field
    assert reason in err.reason


def test_an_empty_section_names_the_first_missing_setting() -> None:
    with pytest.raises(Invalid) as err:
        parse_settings({}, "provider")
    assert err.value.field == "provider.server"


def test_verification_choices() -> None:
    sha1 = ":".join(["ab"] * 20)
    assert settings(thumbprint=sha1).thumbprint == sha1
    assert settings(caFile="/etc/ca.pem").ca_file == "/etc/ca.pem"
    insecure = settings(insecure=True, server="http://127.0.0.1:8989/sdk")
    assert (insecure.insecure, insecure.port) == (True, 8989)


def test_host_guest_network_needs_no_controller_address() -> None:
    s = settings(guestNetwork="host", controllerAddress=None)
    assert s.guest_network == "host" and s.controller_address == ""


def test_a_resource_pool_instead_of_a_cluster() -> None:
    s = settings(cluster=None, resourcePool="Cluster1/Resources/cowpod")
    assert (s.cluster, s.resource_pool) == ("", "Cluster1/Resources/cowpod")

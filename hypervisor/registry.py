"""The one list of hypervisor providers: name -> the plugin that makes it.

Everything that offers a choice of provider reads this list: the controller's
and `cowpod up`'s `--provider` choices, VM validation, the cluster config's
`provider:` section and the provider contract tests. Adding a provider is a
package under `hypervisor/providers/` that exposes a `PLUGIN`, and one line
here. Plugins are imported only when asked for, so listing names costs no SDK
import (pyVmomi, docker, qemu.qmp).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from cowpod.errors import Invalid
from hypervisor.provider import ProviderPlugin

# name -> "module:attribute" of its ProviderPlugin. Order is the order of --help.
REGISTRY: Mapping[str, str] = {
    "docker": "hypervisor.providers.docker.plugin:PLUGIN",
    "qemu": "hypervisor.providers.qemu.plugin:PLUGIN",
    "vsphere": "hypervisor.providers.vsphere.plugin:PLUGIN",
    "sim": "hypervisor.providers.sim:PLUGIN",
    "fake": "hypervisor.providers.fake:PLUGIN",
}
# Providers a user picks; `fake` is for tests.
USER_PROVIDERS: tuple[str, ...] = tuple(n for n in REGISTRY if n != "fake")


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def plugin(name: str) -> ProviderPlugin[Any]:
    """The plugin for `name`; Invalid naming the choices for an unknown one."""
    target = REGISTRY.get(name)
    if target is None:
        raise Invalid("provider.name", f"unknown provider {name!r} (one of: {', '.join(USER_PROVIDERS)})")
    module, _, attr = target.partition(":")
    found: ProviderPlugin[Any] = getattr(importlib.import_module(module), attr)
    return found


def parse_section(section: Mapping[str, Any] | None, default: str = "docker") -> tuple[str, Any]:
    """The cluster config's `provider:` section -> (name, the plugin's settings).

    `{name: vsphere, server: ..., ...}`: `name` picks the plugin, every other
    key is the plugin's, checked by it with the field path `provider.<key>`."""
    raw = dict(section or {})
    name = raw.pop("name", default)
    if not isinstance(name, str):
        raise Invalid("provider.name", "must be a string")
    return name, plugin(name).parse_settings(raw, "provider")

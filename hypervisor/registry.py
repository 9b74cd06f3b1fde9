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
from dataclasses import dataclass
from typing import Any

from cowpod.errors import Invalid
from hypervisor.provider import ProviderPlugin


@dataclass(frozen=True)
class Entry:
    # "module:attribute" of the provider's ProviderPlugin.
    target: str
    # One line for --help.
    summary: str


# Order is the order of --help.
REGISTRY: Mapping[str, Entry] = {
    "docker": Entry("hypervisor.providers.docker.plugin:PLUGIN",
                    "VMs as containers on the local Docker engine (the embedded default)"),
    "qemu": Entry("hypervisor.providers.qemu.plugin:PLUGIN",
                  "real Linux guests under QEMU (KVM, else TCG); instant clones share the parent's RAM"),
    "vsphere": Entry("hypervisor.providers.vsphere.plugin:PLUGIN",
                     "ESXi through vCenter's API (pyVmomi): InstantClone_Task, linked clones"),
    "sim": Entry("hypervisor.providers.sim:PLUGIN",
                 "hollow VMs and agents in the controller process (thousands of nodes, no Docker)"),
    "fake": Entry("hypervisor.providers.fake:PLUGIN", "an in-memory hypervisor for tests"),
}
# Providers a user picks; `fake` is for tests.
USER_PROVIDERS: tuple[str, ...] = tuple(n for n in REGISTRY if n != "fake")


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def plugin(name: str) -> ProviderPlugin[Any]:
    """The plugin for `name`; Invalid naming the choices for an unknown one."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise Invalid("provider.name", f"unknown provider {name!r} (one of: {', '.join(USER_PROVIDERS)})")
    module, _, attr = entry.target.partition(":")
    found: ProviderPlugin[Any] = getattr(importlib.import_module(module), attr)
    return found


def resolve(
    flag: str | None, section_name: str = "", section: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[str, Any]:
    """The provider to run and its parsed settings, the same way for `cowpod up` and the controller.

    `flag` is `--provider NAME` (the short form: that provider's defaults);
    `section_name`/`section` the cluster config's `provider:` name and other
    keys; `overrides` flags that set provider keys (`--warm-shells`). Returns
    ("none", None) when no provider is asked for. Raises Invalid naming the field."""
    name = flag or ""
    if section_name and name and name != "none" and section_name != name:
        raise Invalid("--provider", f"{name!r} disagrees with the cluster config's provider {section_name!r}")
    name = name or section_name
    raw = {**(section or {}), **(overrides or {})}
    if not name or name == "none":
        if raw:
            raise Invalid(f"provider.{next(iter(raw))}", "provider settings need a provider (--provider)")
        return "none", None
    return name, plugin(name).parse_settings(raw, "provider")

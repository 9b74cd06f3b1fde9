"""The cluster config file: which VM classes exist and the autoscaler's bounds.

    vmClasses:
      - name: small
        cpu: 1              # cores: 1, 0.5, "500m"
        memory: 1Gi         # bytes or Kubernetes quantities: 512Mi, 1G
        labels: {tier: small}
        min: 0              # clones kept at least (the warm parent is not counted)
        max: 10             # clones at most
        parent: true        # keep a warm parent running for instant clones
    maxVMs: 20              # every VM the autoscaler manages, parents included
    maxTotalCPU: 16
    maxTotalMemory: 32Gi
    scaleDownUnneeded: 10m  # an empty clone lives this long before it goes
    cooldown: 30s           # after a failed clone; doubles per failure up to maxBackoff
    instantClones: true
    parentIdlePause: 30s    # pause (quiesce) a warm parent no clone used this long; 0 = never
    provider:               # or just `provider: docker`
      name: vsphere         # one of hypervisor.registry's providers
      server: https://vc.example.com/sdk   # ... and that provider's own settings

It lives in `cowpod/` (not `controller/`) because it is a plain file format that
the CLI, `cowpod up` and the controller all read; parsing knows nothing of
etcd or gRPC. Unknown keys, wrong types and impossible values are refused
with the field path (`vmClasses[1].memory: ...`) before anything runs, as
for manifests.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cowpod.configfile import parse_yaml, read_config
from cowpod.errors import Invalid

# The agent's defaults (--reserve-cpu 100m --reserve-memory 64Mi): a node of a
# class offers the class's size minus these to pods.
DEFAULT_RESERVE_CPU_MILLIS = 100
DEFAULT_RESERVE_MEMORY_BYTES = 64 * 1024**2
# Kubelet's default pod limit per node.
DEFAULT_MAX_PODS_PER_NODE = 110

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_BIN_SUFFIX = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "Pi": 1024**5, "Ei": 1024**6}
_DEC_SUFFIX = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QTY_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)$")
_DUR_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")


@dataclass(frozen=True)
class VMClass:
    """A size of VM the autoscaler may make, with the labels its node carries."""

    name: str
    cpu_millis: int
    memory_bytes: int
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    min: int = 0
    max: int = 10
    # Keep a warm parent running so children can be instant-cloned from it.
    parent: bool = True
    # Template image override; "" = the provider's default.
    image: str = ""
    # Relative price of one VM of this class; 0 = derived from its size
    # (cores + GiB), so bin packing prefers the least capacity that fits.
    cost: float = 0.0

    @property
    def price(self) -> float:
        if self.cost > 0:
            return self.cost
        return self.cpu_millis / 1000 + self.memory_bytes / 1024**3


@dataclass(frozen=True)
class ClusterConfig:
    vm_classes: tuple[VMClass, ...] = ()
    # 0 = unlimited for the three totals.
    max_vms: int = 0
    max_total_cpu_millis: int = 0
    max_total_memory_bytes: int = 0
    scale_down_unneeded_s: float = 600.0
    cooldown_s: float = 30.0
    max_backoff_s: float = 600.0
    instant_clones: bool = True
    # A VM whose node has not been Ready for this long (since it was asked for,
    # or since it was last Ready) has failed and is destroyed.
    provision_timeout_s: float = 300.0
    # A node that turned Ready this recently may still take pods the scheduler
    # rejected before it existed; after this, its verdicts are trusted.
    new_node_grace_s: float = 30.0
    # How often the autoscaler looks even when nothing changed.
    scan_interval_s: float = 10.0
    reserve_cpu_millis: int = DEFAULT_RESERVE_CPU_MILLIS
    reserve_memory_bytes: int = DEFAULT_RESERVE_MEMORY_BYTES
    max_pods_per_node: int = DEFAULT_MAX_PODS_PER_NODE
    # Which hypervisor provider new VMs ask for; "" = the controller's default.
    provider: str = ""
    # The rest of the `provider:` section: the provider's own settings, checked by
    # the provider itself (hypervisor.registry.parse_section), not here.
    provider_settings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # A warm parent no clone was asked of for this long is paused (0 = never).
    parent_idle_pause_s: float = 30.0

    def vm_class(self, name: str) -> VMClass | None:
        for c in self.vm_classes:
            if c.name == name:
                return c
        return None

    def replace(self, **changes: Any) -> ClusterConfig:
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------- values


def parse_cpu(value: object, path: str) -> int:
    """Cores as a number or a Kubernetes quantity ("500m", "2") -> millicores."""
    if isinstance(value, bool):
        raise Invalid(path, f"expected a CPU quantity, got {value!r}")
    if isinstance(value, int | float):
        millis = value * 1000
    elif isinstance(value, str):
        m = _QTY_RE.match(value.strip())
        if not m or m.group(2) not in ("", "m"):
            raise Invalid(path, f"invalid CPU quantity {value!r} (use e.g. 2, 0.5 or 500m)")
        millis = float(m.group(1)) * (1 if m.group(2) == "m" else 1000)
    else:
        raise Invalid(path, f"expected a CPU quantity, got {type(value).__name__}")
    if not math.isfinite(millis) or millis < 0:
        raise Invalid(path, "must not be negative")
    return math.ceil(millis)


def parse_memory(value: object, path: str) -> int:
    """Bytes as a number or a quantity ("512Mi", "1G") -> bytes."""
    if isinstance(value, bool):
        raise Invalid(path, f"expected a memory quantity, got {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    elif isinstance(value, str):
        m = _QTY_RE.match(value.strip())
        if not m:
            raise Invalid(path, f"invalid memory quantity {value!r} (use e.g. 512Mi or 1Gi)")
        num, suffix = float(m.group(1)), m.group(2)
        if suffix in _BIN_SUFFIX:
            n = num * _BIN_SUFFIX[suffix]
        elif suffix in _DEC_SUFFIX:
            n = num * _DEC_SUFFIX[suffix]
        elif suffix == "":
            n = num
        else:
            raise Invalid(path, f"unknown memory suffix {suffix!r} (use Ki, Mi, Gi, Ti or k, M, G, T)")
    else:
        raise Invalid(path, f"expected a memory quantity, got {type(value).__name__}")
    if not math.isfinite(n) or n < 0:
        raise Invalid(path, "must not be negative")
    return math.ceil(n)


def parse_duration(value: object, path: str) -> float:
    """Seconds as a number or a Go-style duration ("10m", "1h30m", "500ms")."""
    if isinstance(value, bool):
        raise Invalid(path, f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _QTY_RE.match(text) and text[-1].isdigit():
            return parse_duration(float(text), path)
        parts = _DUR_RE.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise Invalid(path, f"invalid duration {value!r} (use e.g. 30s, 10m, 1h30m)")
        unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        seconds = sum(float(n) * unit[u] for n, u in parts)
    else:
        raise Invalid(path, f"expected a duration, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid(path, "must not be negative")
    return seconds


def _int(value: object, path: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(path, f"expected an integer, got {value!r}")
    if value < minimum:
        raise Invalid(path, f"must be at least {minimum}")
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(path, f"expected true or false, got {value!r}")
    return value


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise Invalid(path, f"expected a string, got {value!r}")
    return value


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise Invalid(path, f"expected a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise Invalid(path, f"keys must be strings, got {k!r}")
    return value


def _no_unknown(doc: Mapping[str, Any], known: set[str], path: str) -> None:
    for k in doc:
        if k not in known:
            where = f"{path}.{k}" if path else k
            raise Invalid(where, f"unknown field (known: {', '.join(sorted(known))})")


# ---------------------------------------------------------------------- parse

_CLASS_FIELDS = {"name", "cpu", "memory", "labels", "min", "max", "parent", "image", "cost"}
_TOP_FIELDS = {
    "vmClasses", "maxVMs", "maxTotalCPU", "maxTotalMemory", "scaleDownUnneeded", "cooldown",
    "maxBackoff", "instantClones", "provisionTimeout", "newNodeGrace", "scanInterval", "reserveCPU",
    "reserveMemory", "maxPodsPerNode", "provider", "parentIdlePause",
}


def _parse_class(doc: object, path: str) -> VMClass:
    d = _mapping(doc, path)
    _no_unknown(d, _CLASS_FIELDS, path)
    for req in ("name", "cpu", "memory"):
        if req not in d:
            raise Invalid(f"{path}.{req}", "required")
    name = _str(d["name"], f"{path}.name")
    if not _NAME_RE.match(name):
        raise Invalid(f"{path}.name", f"{name!r} must be lowercase letters, digits and '-', at most 32")
    cpu = parse_cpu(d["cpu"], f"{path}.cpu")
    if cpu <= 0:
        raise Invalid(f"{path}.cpu", "must be positive")
    memory = parse_memory(d["memory"], f"{path}.memory")
    if memory <= 0:
        raise Invalid(f"{path}.memory", "must be positive")
    labels_doc = _mapping(d.get("labels") or {}, f"{path}.labels")
    labels = {k: _str(v, f"{path}.labels.{k}") for k, v in labels_doc.items()}
    lo = _int(d.get("min", 0), f"{path}.min")
    hi = _int(d.get("max", 10), f"{path}.max")
    if hi < lo:
        raise Invalid(f"{path}.max", f"{hi} is less than min {lo}")
    cost = d.get("cost", 0.0)
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
        raise Invalid(f"{path}.cost", f"expected a non-negative number, got {cost!r}")
    return VMClass(
        name=name,
        cpu_millis=cpu,
        memory_bytes=memory,
        labels=labels,
        min=lo,
        max=hi,
        parent=_bool(d.get("parent", True), f"{path}.parent"),
        image=_str(d.get("image", ""), f"{path}.image"),
        cost=float(cost),
    )


def _provider(doc: object) -> tuple[str, dict[str, Any]]:
    """`provider: docker` (a name) or `provider: {name: vsphere, server: ..., ...}`."""
    if isinstance(doc, str):
        return doc, {}
    d = dict(_mapping(doc, "provider"))
    if "name" not in d:
        raise Invalid("provider.name", "required (the provider's name, e.g. docker, qemu, vsphere)")
    name = _str(d.pop("name"), "provider.name")
    return name, d


def parse(doc: object) -> ClusterConfig:
    """Validate a decoded YAML document into a ClusterConfig."""
    d = _mapping(doc if doc is not None else {}, "")
    _no_unknown(d, _TOP_FIELDS, "")
    raw_classes = d.get("vmClasses") or []
    if not isinstance(raw_classes, list):
        raise Invalid("vmClasses", "expected a list")
    classes = tuple(_parse_class(c, f"vmClasses[{i}]") for i, c in enumerate(raw_classes))
    seen: set[str] = set()
    for i, c in enumerate(classes):
        if c.name in seen:
            raise Invalid(f"vmClasses[{i}].name", f"duplicate class {c.name!r}")
        seen.add(c.name)
    provider_name, provider_settings = _provider(d.get("provider", ""))
    base = ClusterConfig()
    cfg = ClusterConfig(
        vm_classes=classes,
        max_vms=_int(d.get("maxVMs", base.max_vms), "maxVMs"),
        max_total_cpu_millis=parse_cpu(d.get("maxTotalCPU", 0), "maxTotalCPU"),
        max_total_memory_bytes=parse_memory(d.get("maxTotalMemory", 0), "maxTotalMemory"),
        scale_down_unneeded_s=parse_duration(
            d.get("scaleDownUnneeded", base.scale_down_unneeded_s), "scaleDownUnneeded"
        ),
        cooldown_s=parse_duration(d.get("cooldown", base.cooldown_s), "cooldown"),
        max_backoff_s=parse_duration(d.get("maxBackoff", base.max_backoff_s), "maxBackoff"),
        instant_clones=_bool(d.get("instantClones", base.instant_clones), "instantClones"),
        provision_timeout_s=parse_duration(
            d.get("provisionTimeout", base.provision_timeout_s), "provisionTimeout"
        ),
        new_node_grace_s=parse_duration(d.get("newNodeGrace", base.new_node_grace_s), "newNodeGrace"),
        scan_interval_s=parse_duration(d.get("scanInterval", base.scan_interval_s), "scanInterval"),
        reserve_cpu_millis=parse_cpu(d.get("reserveCPU", "100m"), "reserveCPU"),
        reserve_memory_bytes=parse_memory(d.get("reserveMemory", "64Mi"), "reserveMemory"),
        max_pods_per_node=_int(d.get("maxPodsPerNode", base.max_pods_per_node), "maxPodsPerNode", minimum=1),
        provider=provider_name,
        provider_settings=provider_settings,
        parent_idle_pause_s=parse_duration(
            d.get("parentIdlePause", base.parent_idle_pause_s), "parentIdlePause"
        ),
    )
    if cfg.scan_interval_s <= 0:
        raise Invalid("scanInterval", "must be positive")
    for i, c in enumerate(classes):
        if c.cpu_millis <= cfg.reserve_cpu_millis or c.memory_bytes <= cfg.reserve_memory_bytes:
            raise Invalid(f"vmClasses[{i}]", f"class {c.name!r} is not bigger than the agent's reserve")
    return cfg


def loads(text: str) -> ClusterConfig:
    return parse(parse_yaml(text))


def load(path: str | pathlib.Path) -> ClusterConfig:
    return loads(read_config(path, "cluster config"))

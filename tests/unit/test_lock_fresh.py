"""The Python lock (requirements/*.txt) must say what pyproject.toml asks for.

Bootstrap, the VM image and CI install only the lock, so a dependency added to
or re-bounded in pyproject.toml without `scripts/lock.sh` would go unnoticed
until some machine installs something nobody tested. `lock_problems` is pure,
so the cases below also show that each kind of drift is caught.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from types import ModuleType
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _lockinputs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lockinputs", ROOT / "scripts" / "lockinputs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lockinputs", mod)
    spec.loader.exec_module(mod)
    return mod


LI = _lockinputs()

# Marker environment of the machine the lock is resolved for (lockinputs' target).
TARGET_ENV = {
    "python_version": LI.PYTHON_VERSION,
    "python_full_version": LI.PYTHON_VERSION + ".2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "extra": "",
}


def _entries(text: str) -> dict[str, tuple[str, int]]:
    """canonical name -> (version, number of --hash) of each pinned requirement."""
    out: dict[str, tuple[str, int]] = {}
    joined = re.sub(r"\\\n\s*", " ", text)
    for line in joined.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            out[canonicalize_name(m.group(1))] = (m.group(2), line.count("--hash=sha256:"))
    return out


def lock_problems(pyproject: dict[str, Any], runtime: str, dev: str) -> list[str]:
    """Every way the two lock texts disagree with `pyproject`; empty when they agree."""
    problems: list[str] = []
    want = LI.input_hash(pyproject)
    locks = {"runtime": _entries(runtime), "dev": _entries(dev)}
    for name, text in (("runtime", runtime), ("dev", dev)):
        got = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                    if ln.startswith("# input-hash:")), "")
        if got != want:
            problems.append(f"{name} lock was made from other inputs ({got or 'no input-hash'} != {want})")
        for pkg, (version, hashes) in locks[name].items():
            if hashes == 0:
                problems.append(f"{name} lock pins {pkg}=={version} without a hash")
    inputs = LI.inputs(pyproject)
    runtime_reqs = [*inputs["dependencies"], *inputs["build-requires"]]
    wanted = [("runtime", r) for r in runtime_reqs]
    wanted += [("dev", r) for r in [*runtime_reqs, *inputs["dev"], *inputs["bootstrap-tools"]]]
    for lock, spec in wanted:
        req = Requirement(spec)
        if req.marker is not None and not req.marker.evaluate(TARGET_ENV):
            continue
        pin = locks[lock].get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{lock} lock is missing {spec!r}")
        elif not req.specifier.contains(pin[0], prereleases=True):
            problems.append(f"{lock} lock pins {req.name}=={pin[0]}, outside {spec!r}")
    for pkg, (version, _) in locks["runtime"].items():
        dev_pin = locks["dev"].get(pkg)
        if dev_pin is None or dev_pin[0] != version:
            problems.append(f"runtime lock pins {pkg}=={version}, dev lock {dev_pin and dev_pin[0]}")
    return problems


def test_lock_matches_pyproject() -> None:
    problems = lock_problems(LI.load_pyproject(ROOT / "pyproject.toml"),
                             LI.RUNTIME_LOCK.read_text(), LI.DEV_LOCK.read_text())
    assert not problems, "the lock is stale, run `scripts/lock.sh`:\n  " + "\n  ".join(problems)


# --- the check itself, on small made-up inputs ---------------------------------------------------

def _pyproject(deps: list[str], dev: list[str] | None = None) -> dict[str, Any]:
    return {
        "build-system": {"requires": ["setuptools>=68"]},
        "project": {"requires-python": ">=3.11", "dependencies": deps,
                    "optional-dependencies": {"dev": dev or ["pytest>=8"]}},
    }


def _lock(pyproject: dict[str, Any], pins: dict[str, str], input_hash: str | None = None) -> str:
    lines = [f"# input-hash: {input_hash or LI.input_hash(pyproject)}"]
    for name, version in pins.items():
        lines += [f"{name}=={version} \\", "    --hash=sha256:" + "0" * 64]
    return "\n".join(lines) + "\n"


RUNTIME_PINS = {"grpcio": "1.85.3", "qemu-qmp": "0.0.6", "setuptools": "84.2.1"}
DEV_PINS = {**RUNTIME_PINS, "pytest": "9.2.0", "pip": "26.3"}


def test_agreeing_lock_has_no_problems() -> None:
    pp = _pyproject(["grpcio>=1.60", "qemu.qmp>=0.0.3", "uvloop>=0.19; sys_platform == 'win32'"])
    assert lock_problems(pp, _lock(pp, RUNTIME_PINS), _lock(pp, DEV_PINS)) == []


@pytest.mark.parametrize(("deps", "runtime_pins", "dev_pins", "fake_hash", "expect"), [
    # A dependency added to pyproject.toml but never locked (and the inputs it changed).
    (["grpcio>=1.60", "qemu.qmp>=0.0.3", "pyvmomi>=8.0"], RUNTIME_PINS, DEV_PINS, None,
     "runtime lock is missing 'pyvmomi>=8.0'"),
    # A lower bound raised past the locked version.
    (["grpcio>=1.90", "qemu.qmp>=0.0.3"], RUNTIME_PINS, DEV_PINS, None,
     "runtime lock pins grpcio==1.85.3, outside 'grpcio>=1.90'"),
    # Inputs edited after locking (e.g. a dev tool's bound), recorded hash left behind.
    (["grpcio>=1.60", "qemu.qmp>=0.0.3"], RUNTIME_PINS, DEV_PINS, "sha256:old",
     "runtime lock was made from other inputs"),
    # The VM image and the venv would run different versions.
    (["grpcio>=1.60", "qemu.qmp>=0.0.3"], RUNTIME_PINS, {**DEV_PINS, "grpcio": "1.86.0"}, None,
     "runtime lock pins grpcio==1.85.3, dev lock 1.86.0"),
    # The bootstrap's own installer left unpinned.
    (["grpcio>=1.60", "qemu.qmp>=0.0.3"], RUNTIME_PINS, {k: v for k, v in DEV_PINS.items() if k != "pip"},
     None, "dev lock is missing 'pip'"),
])
def test_drift_is_caught(deps: list[str], runtime_pins: dict[str, str], dev_pins: dict[str, str],
                         fake_hash: str | None, expect: str) -> None:
    pp = _pyproject(deps)
    # Locks made before the edit: from the inputs without it, unless a hash is forced.
    before = _pyproject(["grpcio>=1.60", "qemu.qmp>=0.0.3"])
    made_from = before if fake_hash is None else pp
    runtime = _lock(made_from, runtime_pins, fake_hash)
    dev = _lock(made_from, dev_pins, fake_hash)
    problems = lock_problems(pp, runtime, dev)
    assert any(expect in p for p in problems), problems


def test_unhashed_pin_is_caught() -> None:
    pp = _pyproject(["grpcio>=1.60", "qemu.qmp>=0.0.3"])
    dev = _lock(pp, DEV_PINS).replace("pip==26.3 \\\n    --hash=sha256:" + "0" * 64, "pip==26.3")
    assert "dev lock pins pip==26.3 without a hash" in lock_problems(pp, _lock(pp, RUNTIME_PINS), dev)

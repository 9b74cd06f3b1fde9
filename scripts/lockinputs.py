"""What the Python lock is made from, and the hash that ties a lock to it.

The lock files are the only thing bootstrap, the VM image build and CI install
from, so a dependency edited in pyproject.toml must not reach them until
scripts/lock.sh has run. lock.sh writes `input_hash()` into each lock's header;
tests/unit/test_lock_fresh.py recomputes it from pyproject.toml, so a forgotten
re-lock fails the unit tests instead of installing something nobody locked.
One module does both so the two can never hash different things.

Usage: python scripts/lockinputs.py hash | target | build-requires | bootstrap-tools | pins LOCKFILE
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"

# The one machine the lock is resolved for: the VM image (Debian bookworm's CPython
# 3.11) and the developers' and CI's machines are all CPython 3.11 on x86_64 Linux.
PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-unknown-linux-gnu"
# Locked beside the dev tools so bootstrap's installer is the same every day.
BOOTSTRAP_TOOLS = ("pip",)

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def load_pyproject(path: Path = ROOT / "pyproject.toml") -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def inputs(pyproject: dict[str, Any]) -> dict[str, Any]:
    """Everything in pyproject.toml (and here) that changes what the lock must say."""
    project = pyproject["project"]
    return {
        "requires-python": project.get("requires-python", ""),
        "dependencies": list(project.get("dependencies", [])),
        "build-requires": list(pyproject.get("build-system", {}).get("requires", [])),
        "dev": list(project.get("optional-dependencies", {}).get("dev", [])),
        "bootstrap-tools": list(BOOTSTRAP_TOOLS),
        "target": [PYTHON_VERSION, PYTHON_PLATFORM],
    }


def input_hash(pyproject: dict[str, Any]) -> str:
    blob = json.dumps(inputs(pyproject), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()


def recorded_hash(lock: Path) -> str:
    """The `# input-hash:` line lock.sh wrote, or "" when there is none."""
    for line in lock.read_text().splitlines():
        if line.startswith("# input-hash:"):
            return line.split(":", 1)[1].strip()
    return ""


def pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` requirement in a lock file."""
    out: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["hash"]:
        print(input_hash(load_pyproject()))
    elif argv[:1] == ["target"]:
        print(PYTHON_VERSION, PYTHON_PLATFORM)
    elif argv[:1] == ["build-requires"]:
        print("\n".join(inputs(load_pyproject())["build-requires"]))
    elif argv[:1] == ["bootstrap-tools"]:
        print("\n".join(BOOTSTRAP_TOOLS))
    elif len(argv) == 2 and argv[0] == "pins":
        print("\n".join(f"{k}=={v}" for k, v in pins(Path(argv[1])).items()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

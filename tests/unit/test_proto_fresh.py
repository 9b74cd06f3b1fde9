"""The committed generated code must match proto/ exactly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generated(root: pathlib.Path) -> dict[pathlib.Path, bytes]:
    return {
        p.relative_to(root): p.read_bytes()
        for p in (root / "cowpod" / "v1").glob("*_pb2*")
        if p.suffix in (".py", ".pyi")
    }


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "genproto.py"), "--out", str(tmp_path)], check=True
    )
    fresh = _generated(tmp_path)
    committed = _generated(ROOT)
    assert fresh, "protoc generated nothing"
    stale = sorted(str(k) for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
    assert not stale, f"generated code is stale, run `python scripts/genproto.py`: {stale}"

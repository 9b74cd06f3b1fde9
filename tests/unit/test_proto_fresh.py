"""The committed generated code must match proto/ exactly."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path: pathlib.Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "genproto.py"), "--out", str(tmp_path)], check=True
    )
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*_pb2*.py*")}
    committed = {
        p.relative_to(ROOT): p.read_bytes() for p in (ROOT / "cowpod" / "v1").rglob("*_pb2*.py*")
    }
    assert fresh, "protoc generated nothing"
    stale = sorted(str(k) for k in fresh.keys() | committed.keys() if fresh.get(k) != committed.get(k))
    assert not stale, f"generated code is stale, run `python scripts/genproto.py`: {stale}"

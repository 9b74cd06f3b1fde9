"""ConfigMaps and Secrets in the agent (agent/configvolumes.py): the files a volume holds,
env from keys, the atomic `..data` swap run by a real busybox, and a whole agent on a fake
runtime holding a container in CreateContainerConfigError until its ConfigMap appears."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess

import pytest

from agent.config import BackoffPolicy
from agent.configvolumes import (
    BUSYBOX,
    ConfigCache,
    ConfigError,
    Payload,
    env_from,
    payload,
    swap_script,
)
from agent.runtime import Kind
from cowpod.clock import FakeClock
from cowpod.configrefs import RefKind
from cowpod.v1 import pod_pb2
from tests.unit.agent.fakes import container, pod
from tests.unit.agent.test_agent import Env, env, make_env  # noqa: F401  (a fixture)

CM = RefKind.CONFIGMAP
SECRET = RefKind.SECRET


def cm_volume(name: str, source: str, *, optional: bool = False, default_mode: int | None = None,
              items: list[tuple[str, str, int | None]] | None = None) -> pod_pb2.Volume:
    v = pod_pb2.Volume(name=name)
    v.config_map.name = source
    v.config_map.optional = optional
    if default_mode is not None:
        v.config_map.default_mode = default_mode
    for key, path, mode in items or []:
        item = v.config_map.items.add(key=key, path=path)
        if mode is not None:
            item.mode = mode
    return v


def test_payload_all_keys_with_the_default_mode() -> None:
    p = payload(cm_volume("v", "game"), {(CM, "game"): {"a": b"1", "b.txt": b"two"}})
    assert p.files == {"a": (b"1", 0o644), "b.txt": (b"two", 0o644)}
    assert p.top_names() == ["a", "b.txt"]


def test_payload_items_pick_keys_paths_and_modes() -> None:
    v = cm_volume("v", "game", default_mode=0o400,
                  items=[("a", "conf/a.properties", None), ("b", "b", 0o600)])
    p = payload(v, {(CM, "game"): {"a": b"1", "b": b"2", "c": b"3"}})
    assert p.files == {"conf/a.properties": (b"1", 0o400), "b": (b"2", 0o600)}
    assert p.top_names() == ["b", "conf"]


def test_payload_missing_object_or_key() -> None:
    with pytest.raises(ConfigError, match='volume "v": configmap "game" not found'):
        payload(cm_volume("v", "game"), {(CM, "game"): None})
    assert payload(cm_volume("v", "game", optional=True), {(CM, "game"): None}).files == {}
    with pytest.raises(ConfigError, match="has no key zz"):
        payload(cm_volume("v", "game", items=[("zz", "zz", None)]), {(CM, "game"): {"a": b"1"}})


def test_secret_volume_uses_secret_name() -> None:
    v = pod_pb2.Volume(name="s")
    v.secret.secret_name = "db"
    assert payload(v, {(SECRET, "db"): {"password": b"x"}}).files == {"password": (b"x", 0o644)}


def test_env_from_prefixes_and_skips_invalid_names() -> None:
    c = container("app")
    c.env_from.add(prefix="GAME_").config_map_ref.name = "game"
    c.env_from.add().secret_ref.name = "db"
    opt = c.env_from.add()
    opt.config_map_ref.name = "absent"
    opt.config_map_ref.optional = True
    snap = {(CM, "game"): {"lives": b"3", "bad key": b"x"}, (SECRET, "db"): {"PASS": b"pw"},
            (CM, "absent"): None}
    assert env_from(c, snap) == {"GAME_lives": "3", "PASS": "pw"}
    with pytest.raises(ConfigError, match='secret "db" not found'):
        env_from(c, {**snap, (SECRET, "db"): None})


async def test_cache_reuses_until_the_ttl_and_asks_again_for_missing_sooner() -> None:
    clock = FakeClock()
    calls: list[str] = []
    store: dict[str, dict[str, bytes]] = {}

    async def reader(kind: RefKind, namespace: str, name: str) -> dict[str, bytes] | None:
        calls.append(name)
        return store.get(name)

    cache = ConfigCache(reader, clock, ttl=5.0, missing_ttl=1.0)
    assert await cache.get("default", CM, "x") is None
    store["x"] = {"k": b"v"}
    assert await cache.get("default", CM, "x") is None  # still cached as missing
    await clock.advance(1.5)
    assert await cache.get("default", CM, "x") == {"k": b"v"}
    store["x"] = {"k": b"w"}
    await clock.advance(4.0)
    assert await cache.get("default", CM, "x") == {"k": b"v"}
    await clock.advance(1.5)
    assert await cache.get("default", CM, "x") == {"k": b"w"}
    assert calls == ["x", "x", "x"]


def _write(directory: pathlib.Path, version: str, p: Payload) -> None:
    """What put_files does (the engine's archive upload), then the swap, with a real busybox."""
    for path, (data, mode) in p.files.items():
        f = directory / version / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(mode)
    (directory / version).mkdir(exist_ok=True)
    subprocess.run([BUSYBOX, "sh", "-c", swap_script(str(directory), version, p.top_names())], check=True)


@pytest.mark.skipif(not os.path.exists(BUSYBOX) and shutil.which("busybox") is None, reason="busybox-static")
def test_swap_script_layout_is_kubernetes_atomic_writer(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "vol"
    d.mkdir()
    _write(d, "..2026_01_01_00_00_00.000000001", Payload({"a": (b"1", 0o644), "conf/x": (b"x", 0o400)}))
    assert os.readlink(d / "..data") == "..2026_01_01_00_00_00.000000001"
    assert os.readlink(d / "a") == "..data/a" and (d / "a").read_bytes() == b"1"
    assert (d / "conf" / "x").read_bytes() == b"x" and (d / "conf" / "x").stat().st_mode & 0o777 == 0o400
    # An update: a new version, `a` changed, `conf` gone, `b` new; the old version removed.
    _write(d, "..2026_01_01_00_00_09.000000002", Payload({"a": (b"2", 0o644), "b": (b"b", 0o644)}))
    assert (d / "a").read_bytes() == b"2" and (d / "b").read_bytes() == b"b"
    assert sorted(os.listdir(d)) == ["..2026_01_01_00_00_09.000000002", "..data", "a", "b"]


async def test_container_waits_for_its_configmap_then_starts_with_env(env: Env) -> None:  # noqa: F811
    c = container("app")
    c.env.add(name="LIVES").value_from.config_map_key_ref.CopyFrom(
        pod_pb2.ConfigMapKeySelector(name="game", key="lives"))
    c.env.add(name="TOKEN").value_from.secret_key_ref.CopyFrom(
        pod_pb2.SecretKeySelector(name="db", key="token", optional=True))
    c.volume_mounts.add(name="cfg", mount_path="/etc/game")
    p = pod("web", c, volumes=[cm_volume("cfg", "game")])
    env.cp.put(p)

    def waiting_reason() -> str:
        st = env.cp.get("web")
        cs = [s for s in st.status.container_statuses if s.name == "app"] if st else []
        return cs[0].state.waiting.reason if cs and cs[0].state.HasField("waiting") else ""

    await env.until(lambda: waiting_reason() == "CreateContainerConfigError")
    assert 'configmap "game" not found' in env.app("web").state.waiting.message
    env.cp.configs[(CM, "default", "game")] = {"lives": b"3", "level": b"7"}
    await env.until(lambda: env.app("web").state.HasField("running"))
    app = next(x for x in env.rt.containers.values() if x.info.kind == Kind.APP)
    assert app.spec.env["LIVES"] == "3" and "TOKEN" not in app.spec.env
    assert next(m for m in app.spec.mounts if m.target == "/etc/game").read_only
    sandbox = next(x for x in env.rt.containers.values() if x.info.kind == Kind.SANDBOX)
    assert any(m.target == "/.cowpod-config/cfg" for m in sandbox.spec.mounts)
    files = {path: data for (cid, path), data in env.rt.files.items() if cid == sandbox.info.id}
    assert sorted(p.rsplit("/", 1)[1] for p in files) == ["level", "lives"]
    swaps = [cmd for name, cmd in env.rt.exec_log if cmd[:2] == (BUSYBOX, "sh")]
    assert len(swaps) == 1

    # An update reaches the files (a new version written and swapped in); env stays.
    env.cp.configs[(CM, "default", "game")] = {"lives": b"5", "level": b"7"}
    await env.until(lambda: len([cmd for _, cmd in env.rt.exec_log if cmd[:2] == (BUSYBOX, "sh")]) == 2)
    newest = max(p for (cid, p) in env.rt.files if cid == sandbox.info.id and p.endswith("/lives"))
    assert env.rt.files[(sandbox.info.id, newest)] == b"5"
    assert app.spec.env["LIVES"] == "3"


async def test_secret_values_never_reach_events_or_logs(
    env: Env, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    caplog.set_level("DEBUG")
    env.cp.configs[(SECRET, "default", "db")] = {"password": b"hunter2-value"}
    c = container("app")
    c.env.add(name="PW").value_from.secret_key_ref.CopyFrom(
        pod_pb2.SecretKeySelector(name="db", key="password"))
    c.env.add(name="MISSING").value_from.secret_key_ref.CopyFrom(
        pod_pb2.SecretKeySelector(name="db", key="nope"))
    env.cp.put(pod("leaky", c))

    def waiting() -> str:
        p = env.cp.get("leaky")
        if p is None or not p.status.container_statuses:
            return ""
        return str(env.app("leaky").state.waiting.reason)

    await env.until(lambda: waiting() == "CreateContainerConfigError")
    assert env.app("leaky").state.waiting.message == 'couldn\'t find key nope in secret "db"'
    env.cp.configs[(SECRET, "default", "db")] = {"password": b"hunter2-value", "nope": b"other-value"}
    await env.until(lambda: env.app("leaky").state.HasField("running"))
    text = " ".join(e.message for e in env.cp.events) + caplog.text
    text += " ".join(str(s.status) for s in env.cp.status_writes)
    assert "hunter2" not in text and "other-value" not in text


async def test_cache_keeps_the_last_answer_while_the_controller_is_away() -> None:
    clock = FakeClock()
    up = True

    async def reader(kind: RefKind, namespace: str, name: str) -> dict[str, bytes] | None:
        if not up:
            raise ConnectionError("controller down")
        return {"k": b"v"}

    cache = ConfigCache(reader, clock, ttl=1.0)
    with pytest.raises(ConfigError, match='cannot read configmap "never" from the controller'):
        up = False
        await cache.get("default", CM, "never")
    up = True
    assert await cache.get("default", CM, "x") == {"k": b"v"}
    up = False
    await clock.advance(5.0)
    assert await cache.get("default", CM, "x") == {"k": b"v"}


async def test_a_long_wait_for_a_configmap_is_retried_every_resync(tmp_path: pathlib.Path) -> None:
    e = make_env(tmp_path, image_backoff=BackoffPolicy(initial=100, maximum=1000), resync_seconds=10.0)
    await e.start()
    try:
        c = container("app")
        c.env_from.add().config_map_ref.name = "late"
        e.cp.put(pod("patient", c))
        await e.until(lambda: e.cp.get("patient") is not None and e.cp.status_writes != [])
        for _ in range(30):  # five minutes of fake time: an image back-off would be at 800 s by now
            await e.clock.advance(10.0)
            for _ in range(5):
                await asyncio.sleep(0)
        e.cp.configs[(CM, "default", "late")] = {"MODE": b"fast"}
        await e.until(lambda: e.app("patient").state.HasField("running"), limit=12.0)
    finally:
        await e.stop()

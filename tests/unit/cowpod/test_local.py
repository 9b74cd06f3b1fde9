"""The local-cluster supervisor's pure parts: state file, command lines, checks, processes, config."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import socket
import sys

import pytest

from cowpod.auth.config import ClusterEntry, ContextEntry, UserConfig, UserEntry, with_local_cluster
from cowpod.auth.config import load_config as load_user_config
from cowpod.clock import RealClock
from cowpod.config import load_config
from cowpod.local import fleet, process
from cowpod.local.state import (
    ClusterState,
    ComponentState,
    StateError,
    connection_for,
    read_state,
    write_state,
)
from cowpod.local.supervisor import (
    Layout,
    Supervisor,
    SupervisorError,
    UpOptions,
    check_prerequisites,
    controller_command,
    etcd_cluster,
    etcd_components,
    etcd_member_names,
    last_log_line,
    port_in_use,
    read_etcd_ports,
    scheduler_command,
    scheduler_env,
    write_etcd_ports,
)
from cowpod.pki import ClusterPKI


def state(data_dir: pathlib.Path, **kw: object) -> ClusterState:
    base: dict[str, object] = dict(
        cluster_id="cp-1234567890",
        data_dir=str(data_dir),
        controller="127.0.0.1:7171",
        controller_socket=str(data_dir / "run" / "controller.sock"),
        etcd="127.0.0.1:2379",
        components=[
            ComponentState(
                "etcd", 101, "127.0.0.1:2379", str(data_dir / "logs/etcd.log"), ["/usr/bin/etcd"], "etcd"
            ),
            ComponentState(
                "controller", 102, "127.0.0.1:7171", "c.log", ["cowpod-controller", "--x"], "grpc"
            ),
        ],
    )
    base.update(kw)
    return ClusterState(**base)  # type: ignore[arg-type]


def test_state_file_round_trip(tmp_path: pathlib.Path) -> None:
    s = state(tmp_path, secure=True, pki_dir=str(tmp_path / "pki"))
    write_state(tmp_path, s)
    assert read_state(tmp_path) == s
    raw = json.loads((tmp_path / "cluster.json").read_text())
    assert raw["clusterId"] == "cp-1234567890"
    assert raw["components"][1]["name"] == "controller" and raw["components"][1]["pid"] == 102
    assert not list(tmp_path.glob(".cluster.*"))  # the temp file was renamed into place


def test_missing_and_damaged_state(tmp_path: pathlib.Path) -> None:
    assert read_state(tmp_path) is None
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(StateError, match=r"cluster\.json is damaged"):
        read_state(tmp_path)


def test_command_lines() -> None:
    d = pathlib.Path("/d")
    insecure = controller_command(
        "cowpod-controller",
        listen="127.0.0.1:7070",
        socket_path=d / "run/controller.sock",
        etcd="127.0.0.1:2379",
        provider="docker",
        data_dir=d,
    )
    assert insecure == [
        "cowpod-controller",
        "--listen",
        "127.0.0.1:7070",
        "--listen-unix",
        "/d/run/controller.sock",
        "--etcd",
        "127.0.0.1:2379",
        "--provider",
        "docker",
        "--data-dir",
        "/d",
        "--insecure",
    ]
    secure = controller_command(
        "c", listen="a:1", socket_path=d / "s", etcd="e:2", provider="sim", data_dir=d, pki_dir=d / "pki"
    )
    assert secure[-2:] == ["--pki-dir", "/d/pki"]
    autoscaled = controller_command(
        "c", listen="a:1", socket_path=d / "s", etcd="e:2", provider="docker", data_dir=d,
        cluster_config="/d/cluster.yaml", autoscale=True,
    )
    assert autoscaled[-3:] == ["--cluster-config", "/d/cluster.yaml", "--autoscale"]
    settings_only = controller_command(
        "c", listen="a:1", socket_path=d / "s", etcd="e:2", provider="vsphere", data_dir=d,
        cluster_config="/d/cluster.yaml",
    )
    assert settings_only[-2:] == ["--cluster-config", "/d/cluster.yaml"]
    shells = controller_command(
        "c", listen="a:1", socket_path=d / "s", etcd="e:2", provider="docker", data_dir=d, warm_shells=5,
    )
    assert shells[-2:] == ["--warm-shells", "5"]
    assert scheduler_command("s", controller="a:1", metrics="127.0.0.1:9") == [
        "s",
        "--controller",
        "a:1",
        "--metrics-listen",
        "127.0.0.1:9",
    ]
    assert scheduler_env(None) == {"COWPOD_INSECURE": "1"}
    env = scheduler_env(ClusterPKI(d / "pki"))
    assert env["COWPOD_CERT_FILE"] == "/d/pki/scheduler.crt" and env["COWPOD_CA_FILE"] == "/d/pki/ca.crt"


def test_layout() -> None:
    lay = Layout(pathlib.Path("/data"))
    assert lay.etcd_dir == pathlib.Path("/data/etcd")
    assert lay.log("controller") == pathlib.Path("/data/logs/controller.log")
    assert lay.controller_socket == pathlib.Path("/data/run/controller.sock")
    assert lay.pki.directory == pathlib.Path("/data/pki")


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        (UpOptions(provider="none", vms=1), "--vms needs a VM provider"),
        (UpOptions(provider="kvm"), "--provider must be one of"),
        (UpOptions(vms=-1, provider="sim"), "--vms must be 0 or more"),
        (UpOptions(listen="7070"), "--listen must be HOST:PORT"),
        (UpOptions(listen="127.0.0.1:99999"), "--listen must be HOST:PORT"),
        (UpOptions(provider="sim", vms=1, vm_cpu_millis=0), "more than zero"),
    ],
)
def test_prerequisites_fail_clearly(tmp_path: pathlib.Path, opts: UpOptions, words: str) -> None:
    with pytest.raises(SupervisorError, match=words):
        check_prerequisites(opts, Layout(tmp_path))


def test_prerequisites_refuse_a_busy_listen_address(tmp_path: pathlib.Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SupervisorError, match=f"127.0.0.1:{port} is already in use"):
            check_prerequisites(UpOptions(listen=f"127.0.0.1:{port}", provider="sim"), Layout(tmp_path))


def test_prerequisites_pass_a_port_whose_old_connections_sit_in_time_wait(tmp_path: pathlib.Path) -> None:
    """#16: `cowpod down` then `up` within a minute failed with "already in use"
    when the old server had hung up on a caller: its side of that connection sits
    in TIME_WAIT on the port, and the check bound without SO_REUSEADDR."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as caller:
            conn, _ = listener.accept()
            conn.close()  # the server hangs up first: its end goes to TIME_WAIT
            assert caller.recv(1) == b""
    # The condition of the bug is there: a plain bind fails although nothing listens.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    assert not port_in_use(f"127.0.0.1:{port}")
    check_prerequisites(UpOptions(listen=f"127.0.0.1:{port}", provider="sim"), Layout(tmp_path))


def test_port_in_use_sees_a_listener_on_the_wildcard_address() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(f"127.0.0.1:{port}")
        assert port_in_use(f"0.0.0.0:{port}")


def test_prerequisites_refuse_a_socket_path_too_long(tmp_path: pathlib.Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(SupervisorError, match="too long for a unix socket"):
        check_prerequisites(UpOptions(provider="sim"), Layout(deep))


def test_prerequisites_name_a_missing_etcd(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SupervisorError, match="etcd binary not found"):
        check_prerequisites(UpOptions(provider="sim"), Layout(tmp_path))


@pytest.mark.parametrize(
    ("actual", "expected", "ours"),
    [
        (["/usr/bin/etcd", "--name", "a"], ["/usr/bin/etcd", "--name", "a"], True),
        (
            ["/v/bin/python", "/v/bin/cowpod-controller", "--listen", "x"],
            ["/v/bin/cowpod-controller", "--listen", "x"],
            True,
        ),
        (
            ["/v/bin/python", "/v/bin/cowpod-controller", "--listen", "y"],
            ["/v/bin/cowpod-controller", "--listen", "x"],
            False,
        ),
        (["/bin/sleep", "100"], ["/usr/bin/etcd", "100"], False),
        ([], ["/usr/bin/etcd"], False),
    ],
)
def test_a_pid_is_ours_only_with_our_command_line(actual: list[str], expected: list[str], ours: bool) -> None:
    assert process.matches(actual, expected) is ours


async def test_terminate_stops_our_child_and_ignores_strangers() -> None:
    cmd = ["sleep", "30"]
    proc = await asyncio.create_subprocess_exec(*cmd)
    try:
        for _ in range(200):  # until the child has exec'd
            if process.is_ours(proc.pid, cmd):
                break
            await asyncio.sleep(0.01)
        assert process.is_ours(proc.pid, cmd)
        assert not process.is_ours(proc.pid, ["sleep", "31"])
        assert await process.terminate(proc.pid, ["sleep", "31"], RealClock()) is False  # not ours: untouched
        assert process.pid_alive(proc.pid)
        assert await process.terminate(proc.pid, cmd, RealClock(), grace=5) is True
        assert not process.pid_alive(proc.pid)
    finally:
        if proc.returncode is None and process.pid_alive(proc.pid):
            proc.kill()
        await proc.wait()


def test_last_log_line(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "c.log"
    log.write_text("starting\nerror: etcd unreachable\n\n")
    assert last_log_line(log) == "error: etcd unreachable"
    assert last_log_line(tmp_path / "missing.log") == ""


def _supervisor(tmp_path: pathlib.Path) -> tuple[Supervisor, list[str]]:
    said: list[str] = []
    sup = Supervisor(
        Layout(tmp_path),
        RealClock(),
        say=said.append,
        progress=lambda _: None,
        progress_done=lambda: None,
        env={},
    )
    return sup, said


async def test_purge_deletes_the_data_but_keeps_a_user_config(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "data"
    (d / "etcd").mkdir(parents=True)
    (d / "logs").mkdir()
    (d / "config").write_text("kind: Config\n")
    sup, said = _supervisor(d)
    assert await sup.down(purge=True) is False  # nothing was running
    assert sorted(p.name for p in d.iterdir()) == ["config"]
    assert said == [f"deleted {d}"]


async def test_purge_takes_the_local_context_out_of_the_user_config(tmp_path: pathlib.Path) -> None:
    """As `kind delete cluster` edits the kubeconfig: the `local` entries named the PKI the
    purge deletes; another cluster's entries stay, and the current context goes if local."""
    d = tmp_path / "data"
    (d / "etcd").mkdir(parents=True)
    config = d / "config"
    cfg = with_local_cluster(UserConfig(base_dir=d), server="127.0.0.1:7070", secure=True, pki_dir=d / "pki")
    cfg.with_cluster(ClusterEntry("prod", "10.0.0.1:7070", insecure=True)).with_user(
        UserEntry("ops", token="t")).with_context(ContextEntry("prod", "prod", "ops")).save(config)
    sup, said = _supervisor(d)
    assert await sup.down(purge=True) is False
    left = load_user_config(config)
    assert [c.name for c in left.clusters] == ["prod"]
    assert [u.name for u in left.users] == ["ops"]
    assert [c.name for c in left.contexts] == ["prod"]
    assert left.current_context == ""
    assert said == [f"removed the 'local' context from {config}", f"deleted {d}"]


async def test_purge_deletes_a_user_config_that_held_only_the_local_context(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "data"
    (d / "logs").mkdir(parents=True)
    with_local_cluster(UserConfig(base_dir=d), server="127.0.0.1:7070", secure=False,
                       pki_dir=d / "pki").save(d / "config")
    sup, _ = _supervisor(d)
    await sup.down(purge=True)
    assert not d.exists()


async def test_purge_leaves_an_unreadable_user_config_alone(tmp_path: pathlib.Path) -> None:
    d = tmp_path / "data"
    (d / "logs").mkdir(parents=True)
    (d / "config").write_text("clusters: [")
    sup, said = _supervisor(d)
    await sup.down(purge=True)
    assert (d / "config").read_text() == "clusters: ["
    assert said[0].startswith(f"warning: left {d / 'config'} as it is: ") and "not valid YAML" in said[0]


async def test_purge_refuses_a_directory_that_is_not_a_cowpod_data_dir(tmp_path: pathlib.Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    sup, _ = _supervisor(tmp_path)
    with pytest.raises(SupervisorError, match="does not look like a cowpod data dir"):
        await sup.down(purge=True)
    assert (tmp_path / "precious.txt").exists()


async def test_status_of_a_dead_cluster(tmp_path: pathlib.Path) -> None:
    write_state(
        tmp_path,
        state(
            tmp_path,
            components=[ComponentState("scheduler", 2**22 + 12345, "", "s.log", ["cowpod-scheduler"], "pid")],
        ),
    )
    sup, _ = _supervisor(tmp_path)
    report = await sup.status()
    assert report is not None
    data = report.to_json()
    assert data["components"][0]["name"] == "scheduler"
    assert data["components"][0]["healthy"] is False
    assert data["dataDir"] == str(tmp_path) and data["controller"] == "127.0.0.1:7171"
    assert sup.running() is None


def test_vm_objects_for_up() -> None:
    assert fleet.vm_names(3) == ["vm-1", "vm-2", "vm-3"]
    vm = fleet.vm_object(
        "vm-1", cpu_millis=1000, memory_bytes=2**30, provider="docker", image="cowpod/vm:latest"
    )
    assert (vm.api_version, vm.kind, vm.metadata.name) == ("cowpod.io/v1", "VM", "vm-1")
    assert (vm.spec.class_name, vm.spec.cpu_millis, vm.spec.memory_bytes) == ("default", 1000, 2**30)


# --- config -----------------------------------------------------------------------------------


def test_config_precedence(tmp_path: pathlib.Path) -> None:
    env = {"HOME": str(tmp_path), "COWPOD_DATA_DIR": str(tmp_path / "d")}
    c = load_config(env=env)
    assert (c.controller, c.controller_source, c.namespace) == ("127.0.0.1:7070", "default", "default")
    assert c.data_dir == tmp_path / "d" and c.connection.insecure
    write_state(tmp_path / "d", state(tmp_path / "d"))
    c = load_config(env=env)
    assert (c.controller, c.controller_source) == ("127.0.0.1:7171", "state")
    c = load_config(env={**env, "COWPOD_CONTROLLER": "10.0.0.1:1", "COWPOD_NAMESPACE": "prod"})
    assert (c.controller, c.controller_source, c.namespace) == ("10.0.0.1:1", "env", "prod")
    c = load_config(env={**env, "COWPOD_CONTROLLER": "10.0.0.1:1"}, controller="unix:///s", namespace="dev")
    assert (c.controller, c.controller_source, c.namespace) == ("unix:///s", "flag", "dev")
    assert c.connection.server == "unix:///s"
    c = load_config(env=env, data_dir=str(tmp_path / "other"))
    assert c.controller_source == "default" and c.data_dir == tmp_path / "other"


def test_a_secure_local_cluster_is_reached_as_its_admin(tmp_path: pathlib.Path) -> None:
    pki = ClusterPKI(tmp_path / "pki")
    pki.ensure(now=1_795_600_000)
    s = state(tmp_path, secure=True, pki_dir=str(pki.directory))
    settings = connection_for(s)
    assert not settings.insecure
    assert settings.client_cert_pem == pki.cert("admin").read_bytes()
    assert settings.ca_pem == pki.ca_cert.read_bytes()
    write_state(tmp_path, s)
    c = load_config(env={"HOME": str(tmp_path)}, data_dir=str(tmp_path))
    assert c.connection.client_key_pem == pki.key("admin").read_bytes()


def test_python_is_alive_and_ours() -> None:
    me = process.cmdline(os.getpid())
    assert me is not None and process.is_ours(os.getpid(), me)
    assert sys.executable


def test_pods_nested_in_a_vm_are_found_by_cgroup_or_network() -> None:
    from cowpod.local.docker_env import nested_in

    vms = {"abc123"}
    assert nested_in("container:abc123", "", vms)
    assert nested_in("container:sandbox9", "/docker/abc123", vms)
    assert not nested_in("container:other", "/docker/zzz", vms)
    assert not nested_in("bridge", "", vms)


def test_etcd_cluster_members_name_each_other_and_keep_their_ports(tmp_path: pathlib.Path) -> None:
    lay = Layout(tmp_path)
    members = etcd_cluster(lay, 3)
    assert [m.name for m in members] == ["etcd-0", "etcd-1", "etcd-2"]
    assert [m.data_dir for m in members] == [tmp_path / "etcd-0", tmp_path / "etcd-1", tmp_path / "etcd-2"]
    assert [m.log_path for m in members] == [lay.log("etcd-0"), lay.log("etcd-1"), lay.log("etcd-2")]
    initial = ",".join(f"etcd-{i}=http://127.0.0.1:{m.peer_port}" for i, m in enumerate(members))
    for m in members:
        cmd = m.command()
        assert cmd[cmd.index("--initial-cluster") + 1] == initial
        assert cmd[cmd.index("--name") + 1] == m.name
        assert cmd[cmd.index("--listen-client-urls") + 1] == f"http://127.0.0.1:{m.client_port}"
    assert len({p for m in members for p in (m.client_port, m.peer_port)}) == 6
    # The ports are recorded, and reused only while the member's data exists.
    write_etcd_ports(lay, members)
    assert read_etcd_ports(lay) == {}
    for m in members:
        (m.data_dir / "member").mkdir(parents=True)
    saved = read_etcd_ports(lay)
    again = etcd_cluster(lay, 3, saved)
    assert [(m.client_port, m.peer_port) for m in again] == [(m.client_port, m.peer_port) for m in members]
    # One member stays the single `etcd` it always was.
    assert etcd_member_names(1) == ["etcd"] and lay.etcd_member_dir("etcd") == lay.etcd_dir


def test_etcd_member_count_must_be_odd(tmp_path: pathlib.Path) -> None:
    with pytest.raises(SupervisorError, match="--etcd-members must be one of 1, 3, 5"):
        check_prerequisites(UpOptions(provider="none", etcd_members=2), Layout(tmp_path))


async def test_status_and_down_know_every_etcd_member(tmp_path: pathlib.Path) -> None:
    members = [
        ComponentState(f"etcd-{i}", 2**22 + 100 + i, f"127.0.0.1:{2379 + i}", f"e{i}.log", ["etcd"], "etcd")
        for i in range(3)
    ]
    ctl = ComponentState("controller", 2**22 + 99, "127.0.0.1:7171", "c.log", ["cowpod-controller"], "grpc")
    endpoints = ",".join(m.address for m in members)
    write_state(tmp_path, state(tmp_path, etcd=endpoints, components=[*members, ctl]))
    s = read_state(tmp_path)
    assert s is not None and s.etcd == endpoints
    assert [c.name for c in etcd_components(s)] == ["etcd-0", "etcd-1", "etcd-2"]
    sup, _ = _supervisor(tmp_path)
    report = await sup.status()
    assert report is not None
    data = report.to_json()
    assert data["etcd"] == endpoints
    assert [c["name"] for c in data["components"]] == ["etcd-0", "etcd-1", "etcd-2", "controller"]
    assert await sup.down() is True  # nothing alive: the state is cleared
    assert read_state(tmp_path) is None


def test_secrets_encryption_file_is_made_once_and_parses(tmp_path: pathlib.Path) -> None:
    from controller import encryption
    from cowpod.local import secrets_encryption

    path = tmp_path / "d" / secrets_encryption.FILE_NAME
    assert secrets_encryption.ensure(path) is True
    first = path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert secrets_encryption.ensure(path) is False and path.read_text() == first  # never rewritten
    cfg = encryption.load(path)
    assert cfg.describe() == "secrets with aesgcm:key1"
    assert cfg.decrypt("registry/secrets/default/x", b"plain") == b"plain"  # identity second
    assert [p.name for p in path.parent.iterdir()] == [secrets_encryption.FILE_NAME]  # no temp left
    other = tmp_path / "e" / secrets_encryption.FILE_NAME
    secrets_encryption.ensure(other)
    assert other.read_text() != first  # a fresh random key per cluster
    cmd = controller_command("c", listen="a:1", socket_path=tmp_path / "s", etcd="e:2", provider="sim",
                             data_dir=tmp_path, encryption_config=path)
    assert cmd[-2:] == ["--encryption-config", str(path)]

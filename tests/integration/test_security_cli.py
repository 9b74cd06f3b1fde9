"""The CLI against a secure controller: `cowpod token create`, a token user in the
config file (`cowpod config set-token`), `cowpod config` naming cluster and user,
and the view role refused a write with a clear one-line error."""

from __future__ import annotations

import io
import pathlib
import uuid
from collections.abc import Iterator

import pytest

from controller.testing import ControllerRunner
from cowpod.auth.config import ContextEntry, UserConfig, with_local_cluster
from cowpod.cli.main import main
from cowpod.local.etcd import EtcdMember
from tests.integration.test_fuzz_api import ThreadedController

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(etcd: EtcdMember, tmp_path: pathlib.Path) -> Iterator[tuple[ThreadedController, dict[str, str]]]:
    runner = ControllerRunner.secure(etcd.endpoint, f"/cli-{uuid.uuid4().hex[:8]}", pki_dir=tmp_path / "pki")
    tc = ThreadedController(runner)
    tc.start()
    data = tmp_path / "data"
    cfg = with_local_cluster(UserConfig(base_dir=data), server=runner.address, secure=True,
                             pki_dir=tmp_path / "pki")
    # A context of its own name, as if switched to: the CLI then follows the config file.
    cfg = cfg.with_context(ContextEntry("mine", "local", "local-admin"), use=True)
    cfg.save(data / "config")
    try:
        yield tc, {"COWPOD_DATA_DIR": str(data), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    finally:
        tc.stop()


def cli(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), env=env, stdout=out, stderr=err, stdin=io.StringIO())
    return code, out.getvalue(), err.getvalue()


def test_view_token_user_through_the_cli(cluster: tuple[ThreadedController, dict[str, str]]) -> None:
    _, env = cluster
    code, out, err = cli(env, "config")
    assert code == 0, err
    assert "identity: admin (role admin, by certificate)" in out
    code, token, err = cli(env, "token", "create", "--role", "view", "--description", "ci")
    assert code == 0, err
    assert "only time its secret is shown" in err
    code, out, err = cli(env, "config", "set-token", "viewer", "--token", token.strip(), "--use")
    assert code == 0, err
    code, out, err = cli(env, "config")
    assert code == 0, err
    assert "user:     viewer (bearer token)" in out
    assert "(role view, by token)" in out and token.strip() not in out
    code, out, err = cli(env, "get", "pods")
    assert code == 0, err
    code, out, err = cli(env, "apply", "-f", str(ROOT / "examples" / "hello.yaml"))
    assert code != 0
    assert "permission denied" in err and "view role only reads" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = cli(env, "token", "list")
    assert code != 0 and "only admin manages tokens" in err
    cli(env, "config", "use-context", "mine")
    code, out, err = cli(env, "token", "list")
    assert code == 0 and "view" in out and "ci" in out

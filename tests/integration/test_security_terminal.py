"""Hole 8 of #15: a pod (its termination message), an agent or any user who may write
events put terminal escape sequences into messages, and the CLI printed them raw to
the operator's terminal. Against a real secure controller, through the real CLI."""

from __future__ import annotations

import pathlib

import pytest

from cowpod.v1 import event_pb2, meta_pb2, pod_pb2
from tests.integration.test_fuzz_api import ThreadedController
from tests.integration.test_security_cli import cli, cluster

pytestmark = pytest.mark.integration
__all__ = ["cluster"]  # fixture

# Set the window title, clear the screen, hide the rest with reverse video off; a bidi override.
HOSTILE = "ok\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\u202egnp.exe\x9b31m"

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: victim}
spec:
  containers:
  - {name: main, image: cowpod/busybox:latest}
"""


def test_cli_escapes_control_characters_from_the_cluster(
    cluster: tuple[ThreadedController, dict[str, str]], tmp_path: pathlib.Path
) -> None:
    tc, env = cluster
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD)
    code, _, err = cli(env, "apply", "-f", str(manifest))
    assert code == 0, err
    # What a node reports and what anyone with events.create writes.
    got = pod_pb2.Pod.FromString(tc.raw("/cowpod.v1.PodService/Get")(
        meta_pb2.ObjectKey(namespace="default", name="victim").SerializeToString(), timeout=10))
    got.status.phase = "Pending"
    got.status.reason = "Evil"
    got.status.message = HOSTILE
    waiting = got.status.container_statuses.add(name="main").state.waiting
    waiting.reason, waiting.message = "CrashLoopBackOff", HOSTILE
    tc.raw("/cowpod.v1.PodService/UpdateStatus")(got.SerializeToString(), timeout=10)
    ev = event_pb2.Event(
        metadata=meta_pb2.ObjectMeta(name="victim.evil", namespace="default"),
        involved_object=event_pb2.ObjectReference(kind="Pod", name="victim", namespace="default"),
        reason="Evil", message=HOSTILE, type="Warning", count=1,
    )
    tc.raw("/cowpod.v1.EventService/Create")(ev.SerializeToString(), timeout=10)

    for argv in (("get", "events"), ("describe", "pod", "victim"), ("get", "pod", "victim", "-o", "wide"),
                 ("get", "pod", "victim", "-o", "jsonpath={.status.message}")):
        code, out, err = cli(env, *argv)
        assert code == 0, err
        assert not any(c in out for c in "\x1b\x07\x9b\u202e"), (argv, out)
        if argv[0] != "get" or argv[1] == "events" or "jsonpath" in argv[-1]:
            assert "\\x1b]0;pwned\\x07" in out and "\\u202e" in out, (argv, out)

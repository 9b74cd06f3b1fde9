"""hostPath prefixes (agent/hostpath.py): parsing, matching, the node's refusal."""

from __future__ import annotations

import pytest

from agent.admission import Admission
from agent.hostpath import HostPathPrefix, not_allowed, prefix_for
from cowpod.api.resources import Resources
from cowpod.v1 import pod_pb2

PREFIXES = (HostPathPrefix("/srv/data"), HostPathPrefix("/srv/data/scratch", writable=True))


def test_parse() -> None:
    assert HostPathPrefix.parse("/srv/data") == HostPathPrefix("/srv/data", writable=False)
    assert HostPathPrefix.parse("/srv/data:ro") == HostPathPrefix("/srv/data", writable=False)
    assert HostPathPrefix.parse("/srv/data:rw") == HostPathPrefix("/srv/data", writable=True)
    for bad in ("/", "relative", "/srv/../etc", "/srv/data/", "//srv"):
        with pytest.raises(ValueError):
            HostPathPrefix.parse(bad)


def test_longest_prefix_wins_and_siblings_do_not_match() -> None:
    assert prefix_for("/srv/data/scratch/x", PREFIXES) == PREFIXES[1]
    assert prefix_for("/srv/data/a", PREFIXES) == PREFIXES[0]
    assert prefix_for("/srv/data", PREFIXES) == PREFIXES[0]
    assert prefix_for("/srv/database", PREFIXES) is None
    assert prefix_for("/etc/cron.d", PREFIXES) is None


def test_forbidden_by_default() -> None:
    assert not_allowed("/srv/data/a", ()) is not None
    assert not_allowed("/root/.ssh", PREFIXES) is not None
    assert not_allowed("/srv/data/a", PREFIXES) is None


def test_admission_refuses_paths_outside_the_prefixes() -> None:
    pod = pod_pb2.Pod()
    pod.metadata.uid = "u1"
    pod.spec.volumes.add(name="v", host_path=pod_pb2.HostPathVolumeSource(path="/etc/cron.d"))
    verdict = Admission(Resources(1000, 1 << 30, 10), host_path_prefixes=PREFIXES).admit(pod)
    assert verdict is not None and verdict[0] == "HostPathNotAllowed"
    assert Admission(Resources(1000, 1 << 30, 10)).admit(pod) is not None

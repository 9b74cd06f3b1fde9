"""Issue 12 through the CLI a user types: `deploy/vcsim/start.sh` prints a
cluster config, `cowpod up -d --cluster-config` starts a secure cluster on it,
and a pod that fits nowhere runs on a VM the autoscaler instant-cloned in the
simulator (its task list says InstantClone_Task), or, on a simulator without
InstantClone_Task, on a linked clone that says so. `cowpod down` leaves the
simulator's inventory as start.sh made it. Bad settings stop `cowpod up` with
one line naming the setting.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest
import yaml

from cowpod.local.etcd import free_port
from hypervisor.providers.vsphere.client import connect, vim
from hypervisor.providers.vsphere.testing import Vcsim
from tests.e2e.cli_cluster import CliCluster as Cli
from tests.e2e.cli_cluster import cli_env

pytestmark = pytest.mark.e2e

POD = """apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: main
    image: cowpod/busybox:latest
    command: [sleep, "3600"]
    resources: {requests: {cpu: 200m, memory: 32Mi}}
"""


def cli_for(data: pathlib.Path) -> Cli:
    return Cli(cli_env(data), data)


def inventory(sim: Vcsim) -> list[str]:
    si = sim.connect()
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            return sorted(v.name for v in view.view)
        finally:
            view.DestroyView()
    finally:
        connect.Disconnect(si)


def clone_tasks(sim: Vcsim) -> list[tuple[str, str, str]]:
    """(descriptionId, source VM, made VM) of the simulator's successful clone tasks."""
    si = sim.connect()
    try:
        out = []
        for t in si.RetrieveContent().taskManager.recentTask:
            info = t.info
            if info.descriptionId in ("VirtualMachine.instantClone", "VirtualMachine.cloneVm") \
                    and str(info.state) == "success":
                out.append((info.descriptionId, info.entity.name, info.result.name))
        return out
    finally:
        connect.Disconnect(si)



def run_a_pod_that_needs_a_new_vm(sim: Vcsim, data: pathlib.Path) -> tuple[Cli, dict[str, Any]]:
    cli = cli_for(data)
    cli.run("up", "--detach", "--listen", f"127.0.0.1:{free_port()}",
            "--cluster-config", str(sim.config_path), timeout=300)
    # The class's warm parent first: a pod that came before it would get a full clone.
    cli.run("wait", "node", "small-parent", "--for", "condition=Ready", "--timeout", "180s", timeout=200)
    cli.run("apply", "-f", "-", stdin=POD)
    cli.run("wait", "pod", "web", "--for", "phase=Running", "--timeout", "180s", timeout=200)
    pod = cli.json("get", "pod", "web")
    vm: dict[str, Any] = cli.json("get", "vm", pod["spec"]["nodeName"])
    return cli, vm


def down_leaves_only_the_template(cli: Cli, sim: Vcsim, pod_node: str) -> None:
    cli.run("down", "--purge", timeout=180)
    assert inventory(sim) == ["cowpod-template"]
    assert sim.guest_containers() == []
    pods = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=cowpod.node={pod_node}"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert pods == []


def test_up_on_the_simulator_runs_a_pending_pod_on_an_instant_clone(
        vcsim: Vcsim, tmp_path: pathlib.Path) -> None:
    sim = vcsim
    cli = cli_for(tmp_path / "data")
    try:
        cli, vm = run_a_pod_that_needs_a_new_vm(sim, tmp_path / "data")
        assert vm["spec"]["parent"] == "small-parent"
        assert vm["status"]["cloneKind"] == "instant"
        assert ("VirtualMachine.instantClone", "small-parent", vm["metadata"]["name"]) in clone_tasks(sim)
        down_leaves_only_the_template(cli, sim, vm["metadata"]["name"])
    finally:
        cli.run("down", "--purge", check=False, timeout=180)


def test_up_without_InstantClone_Task_runs_the_pod_on_a_linked_clone_that_says_so(
        vcsim: Vcsim, tmp_path: pathlib.Path) -> None:
    sim = Vcsim.start(instant_clone=False)
    cli = cli_for(tmp_path / "data")
    try:
        cli, vm = run_a_pod_that_needs_a_new_vm(sim, tmp_path / "data")
        assert vm["spec"]["parent"] == "small-parent"
        tasks = clone_tasks(sim)
        assert ("VirtualMachine.cloneVm", "small-parent", vm["metadata"]["name"]) in tasks
        assert not [t for t in tasks if t[0] == "VirtualMachine.instantClone"]
        # Said once in the controller's log (the provider runs in the controller).
        log = (tmp_path / "data" / "logs" / "controller.log").read_text()
        assert len([ln for ln in log.splitlines() if "has no InstantClone_Task" in ln]) == 1, log
        down_leaves_only_the_template(cli, sim, vm["metadata"]["name"])
    finally:
        cli.run("down", "--purge", check=False, timeout=180)
        sim.stop()


@pytest.mark.parametrize(("key", "value", "line"), [
    ("datacenter", "DC9", "provider vsphere: provider.datacenter: no datacenter 'DC9' on 127.0.0.1"),
    ("server", "https://127.0.0.1:1/sdk",
     "provider vsphere: provider.server: cannot reach https://127.0.0.1:1/sdk"),
    ("folder", "elsewhere", "provider vsphere: provider.folder: no VM folder 'elsewhere'"),
])
def test_up_refuses_bad_settings_with_one_line(
        vcsim: Vcsim, tmp_path: pathlib.Path, key: str, value: str, line: str) -> None:
    config = yaml.safe_load(vcsim.config_path.read_text())
    config["provider"][key] = value
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(config))
    cli = cli_for(tmp_path / "data")
    proc = cli.run("up", "--detach", "--listen", f"127.0.0.1:{free_port()}", "--cluster-config", str(bad),
                   check=False, timeout=120)
    cli.run("down", "--purge", check=False, timeout=60)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if "WARNING" not in ln and ln.strip()]
    assert len(errors) == 1, proc.stderr
    assert line in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr

"""The reconciler's bookkeeping between passes, without a server: VMs just
asked for stay counted until the VM watch has caught up with them."""

from __future__ import annotations

from typing import Any

from controller.autoscaler.executor import Outcome
from controller.autoscaler.reconciler import Autoscaler, Options
from controller.autoscaler.testing import make_vm
from cowpod.clock import FakeClock
from cowpod.clusterconfig import ClusterConfig, VMClass
from cowpod.v1 import vm_pb2


class Stub:
    """Watch is looked up (the informers are built) but never called here."""

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kw: Any) -> Any:
            raise AssertionError(f"unexpected call {name}")

        return call


class Api:
    def __init__(self) -> None:
        self.pods = self.nodes = self.vms = self.events = self.leases = Stub()


CONFIG = ClusterConfig(vm_classes=(VMClass("small", 1000, 1 << 30),))


def made(name: str, rv: int) -> vm_pb2.VM:
    vm = make_vm(name).cls("small").clone_of("small-parent").phase("Pending").obj()
    vm.metadata.resource_version = rv
    return vm


def test_vms_just_made_count_until_the_watch_has_seen_their_revision() -> None:
    a = Autoscaler(Api(), CONFIG, clock=FakeClock(), options=Options(leader_elect=False))
    a._absorb(Outcome(created=[made("small-a", 10)]))
    a.vms.resource_version = 9
    assert [v.metadata.name for v in a.current_vms()] == ["small-a"]
    # The watch is past revision 10 and does not hold small-a: it is gone (deleted meanwhile).
    a.vms.resource_version = 10
    assert a.current_vms() == []


def test_the_watchs_copy_wins_over_the_overlay() -> None:
    a = Autoscaler(Api(), CONFIG, clock=FakeClock(), options=Options(leader_elect=False))
    a._absorb(Outcome(created=[made("small-a", 10)]))
    fresh = made("small-a", 12)
    fresh.status.phase = "Running"
    a.vms.cache[("", "small-a")] = fresh
    a.vms.resource_version = 9  # the overlay entry is still kept...
    assert [v.status.phase for v in a.current_vms()] == ["Running"]  # ...but the watch's copy is used


def test_a_failed_scale_up_backs_the_class_off() -> None:
    clock = FakeClock()
    a = Autoscaler(Api(), CONFIG, clock=clock, options=Options(leader_elect=False))
    a._absorb(Outcome(failed_classes=["small"]))
    assert a.memory.backoff_left("small", clock.now()) == CONFIG.cooldown_s

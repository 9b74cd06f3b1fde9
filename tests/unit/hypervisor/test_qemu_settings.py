"""The qemu provider's pure parts: settings, the QEMU command line, the preflight's one-line answers."""

from __future__ import annotations

import json
import pathlib

import pytest

from cowpod.clock import FakeClock
from cowpod.errors import FailedPrecondition, Invalid
from cowpod.tasks import TaskSupervisor
from hypervisor import registry
from hypervisor.provider import ProviderContext
from hypervisor.providers.qemu.machine import MachineSpec, argv, memory_problem
from hypervisor.providers.qemu.plugin import PLUGIN
from hypervisor.providers.qemu.settings import DEFAULT_IMAGE_DIR, ROOT, GuestImage, QemuSettings


def test_an_empty_section_means_the_defaults() -> None:
    assert registry.plugin("qemu") is PLUGIN
    assert PLUGIN.parse_settings({}, "provider") == QemuSettings()
    assert QemuSettings().image_dir == DEFAULT_IMAGE_DIR


def test_settings_are_read_with_field_paths() -> None:
    s = PLUGIN.parse_settings({"imageDir": "img", "accel": "tcg", "bootTimeoutSeconds": 30,
                               "extraArgs": "-cpu max"}, "provider")
    assert s.image_dir == ROOT / "img" and s.accel == "tcg" and s.boot_timeout_s == 30.0
    assert s.extra_args == ("-cpu", "max")
    with pytest.raises(Invalid, match=r"provider\.accel: must be one of auto, kvm, tcg"):
        PLUGIN.parse_settings({"accel": "xen"}, "provider")
    with pytest.raises(Invalid, match=r"provider\.bootTimeoutSeconds"):
        PLUGIN.parse_settings({"bootTimeoutSeconds": 0}, "provider")
    with pytest.raises(Invalid, match=r"provider\.imagedir: unknown setting"):
        PLUGIN.parse_settings({"imagedir": "x"}, "provider")


def spec(tmp_path: pathlib.Path, **kw: object) -> MachineSpec:
    base: dict[str, object] = dict(
        vm_dir=tmp_path / "vm", memory_mb=256, cpus=2, kernel=tmp_path / "vmlinuz", initrd=None,
        cmdline="console=ttyS0", ram_path=pathlib.Path("/dev/shm/x.ram"), ram_shared=True, host_port=40001,
    )
    base.update(kw)
    return MachineSpec(**base)  # type: ignore[arg-type]


def test_a_cold_boot_maps_its_own_ram_shared_and_a_clone_maps_the_snapshot_private(
        tmp_path: pathlib.Path) -> None:
    cold = " ".join(argv(spec(tmp_path), "qemu", 5, 6))
    assert "mem-path=/dev/shm/x.ram,share=on" in cold and "-incoming" not in cold
    assert "hostfwd=tcp:127.0.0.1:40001-:7071" in cold
    assert "socket,id=qmp,fd=5,server=on" in cold and "socket,id=cg,fd=6,server=on" in cold
    assert "name=org.cowpod.guest" in cold
    kid = argv(spec(tmp_path, ram_shared=False, incoming=True, disk=tmp_path / "d.qcow2"), "qemu", 5, 6)
    assert "mem-path=/dev/shm/x.ram,share=off" in " ".join(kid)
    assert kid[kid.index("-incoming") + 1] == "defer"
    assert any(a.startswith(f"file={tmp_path / 'd.qcow2'},") for a in kid)


def test_the_image_is_read_from_image_json(tmp_path: pathlib.Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"k")
    (tmp_path / "image.json").write_text(json.dumps({"kernel": "vmlinuz", "initrd": "initrd.img",
                                                     "cmdline": "x", "min_memory_mb": 512}))
    with pytest.raises(FileNotFoundError, match=r"initrd\.img"):
        GuestImage.load(tmp_path)
    (tmp_path / "initrd.img").write_bytes(b"i")
    img = GuestImage.load(tmp_path)
    assert (img.kernel, img.rootfs, img.cmdline, img.min_memory_mb) == (tmp_path / "vmlinuz", None, "x", 512)


def ctx(tmp_path: pathlib.Path) -> ProviderContext:
    return ProviderContext(data_dir=tmp_path, cluster_id="c", clock=FakeClock(), tasks=TaskSupervisor("t"))


async def test_the_preflight_names_what_is_missing_in_one_line(tmp_path: pathlib.Path) -> None:
    missing = r"^no-such-qemu not found: apt-get install qemu-system-x86$"
    with pytest.raises(FailedPrecondition, match=missing):
        await PLUGIN.check(QemuSettings(qemu="no-such-qemu"), ctx(tmp_path))
    with pytest.raises(FailedPrecondition, match=r"^qemu guest image: .*image\.json.*build-image\.sh\)$"):
        await PLUGIN.check(QemuSettings(image_dir=tmp_path / "none", qemu="true", qemu_img="true"),
                           ctx(tmp_path))


def test_not_enough_memory_is_one_line(tmp_path: pathlib.Path) -> None:
    assert memory_problem(tmp_path, 1) == ""
    msg = memory_problem(tmp_path, 1 << 30)
    assert msg.startswith(f"not enough memory for a {1 << 30} MiB guest: ") and "\n" not in msg

"""The qemu provider's settings (the cluster config's `provider:` section) and its guest image.

    provider:
      name: qemu
      imageDir: .build/qemu         # vmlinuz, initrd.img, rootfs.qcow2, image.json (deploy/qemu/)
      accel: auto                   # auto | kvm | tcg; auto probes KVM once and falls back to TCG
      qemu: qemu-system-x86_64
      qemuImg: qemu-img
      ramDir: /dev/shm              # RAM files: a tmpfs, so a snapshot costs no disk I/O
      machine: q35
      bootTimeoutSeconds: 300       # cold boot -> the guest's first "warm"
      startTimeoutSeconds: 60       # bootstrap sent -> the guest's "started"
      tcgCacheMb: 0                 # TCG's translated-code cache per VM (0 = QEMU's default, up to 1 GiB)
      extraArgs: ""                 # appended to every QEMU command line, e.g. "-cpu host"

An empty section gives these defaults, which is what `--provider qemu` means.
"""

from __future__ import annotations

import json
import pathlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cowpod.errors import Invalid
from hypervisor.settings import Fields

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEFAULT_IMAGE_DIR = ROOT / ".build" / "qemu"
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class GuestImage:
    """What `image.json` in an image directory says (written by deploy/qemu/build-image.sh)."""

    kernel: pathlib.Path
    initrd: pathlib.Path | None
    rootfs: pathlib.Path | None
    cmdline: str
    min_memory_mb: int

    @staticmethod
    def load(image_dir: pathlib.Path) -> GuestImage:
        """Raises FileNotFoundError / ValueError naming the file that is missing or wrong."""
        meta_path = image_dir / "image.json"
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError(f"{meta_path}: not a JSON object")

        def path(key: str) -> pathlib.Path | None:
            name = meta.get(key)
            if not name:
                return None
            p = image_dir / str(name)
            if not p.exists():
                raise FileNotFoundError(f"{p} (named by {meta_path}) is missing")
            return p

        kernel = path("kernel")
        if kernel is None:
            raise ValueError(f"{meta_path}: no kernel")
        return GuestImage(kernel=kernel, initrd=path("initrd"), rootfs=path("rootfs"),
                          cmdline=str(meta.get("cmdline", "console=ttyS0 panic=-1")),
                          min_memory_mb=int(meta.get("min_memory_mb", 128)))


@dataclass(frozen=True)
class QemuSettings:
    image_dir: pathlib.Path = DEFAULT_IMAGE_DIR
    accel: str = "auto"
    qemu: str = "qemu-system-x86_64"
    qemu_img: str = "qemu-img"
    ram_dir: pathlib.Path = pathlib.Path("/dev/shm")
    machine: str = "q35"
    boot_timeout_s: float = 300.0
    start_timeout_s: float = 60.0
    # TCG only: the translated-code cache (`-accel tcg,tb-size=`). It is private to each
    # process and grows with the code the guest runs (~700 MiB for a cold boot of the
    # Debian guest, ~120 MiB for a clone's start), so it bounds a clone's private memory.
    tcg_cache_mb: int = 0
    # Appended to every QEMU command line (e.g. "-cpu host").
    extra_args: tuple[str, ...] = ()


def _path(f: Fields, key: str, default: pathlib.Path) -> pathlib.Path:
    v = f.string(key)
    if not v:
        return default
    p = pathlib.Path(v).expanduser()
    return p if p.is_absolute() else ROOT / p


def parse_settings(raw: Mapping[str, Any], where: str) -> QemuSettings:
    f = Fields(raw, where)
    d = QemuSettings()
    accel = f.string("accel", d.accel)
    if accel not in ACCELS:
        raise Invalid(f.path("accel"), f"must be one of {', '.join(ACCELS)}, got {accel!r}")
    s = QemuSettings(
        image_dir=_path(f, "imageDir", d.image_dir),
        accel=accel,
        qemu=f.string("qemu", d.qemu),
        qemu_img=f.string("qemuImg", d.qemu_img),
        ram_dir=_path(f, "ramDir", d.ram_dir),
        machine=f.string("machine", d.machine),
        boot_timeout_s=float(f.integer("bootTimeoutSeconds", int(d.boot_timeout_s), minimum=1)),
        start_timeout_s=float(f.integer("startTimeoutSeconds", int(d.start_timeout_s), minimum=1)),
        tcg_cache_mb=f.integer("tcgCacheMb", d.tcg_cache_mb),
        extra_args=tuple(shlex.split(f.string("extraArgs"))),
    )
    f.done()
    return s

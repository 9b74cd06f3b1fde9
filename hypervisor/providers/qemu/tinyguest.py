"""A tiny busybox guest that speaks the guest channel protocol, for tests and the bench.

The real guest (deploy/qemu/, Debian + dockerd + the agent) takes minutes to
build and ~a minute to boot under TCG. This one is an initramfs of
busybox-static plus the cloud kernel's virtio modules; its /init does what the
real init does on the channel, in shell:

    guest -> host  {"event":"warm"}            every second until the host writes
    host -> guest  {"bootstrap":"<b64>","now":<epoch>}
    guest -> host  {"event":"started","node":"<node_name>","machine_id":"<id>"}

and afterwards answers every TCP connection on 0.0.0.0:7071 (the agent's port,
forwarded by the VM's user-mode NAT) with its node name, so a test can see
which VM is behind a forwarded port. So the provider's whole mechanism — cold
boot, snapshot, restore, instant clones with their own identity and NAT — is
tested in seconds.

    kernel = fetch_cloud_kernel(cache)          # apt-get download + dpkg-deb -x, cached
    build(cache / "tiny", kernel)     # -> an image dir: vmlinuz, initrd.img, rootfs.qcow2, image.json

The image dir has the real image's layout (deploy/qemu/build-image.sh), so the
provider boots it with no special case; its rootfs.qcow2 is blank (the guest
never mounts it) but makes the provider's disk handling — overlays, freezing
at the snapshot, streaming on snap free — run in every test.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tempfile

# What the tiny guest needs. busybox's insmod resolves no dependencies and the
# order between them changes between kernel builds (6.1.0-57's virtio needs
# virtio_ring, -53's the reverse), so /init loads them in passes until all are in.
MODULES = (
    "drivers/virtio/virtio.ko", "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko", "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko", "drivers/char/virtio_console.ko",
    "net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko",
)

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for pass in 1 2 3 4; do
  for m in MODULES; do [ -d /sys/module/${m%.ko} ] || insmod /lib/modules/$m 2>/dev/null; done
done
for m in MODULES; do [ -d /sys/module/${m%.ko} ] || echo "tiny: module $m did not load"; done
# No udev: find the port by its name in sysfs.
port=""
while [ -z "$port" ]; do
  for n in /sys/class/virtio-ports/*/name; do
    [ "$(cat "$n" 2>/dev/null)" = org.cowpod.guest ] && port=/dev/$(basename "$(dirname "$n")")
  done
  [ -z "$port" ] && sleep 0.1
done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
echo "tiny: warm on $port"
exec 3<>"$port"
(while :; do echo '{"event":"warm"}' >&3; sleep 1; done) &
warm=$!
# The agent's port answers with the current node name (re-read per connection).
echo "" > /tmp/node
(while :; do nc -l -p 7071 < /tmp/node >/dev/null 2>&1; done) &
# EOF while no host is connected (before the first connection, after a
# disconnect): wait for one. Every bootstrap line is a (new) identity: a clone
# of a VM that already had one takes the new one, as the real init does.
while :; do
  if ! read -r line <&3; then sleep 0.2; continue; fi
  case "$line" in *bootstrap*) ;; *) continue ;; esac
  [ -n "$warm" ] && kill $warm && warm=""
  b64=$(echo "$line" | sed -n 's/.*"bootstrap": *"\([^"]*\)".*/\1/p')
  doc=$(echo "$b64" | base64 -d)
  node=$(echo "$doc" | sed -n 's/.*"node_name": *"\([^"]*\)".*/\1/p')
  mid=$(echo "$doc" | sed -n 's/.*"machine_id": *"\([^"]*\)".*/\1/p')
  hostname "$node"
  echo "$node" > /tmp/node
  echo "tiny: started as $node"
  echo "{\"event\":\"started\",\"node\":\"$node\",\"machine_id\":\"$mid\"}" >&3
done
"""


def fetch_cloud_kernel(cache: pathlib.Path) -> pathlib.Path:
    """Unpack Debian's cloud kernel package under `cache` (once); returns the unpacked root.

    The host's own kernel is often unreadable and may lack virtio; the cloud
    kernel boots under TCG in seconds and carries virtio as modules."""
    root = cache / "cloud-kernel"
    if list(root.glob("boot/vmlinuz-*")):
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        meta = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"],
                              capture_output=True, text=True, check=True).stdout
        pkg = next(w.split(":")[-1].strip() for w in meta.splitlines() if "Depends:" in w)
        # The unsigned variant has the same kernel and modules, without a signature wrapper.
        subprocess.run(["apt-get", "download", pkg], cwd=tmp, check=True, capture_output=True)
        deb = next(pathlib.Path(tmp).glob("*.deb"))
        staging = pathlib.Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        staging.rename(root)
    return root


def build(out: pathlib.Path, kernel_root: pathlib.Path) -> pathlib.Path:
    """The image dir `out`, rebuilt when its inputs (this file's init, the modules, the kernel) changed."""
    vmlinuz, initrd, meta = out / "vmlinuz", out / "initrd.img", out / "image.json"
    kernel = next((kernel_root / "boot").glob("vmlinuz-*"))
    source = hashlib.sha256("\0".join([INIT, *MODULES, kernel.name]).encode()).hexdigest()[:16]
    if meta.exists() and json.loads(meta.read_text()).get("source_hash") == source:
        return out
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found: apt-get install busybox-static")
    out.mkdir(parents=True, exist_ok=True)
    moddir = next((kernel_root / "lib" / "modules").iterdir()) / "kernel"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        root = pathlib.Path(tmp) / "root"
        for d in ("bin", "dev", "proc", "sys", "tmp", "lib/modules"):
            (root / d).mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        names = []
        for rel in MODULES:
            shutil.copy2(moddir / rel, root / "lib" / "modules" / pathlib.Path(rel).name)
            names.append(pathlib.Path(rel).name)
        init = root / "init"
        init.write_text(INIT.replace("MODULES", " ".join(names)))
        init.chmod(0o755)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                              input="\n".join(files).encode(), capture_output=True, check=True).stdout
        tmp_initrd = pathlib.Path(tmp) / "initrd.img"
        tmp_initrd.write_bytes(gzip.compress(cpio, compresslevel=6))
        shutil.copy2(kernel, pathlib.Path(tmp) / "vmlinuz")
        os.replace(pathlib.Path(tmp) / "vmlinuz", vmlinuz)
        os.replace(tmp_initrd, initrd)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(out / "rootfs.qcow2"), "64M"], check=True)
    meta.write_text(json.dumps({
        "format": 1, "kernel": "vmlinuz", "initrd": "initrd.img", "rootfs": "rootfs.qcow2",
        "cmdline": "console=ttyS0 panic=-1 quiet", "channel": "org.cowpod.guest", "agent_port": 7071,
        "min_memory_mb": 128, "source_hash": source,
    }, indent=2) + "\n")
    return out

#!/usr/bin/env bash
# Build the qemu provider's guest: a kernel, an initramfs and one ext4 disk.
#
#   .build/qemu/vmlinuz       Debian's linux-image-cloud-amd64 kernel (unpacked, never installed)
#   .build/qemu/initrd.img    busybox + the virtio block modules; mounts /dev/vda, runs init=
#   .build/qemu/rootfs.qcow2  ext4 on the whole disk (no partition table): cowpod/vm:latest's
#                             Debian + venv, docker.io, the kernel's /lib/modules, and the pod
#                             images (cowpod/busybox, cowpod/pause) as docker-save tars that the
#                             guest init loads once at its first boot
#   .build/qemu/image.json    what the host side needs to boot it: file names, kernel cmdline,
#                             init path, sizes, the source hash
#
# Pods get their images with no registry because the guest init `docker load`s
# /var/lib/cowpod/images/*.tar before it reports warm, so a parent's snapshot,
# and every instant clone of it, already has them. For images of your own, run a
# registry on the host (Debian's docker-registry, listening on 127.0.0.1:5000)
# and reference them as 10.0.2.2:5000/name:tag: every guest reaches the host's
# loopback through its user-mode NAT at 10.0.2.2 (add it to dockerd's
# insecure-registries in deploy/qemu/daemon.json, or serve it with TLS).
#
# Idempotent: image.json records a hash of every input (the Docker images' ids,
# the kernel package, deploy/qemu/*) and nothing is rebuilt while it matches.
# Usually called as `deploy/build-images.sh qemu`, which builds the Docker
# images first. Run alone, it builds them through build-images.sh.
#
# Usage: deploy/qemu/build-image.sh [--force] [--quiet]
# Env: QEMU_KERNEL_PACKAGE (default: what linux-image-cloud-amd64 depends on),
#      QEMU_DISK_MB (the filesystem's size; default: contents + 2048 MiB free),
#      DOCKER (default docker), COWPOD_IMAGES_BUILT=1 (skip the Docker images).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/deploy/qemu
OUT=$ROOT/.build/qemu
DOCKER=${DOCKER:-docker}
FORCE=0
QUIET=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --quiet) QUIET=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument '$arg' (expected --force, --quiet)" >&2; exit 2 ;;
  esac
done

die() { echo "qemu-image: error: $*" >&2; exit 1; }
say() { [[ $QUIET == 1 ]] || echo "qemu-image: $*"; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

need qemu-img "apt-get install qemu-utils"
need mkfs.ext4 "apt-get install e2fsprogs"
need dpkg-deb "apt-get install dpkg"
need "$DOCKER" "install Docker (apt-get install docker.io) and start dockerd"
[[ $(id -u) == 0 ]] || die "run as root: the guest's files must keep their owners (root, _apt, ...)"

if [[ ${COWPOD_IMAGES_BUILT:-0} != 1 ]]; then
  args=(); [[ $QUIET == 1 ]] && args+=(--quiet)
  "$ROOT/deploy/build-images.sh" "${args[@]}" busybox pause vm
fi

mkdir -p "$OUT"
exec 8>"$OUT/.lock"
flock 8

# ---- the kernel: Debian's cloud flavour, unpacked once per package version ----
kernel_package() {
  if [[ -n ${QEMU_KERNEL_PACKAGE:-} ]]; then echo "$QEMU_KERNEL_PACKAGE"; return; fi
  local pkg
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
  [[ -n $pkg ]] || die "cannot resolve linux-image-cloud-amd64 (run apt-get update first)"
  echo "$pkg"
}
PKG=$(kernel_package)
KDIR=$OUT/kernel/$PKG
if [[ ! -d $KDIR/boot ]]; then
  say "downloading $PKG"
  tmp=$(mktemp -d "$OUT/kernel-dl.XXXXXX")
  # apt-get download as root warns that _apt cannot write here; harmless.
  (cd "$tmp" && apt-get download "$PKG" >/dev/null 2>&1) || { rm -rf "$tmp"; die "apt-get download $PKG failed"; }
  dpkg-deb -x "$tmp"/*.deb "$tmp/root"
  mkdir -p "$OUT/kernel"; rm -rf "$KDIR"; mv "$tmp/root" "$KDIR"; rm -rf "$tmp"
fi
KVER=$(basename "$(ls -d "$KDIR"/lib/modules/*)")

# ---- the source hash: every input ------------------------------------------
image_id() { "$DOCKER" image inspect -f '{{.Id}}' "$1" 2>/dev/null || die "image $1 missing (deploy/build-images.sh vm busybox pause)"; }
HASH=$( { image_id cowpod/vm-base:bookworm; image_id cowpod/vm:latest; image_id cowpod/busybox:latest
          image_id cowpod/pause:latest; echo "$PKG"; cat /bin/busybox
          (cd "$HERE" && find . -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); } | sha256sum | cut -c1-16)
if [[ $FORCE == 0 && -f $OUT/image.json && -f $OUT/rootfs.qcow2 && -f $OUT/vmlinuz && -f $OUT/initrd.img ]] \
   && grep -q "\"source_hash\": \"$HASH\"" "$OUT/image.json"; then
  echo "qemu-image: .build/qemu up to date ($HASH)"
  exit 0
fi
t0=$SECONDS

# ---- the guest's files: a Docker image, exported ---------------------------
CTX=$OUT/ctx
rm -rf "$CTX"; mkdir -p "$CTX"
cp "$HERE/guest.Dockerfile" "$HERE/cowpod-init" "$HERE/daemon.json" "$CTX/"
log=$OUT/docker-build.log
say "building cowpod/qemu-guest:latest (apt-get install docker.io: about a minute the first time)"
if ! "$DOCKER" build -f "$CTX/guest.Dockerfile" --label "cowpod.source-hash=$HASH" --label cowpod.managed=1 \
     -t cowpod/qemu-guest:latest "$CTX" >"$log" 2>&1; then
  tail -n 30 "$log" >&2; die "docker build failed (full log: $log)"
fi

ROOTFS=$OUT/rootfs
rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
cid=$("$DOCKER" create cowpod/qemu-guest:latest /sbin/cowpod-init)
trap '"$DOCKER" rm -f "$cid" >/dev/null 2>&1 || true' EXIT
"$DOCKER" export "$cid" | tar --numeric-owner -C "$ROOTFS" -x
"$DOCKER" rm -f "$cid" >/dev/null; trap - EXIT
# Docker's own files in every container; the guest is a machine, not a container.
rm -f "$ROOTFS/.dockerenv"
: >"$ROOTFS/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOTFS/etc/hosts"
printf 'nameserver 10.0.2.3\n' >"$ROOTFS/etc/resolv.conf"

# The kernel's modules (dockerd's overlay, bridge, veth, netfilter; virtio).
mkdir -p "$ROOTFS/lib/modules"
cp -a "$KDIR/lib/modules/$KVER" "$ROOTFS/lib/modules/"
# Hardware and filesystems a cowpod guest never has: a third of the modules' size.
rm -rf "$ROOTFS/lib/modules/$KVER/kernel/drivers/"{infiniband,gpu,media,md,target,comedi,net/ethernet/mellanox} \
  "$ROOTFS/lib/modules/$KVER/kernel/fs/"{xfs,btrfs,nfs,nfsd,smb,ceph,ocfs2,gfs2} \
  "$ROOTFS/lib/modules/$KVER/kernel/net/sunrpc"
chroot "$ROOTFS" /sbin/depmod -a "$KVER"

# The pod images, loaded by the guest init at its first boot.
"$DOCKER" save -o "$ROOTFS/var/lib/cowpod/images/pods.tar" cowpod/busybox:latest cowpod/pause:latest

# ---- the initramfs: busybox + the virtio block path ------------------------
IRD=$OUT/initramfs
rm -rf "$IRD"; mkdir -p "$IRD/bin" "$IRD/modules"
cp /bin/busybox "$IRD/bin/busybox"
install -m 0755 "$HERE/initramfs-init" "$IRD/init"
# virtio_blk and virtio_pci with what they depend on, in load order (modules.dep lists
# a module's dependencies nearest first, so reversed they load before it).
: >"$IRD/modules.order"
for m in kernel/drivers/virtio/virtio_pci.ko kernel/drivers/block/virtio_blk.ko; do
  deps=$(sed -n "s|^$m: *||p" "$ROOTFS/lib/modules/$KVER/modules.dep")
  for d in $(echo "$deps" | tr ' ' '\n' | tac) "$m"; do
    n=$(basename "$d")
    grep -qx "$n" "$IRD/modules.order" && continue
    cp "$ROOTFS/lib/modules/$KVER/$d" "$IRD/modules/$n"
    echo "$n" >>"$IRD/modules.order"
  done
done
(cd "$IRD" && find . -mindepth 1 | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9) >"$OUT/initrd.img.tmp"

# ---- the disk: ext4 made from the directory (no mounts), as qcow2 ----------
used_mb=$(du -sm "$ROOTFS" | cut -f1)
disk_mb=${QEMU_DISK_MB:-$((used_mb + 2048))}
say "making a ${disk_mb} MiB ext4 disk from $used_mb MiB of files"
rm -f "$OUT/rootfs.raw"
# No lazy init: the guest must not zero inode tables in the background (CPU under
# TCG, and writes that would grow every clone's overlay).
mkfs.ext4 -q -F -L cowpod-root -d "$ROOTFS" -E lazy_itable_init=0,lazy_journal_init=0 \
  "$OUT/rootfs.raw" "${disk_mb}M" >"$OUT/mkfs.log" 2>&1 || { cat "$OUT/mkfs.log" >&2; die "mkfs.ext4 failed"; }
qemu-img convert -f raw -O qcow2 "$OUT/rootfs.raw" "$OUT/rootfs.qcow2.tmp"
rm -f "$OUT/rootfs.raw"

cp "$KDIR/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/rootfs.qcow2.tmp" "$OUT/rootfs.qcow2"
rm -rf "$ROOTFS" "$IRD" "$CTX"

qcow_bytes=$(stat -c %s "$OUT/rootfs.qcow2")
cat >"$OUT/image.json" <<JSON
{
  "format": 1,
  "source_hash": "$HASH",
  "kernel_package": "$PKG",
  "kernel_version": "$KVER",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "rootfs": "rootfs.qcow2",
  "rootfs_format": "qcow2",
  "rootfs_virtual_bytes": $((disk_mb * 1024 * 1024)),
  "rootfs_file_bytes": $qcow_bytes,
  "rootfs_used_bytes": $((used_mb * 1024 * 1024)),
  "cmdline": "console=ttyS0 root=/dev/vda rootfstype=ext4 rw init=/sbin/cowpod-init panic=-1 loglevel=4",
  "init": "/sbin/cowpod-init",
  "channel": "org.cowpod.guest",
  "guest_ip": "10.0.2.15",
  "agent_port": 7071,
  "min_memory_mb": 512
}
JSON
echo "qemu-image: built .build/qemu ($HASH) in $((SECONDS - t0))s: rootfs.qcow2 $((qcow_bytes / 1048576)) MiB, ${disk_mb} MiB virtual"

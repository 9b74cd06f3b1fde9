#!/usr/bin/env bash
# Make this machine ready for cowpod: Debian packages, a running Docker engine,
# the Python venv at .venv, and the local images. Idempotent: a second run only
# checks. Fails loudly, naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages --------------------------------------------------------
pkgs=()
command -v dockerd >/dev/null || pkgs+=(docker.io)
command -v etcd >/dev/null || pkgs+=(etcd-server)
command -v etcdctl >/dev/null || pkgs+=(etcd-client)
[ -x /bin/busybox ] || pkgs+=(busybox-static)
command -v debootstrap >/dev/null || pkgs+=(debootstrap)
command -v ip >/dev/null || pkgs+=(iproute2)
# The qemu provider: QEMU, qcow2 tools, the guest disk's filesystem, the tiny test guest's initramfs.
command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
command -v qemu-img >/dev/null || pkgs+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || pkgs+=(e2fsprogs)
command -v cpio >/dev/null || pkgs+=(cpio)
# The vsphere provider's tests and deploy/vcsim: VMware's simulator, built from Debian's govmomi.
command -v go >/dev/null || pkgs+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] || pkgs+=(golang-github-vmware-govmomi-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
if [ ${#pkgs[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${pkgs[*]} and no apt-get to install them"
  say "installing Debian packages: ${pkgs[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
for b in dockerd docker etcd debootstrap qemu-system-x86_64 qemu-img mkfs.ext4 cpio go; do
  command -v "$b" >/dev/null || die "$b is still missing after installing packages"
done
[ -x /bin/busybox ] || die "/bin/busybox is missing (package busybox-static)"
[ -d /usr/share/gocode/src/github.com/vmware/govmomi/simulator ] \
  || die "govmomi's simulator source is missing (package golang-github-vmware-govmomi-dev)"

# --- Docker engine ----------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  say "starting dockerd (log: /var/log/cowpod-dockerd.log)"
  as_root sh -c 'setsid nohup dockerd >/var/log/cowpod-dockerd.log 2>&1 < /dev/null &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60s; see /var/log/cowpod-dockerd.log"
fi

# --- Python venv ------------------------------------------------------------
# Exactly the versions and bytes in requirements/dev.txt (made by scripts/lock.sh;
# pip itself is pinned there too), then cowpod on top without resolving anything,
# so this installs the same thing on any day. A new lock means a new stamp.
lock=requirements/dev.txt
stamp=.venv/.installed-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  say "installing Python dependencies into .venv from $lock"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  pip=(.venv/bin/pip --disable-pip-version-check)
  log=$(mktemp)
  if ! { "${pip[@]}" install -q --require-hashes -r "$lock" \
         && "${pip[@]}" install -q --no-deps --no-build-isolation -e .; } >"$log" 2>&1; then
    grep -v '^WARNING: Location' "$log" >&2 || true
    rm -f "$log"
    die "pip could not install $lock (run scripts/lock.sh if pyproject.toml changed)"
  fi
  grep -v '^WARNING: Location' "$log" || true
  rm -f "$log"
  .venv/bin/python -c 'import cowpod.client, grpc, aetcd, docker' || die "Python dependencies did not install"
  rm -f .venv/.installed-* && touch "$stamp"
fi

# --- Images -----------------------------------------------------------------
if [ -x deploy/build-images.sh ]; then
  say "building local images (cached after the first run)"
  deploy/build-images.sh
fi

#!/usr/bin/env bash
# Build cowpod's local images with the local Docker engine. No registry is
# needed: every byte comes from this machine, Debian's archive or PyPI.
#
#   cowpod/busybox:latest    FROM scratch + /bin/busybox (busybox-static) + applet symlinks
#   cowpod/pause:latest      FROM scratch + busybox; sleeps until SIGTERM (pod infra container)
#   cowpod/vm-base:bookworm  debootstrap minbase + python3, python3-venv, ca-certificates, iproute2
#   cowpod/vm:latest         vm-base + /opt/cowpod/venv (deps layer, then cowpod source layer)
#   qemu                     .build/qemu/: the qemu provider's kernel, initrd and disk built from
#                            the images above (deploy/qemu/build-image.sh); a default target only
#                            where qemu-system-x86_64 is installed
#
# Idempotent and fast when nothing changed: each image carries a label
# `cowpod.source-hash` of its inputs and is rebuilt only when that hash
# differs. The vm-base image is built once (delete it to rebuild). The Python
# deps are exactly requirements/runtime.txt (the lock scripts/lock.sh makes),
# downloaded as hash-checked cp311 manylinux wheels into .build/wheels only when
# that lock changed.
#
# Usage: deploy/build-images.sh [--force] [--quiet] [busybox|pause|vm|qemu ...]
#   --force   rebuild even when the hashes match (vm-base too)
#   --quiet   print only errors and one summary line per image
# Env: PYTHON (host python with pip; default .venv/bin/python, then python3),
#      DEBIAN_MIRROR (default http://deb.debian.org/debian), DOCKER (default docker).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/.build
DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
FORCE=0
QUIET=0
TARGETS=()
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --quiet) QUIET=1 ;;
    busybox|pause|vm|qemu) TARGETS+=("$arg") ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "build-images: unknown argument '$arg' (expected --force, --quiet, busybox, pause, vm, qemu)" >&2; exit 2 ;;
  esac
done
if [[ ${#TARGETS[@]} == 0 ]]; then
  TARGETS=(busybox pause vm)
  command -v qemu-system-x86_64 >/dev/null 2>&1 && TARGETS+=(qemu)
fi

die() { echo "build-images: error: $*" >&2; exit 1; }
say() { [[ $QUIET == 1 ]] || echo "build-images: $*"; }
summary() { echo "build-images: $*"; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

need "$DOCKER" "install Docker (apt-get install docker.io) and start dockerd"
"$DOCKER" info >/dev/null 2>&1 || die "cannot reach the Docker engine with '$DOCKER info' (is dockerd running? are you root or in group docker?)"

# Build output of `docker build`: shown unless --quiet, and shown anyway on failure.
docker_build() {
  local log
  log=$(mktemp)
  if ! "$DOCKER" build "$@" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; return 1
  fi
  [[ $QUIET == 1 ]] || cat "$log"
  rm -f "$log"
}

image_label() {  # image label -> value or empty
  "$DOCKER" image inspect -f "{{index .Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

up_to_date() {  # image hash
  [[ $FORCE == 0 && "$(image_label "$1" cowpod.source-hash)" == "$2" ]]
}

hash_files() {  # paths... -> sha256 over names and contents
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -path '*/.mypy_cache/*' ! -path '*/.ruff_cache/*' \
      ! -name '*.pyc' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

busybox_bin() {
  local bb=/bin/busybox
  [[ -x $bb ]] || bb=$(command -v busybox || true)
  [[ -n $bb && -x $bb ]] || die "busybox not found: apt-get install busybox-static"
  file_is_static "$bb" || die "$bb is not statically linked: apt-get install busybox-static"
  echo "$bb"
}

file_is_static() {
  # ldd (libc-bin) answers "not a dynamic executable" for a static binary.
  ! ldd "$1" >/dev/null 2>&1
}

# A rootfs with busybox and its applets as symlinks, plus the minimum a
# program expects (/tmp, /etc/passwd, /etc/group).
busybox_rootfs() {  # dir
  local dir=$1 bb
  bb=$(busybox_bin)
  rm -rf "$dir"; mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/root" "$dir/var/www"
  chmod 1777 "$dir/tmp"
  cp "$bb" "$dir/bin/busybox"
  local applet
  for applet in $("$bb" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$dir/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

build_busybox() {
  local ctx=$BUILD/images/busybox hash
  hash=$(cat "$(busybox_bin)" "$0" | sha256sum | cut -c1-16)
  if up_to_date cowpod/busybox:latest "$hash"; then summary "cowpod/busybox:latest up to date ($hash)"; return; fi
  busybox_rootfs "$ctx/rootfs"
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["sh"]\n' >"$ctx/Dockerfile"
  docker_build --label "cowpod.source-hash=$hash" --label cowpod.managed=1 -t cowpod/busybox:latest "$ctx"
  summary "built cowpod/busybox:latest ($hash)"
}

build_pause() {
  local ctx=$BUILD/images/pause hash
  hash=$(cat "$(busybox_bin)" "$0" "$ROOT/deploy/images/pause.sh" | sha256sum | cut -c1-16)
  if up_to_date cowpod/pause:latest "$hash"; then summary "cowpod/pause:latest up to date ($hash)"; return; fi
  rm -rf "$ctx"; mkdir -p "$ctx/rootfs/bin"
  cp "$(busybox_bin)" "$ctx/rootfs/bin/busybox"
  install -m 0755 "$ROOT/deploy/images/pause.sh" "$ctx/rootfs/pause"
  printf 'FROM scratch\nCOPY rootfs/ /\nSTOPSIGNAL SIGTERM\nENTRYPOINT ["/bin/busybox", "sh", "/pause"]\n' >"$ctx/Dockerfile"
  docker_build --label "cowpod.source-hash=$hash" --label cowpod.managed=1 -t cowpod/pause:latest "$ctx"
  summary "built cowpod/pause:latest ($hash)"
}

build_vm_base() {
  if [[ $FORCE == 0 ]] && "$DOCKER" image inspect cowpod/vm-base:bookworm >/dev/null 2>&1; then
    say "cowpod/vm-base:bookworm present (delete it or pass --force to rebuild)"; return
  fi
  need debootstrap "apt-get install debootstrap"
  [[ $(id -u) == 0 ]] || die "debootstrap needs root to build cowpod/vm-base:bookworm"
  local dir=$BUILD/vm-rootfs t0=$SECONDS
  rm -rf "$dir"; mkdir -p "$dir"
  say "debootstrap bookworm minbase into $dir (from $MIRROR; about a minute)"
  local log=$BUILD/debootstrap.log
  if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,iproute2 \
      bookworm "$dir" "$MIRROR" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "debootstrap failed (full log: $log; is $MIRROR reachable?)"
  fi
  # What a container image does not need: package caches and docs.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
  : >"$dir/etc/machine-id"
  tar --numeric-owner -C "$dir" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'LABEL cowpod.managed=1' \
    - cowpod/vm-base:bookworm >/dev/null
  rm -rf "$dir"
  summary "built cowpod/vm-base:bookworm in $((SECONDS - t0))s"
}

# The locked runtime set (requirements/runtime.txt: dependencies and build
# requirements, not the dev tools), as cp311 manylinux wheels checked against the
# lock's hashes, downloaded again only when the lock (or this script) changed.
# The image installs from the same file, so pip checks the hashes there too.
fetch_wheels() {
  local dir=$BUILD/wheels lock=$ROOT/requirements/runtime.txt hash
  [[ -f $lock ]] || die "$lock is missing (scripts/lock.sh makes it)"
  hash=$(cat "$lock" "$0" | sha256sum | cut -c1-16)
  if [[ -f $dir/.hash && "$(cat "$dir/.hash")" == "$hash" ]]; then
    say "wheels up to date ($hash)"; return
  fi
  say "downloading cp311 manylinux wheels into $dir"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$lock" "$dir/requirements.txt"
  local plat=()
  for p in manylinux_2_36_x86_64 manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux_2_5_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
  done
  if ! "$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: --require-hashes --no-deps \
      "${plat[@]}" --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
      -d "$dir" -r "$dir/requirements.txt" >"$BUILD/pip-download.log" 2>&1; then
    cat "$BUILD/pip-download.log" >&2
    die "pip download failed (is PyPI reachable? does every dependency ship a cp311 manylinux wheel?)"
  fi
  echo "$hash" >"$dir/.hash"
}

# The cowpod source that goes into the VM: the packages and pyproject.
SRC_PATHS=(pyproject.toml cowpod controller scheduler agent hypervisor)

build_vm() {
  build_vm_base
  fetch_wheels
  local ctx=$BUILD/images/vm hash
  hash=$( { hash_files "${SRC_PATHS[@]}"; cat "$BUILD/wheels/.hash" "$0" "$ROOT/deploy/images/vm.Dockerfile";
            "$DOCKER" image inspect -f '{{.Id}}' cowpod/vm-base:bookworm; } | sha256sum | cut -c1-16)
  if up_to_date cowpod/vm:latest "$hash"; then summary "cowpod/vm:latest up to date ($hash)"; return; fi
  local t0=$SECONDS
  rm -rf "$ctx/src"; mkdir -p "$ctx/src"
  # Wheels are hard-linked (or copied) so the deps layer's cache key is their content.
  rm -rf "$ctx/wheels"; cp -al "$BUILD/wheels" "$ctx/wheels" 2>/dev/null || cp -a "$BUILD/wheels" "$ctx/wheels"
  (cd "$ROOT" && tar -c --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude='*.pyc' \
    "${SRC_PATHS[@]}") | tar -C "$ctx/src" -x
  [[ -f $ROOT/README.md ]] && cp "$ROOT/README.md" "$ctx/src/" || echo "# cowpod" >"$ctx/src/README.md"
  cp "$ROOT/deploy/images/vm.Dockerfile" "$ctx/Dockerfile"
  # cowpod.internal: a VM disk, which the agent never runs as a pod (cowpod/images.py).
  docker_build --label "cowpod.source-hash=$hash" --label cowpod.managed=1 --label cowpod.internal=vm \
    -t cowpod/vm:latest "$ctx"
  summary "built cowpod/vm:latest ($hash) in $((SECONDS - t0))s"
}

# The qemu guest is made from the images above (built first unless this run
# already builds them); its script holds the details.
build_qemu() {
  local dep
  for dep in busybox pause vm; do
    [[ " ${TARGETS[*]} " == *" $dep "* ]] || "build_$dep"
  done
  local flags=()
  [[ $FORCE == 1 ]] && flags+=(--force)
  [[ $QUIET == 1 ]] && flags+=(--quiet)
  COWPOD_IMAGES_BUILT=1 DOCKER=$DOCKER "$ROOT/deploy/qemu/build-image.sh" "${flags[@]}"
}

mkdir -p "$BUILD"
# One build at a time on this work tree (parallel test sessions call this too).
exec 9>"$BUILD/.lock"
flock 9
for t in "${TARGETS[@]}"; do
  "build_$t"
done
# Earlier builds that a rebuild left untagged and that no container uses.
"$DOCKER" image prune -f --filter label=cowpod.source-hash >/dev/null

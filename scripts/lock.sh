#!/usr/bin/env bash
# Refresh the Python lock on purpose, then run the whole suite against it.
#
#   scripts/lock.sh               re-lock after editing pyproject.toml; every other pin stays
#   scripts/lock.sh --upgrade     take the newest versions pyproject.toml allows (uv too, next run)
#   scripts/lock.sh --no-test     only write the lock files
#   scripts/lock.sh [...] -- ARGS pass ARGS to scripts/test.sh
#
# Nothing else ever resolves versions: bootstrap, the VM image build and CI only
# install what these files say, so a fresh clone installs the same bytes next
# month as today. Writes, with exact versions and sha256 hashes, resolved by uv
# for CPython 3.11 on x86_64 Linux (scripts/lockinputs.py says why):
#   requirements/runtime.txt  dependencies + build-system requires (the VM image)
#   requirements/dev.txt      the same pins + the dev extra + pip (bootstrap, CI)
# Each carries `# input-hash:` of its pyproject.toml inputs; a unit test fails
# when pyproject.toml has moved on without a re-lock. uv itself is pinned with
# hashes in requirements/uv.txt and installed into .build/lock-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'lock: %s\n' "$*" >&2; exit 1; }
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

upgrade=()
run_tests=1
while [ $# -gt 0 ]; do
  case $1 in
    --upgrade|-U) upgrade=(--upgrade); shift ;;
    --no-test) run_tests=0; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (expected --upgrade, --no-test, -- pytest args)" ;;
  esac
done

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null || die "$PY is not Python >= 3.11"
read -r py_version py_platform < <("$PY" scripts/lockinputs.py target)

# --- uv, from its own hashed pin --------------------------------------------
venv=.build/lock-venv
stamp=$venv/.uv-$(sha256sum requirements/uv.txt | cut -c1-16)
if [ ! -f "$stamp" ]; then
  say "installing the locking tool (requirements/uv.txt) into $venv"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps \
    -r requirements/uv.txt 2>&1 | grep -v '^WARNING: Location' || true
  [ -x "$venv/bin/uv" ] || die "uv did not install from requirements/uv.txt"
  touch "$stamp"
fi
uv=$venv/bin/uv

# --- the lock ---------------------------------------------------------------
work=.build/lock
rm -rf "$work"
mkdir -p "$work"
"$PY" scripts/lockinputs.py build-requires >"$work/build-system-requires.in"
"$PY" scripts/lockinputs.py bootstrap-tools >"$work/bootstrap-tools.in"
input_hash=$("$PY" scripts/lockinputs.py hash)
uv_version=$("$uv" --version | awk '{print $2}')

# compile LOCK UV-ARGS...: resolve into LOCK, starting from its current pins
# unless --upgrade, and give it the header the test and bootstrap rely on.
compile() {
  local lock=$1 out
  shift
  out=$work/$(basename "$lock")
  [ -f "$lock" ] && cp "$lock" "$out"
  "$uv" pip compile --quiet --no-config --generate-hashes --no-header --annotation-style line \
    --python-version "$py_version" --python-platform "$py_platform" \
    ${upgrade[@]+"${upgrade[@]}"} -o "$out" "$@" || die "uv could not resolve $lock"
  {
    echo "# Locked by scripts/lock.sh (uv $uv_version) for CPython $py_version, $py_platform. Do not edit:"
    echo "# change pyproject.toml and run scripts/lock.sh (or scripts/lock.sh --upgrade)."
    echo "# input-hash: $input_hash"
    cat "$out"
  } >"$lock"
}

say "locking requirements/dev.txt ${upgrade[*]}"
compile requirements/dev.txt pyproject.toml --extra dev \
  "$work/build-system-requires.in" "$work/bootstrap-tools.in"
# The runtime set is resolved under the dev lock's pins, so the VM image and the
# developers' venv run the same versions of everything they share.
"$PY" scripts/lockinputs.py pins requirements/dev.txt >"$work/dev-pins.txt"
say "locking requirements/runtime.txt"
compile requirements/runtime.txt pyproject.toml "$work/build-system-requires.in" -c "$work/dev-pins.txt"

if [ ${#upgrade[@]} -gt 0 ]; then
  say "locking requirements/uv.txt (used from the next run on)"
  echo uv >"$work/uv.in"
  cp requirements/uv.txt "$work/uv.txt"
  "$uv" pip compile --quiet --no-config --generate-hashes --no-header --annotation-style line \
    --python-version "$py_version" --python-platform "$py_platform" --upgrade \
    -o "$work/uv.txt" "$work/uv.in" || die "uv could not resolve uv"
  { echo "# The locking tool, pinned with hashes; scripts/lock.sh --upgrade refreshes it."; cat "$work/uv.txt"; } \
    >requirements/uv.txt
fi

git diff --stat -- requirements/ 2>/dev/null || true
if [ "$run_tests" = 1 ]; then
  say "running the suite against the new lock"
  exec scripts/test.sh "$@"
fi

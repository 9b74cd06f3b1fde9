#!/usr/bin/env bash
# The whole test suite on a fresh machine: bootstrap, static checks, then
# unit, integration (real etcd), e2e and fault tests (real etcd + Docker).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not e2e" -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> ruff"
ruff check .
echo "==> mypy"
mypy
echo "==> pytest"
set +e
pytest -p no:cacheprovider --durations=30 "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"

#!/usr/bin/env bash
# Command one: from a fresh Debian machine to a pod running on a local cowpod
# cluster. Installs what is missing, builds the local images, starts the
# embedded cluster in the background (etcd, controller, scheduler, one VM),
# runs examples/hello.yaml and shows its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
cowpod=.venv/bin/cowpod

echo "==> starting the local cluster (data in ${COWPOD_DATA_DIR:-$HOME/.cowpod})"
$cowpod up --detach --vms "${COWPOD_VMS:-1}"
echo "==> running examples/hello.yaml"
$cowpod delete pod hello --wait --grace-period 0 >/dev/null 2>&1 || true
$cowpod apply -f examples/hello.yaml
$cowpod wait pod hello --for phase=Succeeded --timeout 180
$cowpod get pods -o wide
echo "==> logs of pod hello"
$cowpod logs hello
cat <<'NEXT'

Your cluster is up. Next:
  source .venv/bin/activate
  cowpod get nodes -o wide          # the VMs' nodes and their capacity
  cowpod apply -f examples/web.yaml # a long-running pod
  cowpod describe pod web           # where it runs, and why
  cowpod get vms -o wide            # VMs and their lineage
  cowpod status                     # every component, pid, address and health
  cowpod down                       # stop everything (--purge also deletes the data)
NEXT

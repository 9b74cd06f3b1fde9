#!/usr/bin/env bash
# Start VMware's vSphere simulator (vcsim, with InstantClone_Task added; see
# main.go) for cowpod, and print as the LAST line the path of a cluster config
# that `cowpod up -d --cluster-config PATH` takes.
#
#   deploy/vcsim/start.sh [--no-instant-clone] [--port N] [--dir DIR] [--image IMAGE]
#                         [--no-guest] [--username U --password-file F]
#   deploy/vcsim/start.sh --stop [--port N] [--dir DIR]
#
# The simulator listens on 127.0.0.1:PORT (default 8989) with a self-signed
# certificate. Its template VM `cowpod-template` (folder DC0/vm/cowpod) runs
# IMAGE (default cowpod/vm:latest) as its guest container, on the host
# network, with the Docker socket mounted: VMs cloned from it run cowpod's VM
# init and agent (--no-guest: no guest at all, the API alone, for benches). By default any user name and password log in (as vcsim);
# --username/--password-file make it accept only that pair.
#
# State (pid, log, password, cluster config) lives in DIR (default
# ${TMPDIR:-/tmp}/cowpod-vcsim-PORT). `--stop` stops the simulator, which
# removes its guest containers and their pods; it then sweeps any left by a
# simulator that died (label cowpod.vcsim=<DIR's instance id>).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port=8989
dir=""
stop=0
no_guest=0
image="cowpod/vm:latest"
busybox="cowpod/busybox:latest"
extra=()
username=""
password_file=""

while [ $# -gt 0 ]; do
    case "$1" in
        --no-instant-clone) extra+=(--no-instant-clone) ;;
        --no-guest) no_guest=1 ;;
        --port) port="$2"; shift ;;
        --dir) dir="$2"; shift ;;
        --image) image="$2"; shift ;;
        --username) username="$2"; shift ;;
        --password-file) password_file="$2"; shift ;;
        --stop) stop=1 ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "start.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
dir="${dir:-${TMPDIR:-/tmp}/cowpod-vcsim-$port}"

sweep() {
    # Guest containers of this instance (and their DMI volumes, named alike),
    # then the pods their agents started.
    local instance="$1" names
    names=$(docker ps -a --filter "label=cowpod.vcsim=$instance" --format '{{.Names}}' || true)
    for n in $names; do
        docker rm -f -v "$n" >/dev/null 2>&1 || true
        docker volume rm -f "$n" >/dev/null 2>&1 || true
    done
}

# True when pid file $1 names a running simulator (not a recycled pid).
running() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q cowpod-vcsim
}

if [ "$stop" = 1 ]; then
    if running "$dir/pid"; then
        pid=$(cat "$dir/pid")
        kill -TERM "$pid"
        # The simulator removes its containers before it exits.
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    [ -f "$dir/instance" ] && sweep "$(cat "$dir/instance")"
    rm -rf "$dir"
    exit 0
fi

# Build once (about 12-25 s), again only when main.go changes.
bin="$here/.build/cowpod-vcsim"
if [ ! -x "$bin" ] || [ "$here/main.go" -nt "$bin" ]; then
    if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/vmware/govmomi ]; then
        echo "start.sh: needs Go and govmomi: apt-get install golang-go golang-github-vmware-govmomi-dev" >&2
        exit 1
    fi
    mkdir -p "$here/.build"
    (cd "$here" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$here/.build/gocache" \
        GOFLAGS= go build -o "$bin.tmp" . && mv "$bin.tmp" "$bin")
fi

if running "$dir/pid"; then
    echo "start.sh: a simulator already runs from $dir (pid $(cat "$dir/pid")); stop it with: $0 --stop --dir $dir" >&2
    exit 1
fi
rm -rf "$dir"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
instance="$(basename "$dir")-$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$instance" > "$dir/instance"

if [ -z "$username" ]; then
    username="cowpod"
    password_file="$dir/password"
    (umask 077 && : > "$password_file")
    head -c12 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$password_file"
    auth=()
else
    auth=(--username "$username" --password-file "$password_file")
fi

# The guest: the VM image's init reads its identity from VMX_GUESTINFO_* (vcsim
# turns guestinfo.* extraConfig into env). vcsim joins these words with spaces
# and runs them with sh -c, after its own `docker run -d --name vcsim-<vm>-<uuid>
# --env ... -v <dmi volume>:/sys/class/dmi/id:ro`; /sys/class is a tmpfs so that
# mount has a place to land on hosts without DMI.
run_json=""
[ "$no_guest" = 1 ] || run_json=$(printf '["--network","host","--tmpfs","/sys/class","-v","/var/run/docker.sock:/var/run/docker.sock","--label","cowpod.vcsim=%s","%s","/opt/cowpod/venv/bin/python","-m","hypervisor.providers.vsphere.guestinit"]' "$instance" "$image")

# TMPDIR: the simulated datastore's files go in the state dir, which --stop
# removes even after a simulator that was killed.
TMPDIR="$dir" VCSIM_BUSYBOX="$busybox" nohup "$bin" --port "$port" --instance "$instance" --ready "$dir/url" \
    --template cowpod-template --folder cowpod --template-run "$run_json" \
    ${extra[@]+"${extra[@]}"} ${auth[@]+"${auth[@]}"} >"$dir/vcsim.log" 2>&1 &
echo $! > "$dir/pid"

for _ in $(seq 1 600); do
    [ -s "$dir/url" ] && break
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "start.sh: the simulator exited; its log ($dir/vcsim.log):" >&2
        tail -20 "$dir/vcsim.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ ! -s "$dir/url" ]; then
    echo "start.sh: the simulator did not come up in 60 s; see $dir/vcsim.log" >&2
    exit 1
fi
url=$(cat "$dir/url")

cat > "$dir/cluster.yaml" <<YAML
# Made by deploy/vcsim/start.sh: the vsphere provider pointed at the simulator
# at $url. Stop it with: $0 --stop --dir $dir
vmClasses:
- name: small
  cpu: 1
  memory: 1Gi
  labels: {tier: small}
  min: 0
  max: 4
  parent: true
  image: cowpod-template      # for vsphere: the template VM's name
maxVMs: 6
scaleDownUnneeded: 10m
instantClones: true
provider:
  name: vsphere
  server: $url
  username: $username
  passwordFile: $password_file
  insecure: true              # vcsim's certificate is self-signed
  datacenter: DC0
  cluster: DC0_C0
  folder: cowpod
  datastore: LocalDS_0
  network: VM Network
  # vcsim's guests are containers on this host's network: each VM's agent gets
  # its own loopback port, and the controller is reached on 127.0.0.1.
  guestNetwork: host
YAML
echo "vcsim: $url (pid $(cat "$dir/pid"), log $dir/vcsim.log; stop: $0 --stop --dir $dir)" >&2
echo "$dir/cluster.yaml"

"""Giving a warm shell its identity: what a VM started with its name would have had.

A warm shell is a child container created ahead from its parent's snapshot,
before anyone knew the child's name (docker_provider.py). Taking it means
writing the identity the init would otherwise have written at boot:

- the parent's per-VM state wiped (its agent's state, its name, its identity file);
- /etc/machine-id, fresh;
- /var/lib/cowpod/vm-name (so a later clone of this VM sees a disk from another VM);
- /var/lib/cowpod/identity.json: name, agent argv and env, read by the init
  only if the agent must start cold (SIGUSR1; hypervisor/vminit.py);
- the hostname, in the container's uts namespace (sethostname by a process
  that joined it);
- the engine's /etc/hostname and /etc/hosts files of the container (host files
  Docker bind-mounts; written on the host side).

The in-container writes run as `nsenter --target <init pid> --mount --uts`
with the container's own /bin/sh: inside the container's mount namespace the
root is the container's, so a symlink planted in the parent's disk resolves
inside the container and can never point at a host file (writing through
/proc/<pid>/root from the host would follow absolute symlinks on the host).

Docker labels cannot change after create, so the provider remembers what the
labels would have said in a host-side record, `<data_dir>/vms/<container id>.json`
(`IdentityRecord`), read by list()/get().
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from cowpod.errors import FailedPrecondition

# $1 machine id, $2 vm name, stdin the identity JSON. The parent's per-VM state
# (vminit.PER_VM_STATE) goes first: the shell's init left the disk as it was.
_SCRIPT = (
    "set -e; umask 022; rm -rf /var/lib/cowpod/agent /var/lib/cowpod/vm-name /var/lib/cowpod/identity.json; "
    "printf '%s\\n' \"$1\" > /etc/machine-id; mkdir -p /var/lib/cowpod; "
    "printf '%s\\n' \"$2\" > /var/lib/cowpod/vm-name; cat > /var/lib/cowpod/identity.json; hostname \"$2\""
)


@dataclass(frozen=True)
class IdentityRecord:
    """What a taken shell's labels would say if labels could change."""

    name: str
    class_name: str
    cpu_millis: int
    memory_bytes: int
    machine_id: str
    template: bool = False
    # When the shell became this VM (epoch seconds): its created/ready time as a VM.
    taken_at: float = 0.0

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def load(text: str) -> IdentityRecord:
        d = json.loads(text)
        return IdentityRecord(name=str(d["name"]), class_name=str(d.get("class_name", "")),
                              cpu_millis=int(d.get("cpu_millis", 0)),
                              memory_bytes=int(d.get("memory_bytes", 0)),
                              machine_id=str(d.get("machine_id", "")), template=bool(d.get("template")),
                              taken_at=float(d.get("taken_at", 0.0)))


def record_path(data_dir: pathlib.Path, container_id: str) -> pathlib.Path:
    return data_dir / "vms" / f"{container_id}.json"


def write_record(data_dir: pathlib.Path, container_id: str, rec: IdentityRecord) -> None:
    path = record_path(data_dir, container_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(rec.dump())
    tmp.replace(path)


def read_record(data_dir: pathlib.Path, container_id: str) -> IdentityRecord | None:
    try:
        return IdentityRecord.load(record_path(data_dir, container_id).read_text())
    except (OSError, ValueError, KeyError):
        return None


def remove_record(data_dir: pathlib.Path, container_id: str) -> None:
    record_path(data_dir, container_id).unlink(missing_ok=True)


def identity_json(vm_name: str, agent_argv: Sequence[str], env: Mapping[str, str]) -> str:
    return json.dumps({"vm_name": vm_name, "agent_argv": list(agent_argv), "env": dict(env)})


def give_identity(pid: int, vm_name: str, machine_id: str, identity: str, *, timeout: float = 10.0) -> None:
    """Write the identity into the running container whose init is host pid `pid` (blocking)."""
    if not re.fullmatch(r"[0-9a-f]{32}", machine_id):
        raise ValueError(f"machine id {machine_id!r} is not 32 hex chars")
    proc = subprocess.run(
        ["nsenter", "--target", str(pid), "--mount", "--uts", "--", "/bin/sh", "-c", _SCRIPT,
         "cowpod-identity", machine_id, vm_name],
        input=identity, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        raise FailedPrecondition(f"giving identity {vm_name!r} to pid {pid} failed: {proc.stderr.strip()}")


def rewrite_host_files(hostname_path: str, hosts_path: str, old: str, new: str) -> None:
    """The engine's per-container /etc/hostname and /etc/hosts (host files, bind-mounted)."""
    if hostname_path:
        pathlib.Path(hostname_path).write_text(new + "\n")
    if hosts_path:
        p = pathlib.Path(hosts_path)
        try:
            text = p.read_text()
        except OSError:
            return
        p.write_text(re.sub(rf"(?<![\w.-]){re.escape(old)}(?![\w.-])", new, text))

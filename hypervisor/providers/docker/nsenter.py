"""Enter a running container from a forked process: cgroups, namespaces, root, capabilities.

This is what `docker exec` (runc's `nsexec`) does for a new process, done instead
for a process that was *forked* from a warm zygote, so the new process keeps the
zygote's memory copy-on-write (see docs/instant-clone.md).

Order matters and is fixed here so callers cannot get it wrong:

1. Everything that needs the host's view of `/proc` and `/sys/fs/cgroup` happens
   first: read the target's cgroups, open its namespace files and its root
   directory (`open_container`). After joining its mount namespace those host
   paths are gone.
2. Move into the target's cgroups (`move_to_cgroups`), so whatever this process
   and its children allocate from now on is charged to the container.
3. `setns` into ipc, uts, net, cgroup, pid, mnt — mnt last, because joining it
   changes what every path means; the pid namespace only applies to children,
   so the caller must fork once more afterwards.
4. `fchdir` + `chroot` to the container's root (the mount namespace's own root
   can be the pre-`pivot_root` rootfs, so the root fd opened in step 1 is the
   reliable one), then `chdir("/")`.
5. In the process that will run the payload: `match_capabilities` so it holds
   exactly the capabilities of the container's init, not the host root's.

User namespaces are not used (Docker here runs without userns-remap). Seccomp
and LSM profiles of the container are NOT copied (see docs/instant-clone.md).

Everything raises `OSError` whose message names the step, the namespace or
cgroup hierarchy, and the path, because a bare `EPERM` from a forked child is
otherwise impossible to diagnose.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# Namespace type flags from <sched.h>.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_TYPES: Mapping[str, int] = {
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "pid": CLONE_NEWPID,
    "time": CLONE_NEWTIME,
    "mnt": CLONE_NEWNS,
}

# mnt must come last: once joined, /proc/<pid>/ns/* paths mean something else.
# pid before mnt is conventional (runc does the same); it only affects children.
JOIN_ORDER: tuple[str, ...] = ("ipc", "uts", "net", "cgroup", "pid", "time", "mnt")
DEFAULT_NAMESPACES: tuple[str, ...] = ("ipc", "uts", "net", "cgroup", "pid", "mnt")

_PR_SET_NAME = 15
_PR_CAPBSET_DROP = 24
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


# --------------------------------------------------------------------------- namespaces


def setns(fd: int, nstype: int) -> None:
    """Join the namespace behind `fd` (an open /proc/PID/ns/* file)."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns(fd={fd}, nstype={nstype:#x})")


def _ns_name_check(namespaces: Iterable[str]) -> tuple[str, ...]:
    names = tuple(namespaces)
    for name in names:
        if name == "user":
            raise ValueError("namespaces: 'user' is not supported (cowpod does not use user namespaces)")
        if name not in NAMESPACE_TYPES:
            raise ValueError(f"namespaces: unknown namespace {name!r}; known: {sorted(NAMESPACE_TYPES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"namespaces: duplicates in {list(names)}")
    return tuple(n for n in JOIN_ORDER if n in names)


@dataclass
class ContainerHandle:
    """Open handles on a running container's init process, taken in the host's view.

    Holding fds (not paths) is what makes joining safe: the pid could be reused
    or the paths could change meaning once we are in the container's mount ns.
    """

    pid: int
    ns_fds: dict[str, int]
    root_fd: int
    cgroups: list[CgroupMembership]

    def close(self) -> None:
        for fd in [*self.ns_fds.values(), self.root_fd]:
            try:
                os.close(fd)
            except OSError:
                pass
        self.ns_fds.clear()
        self.root_fd = -1


def _same_namespace(fd: int, name: str) -> bool:
    """True when this process is already in that namespace (setns would be a no-op)."""
    mine = os.stat(f"/proc/self/ns/{name}")
    theirs = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def open_container(
    pid: int, namespaces: Sequence[str] = DEFAULT_NAMESPACES, *, proc: str = "/proc"
) -> ContainerHandle:
    """Open `pid`'s namespaces, root and cgroup list. Raise OSError naming what failed."""
    if pid <= 0:
        raise ValueError(f"target.pid: must be a positive integer, got {pid}")
    names = _ns_name_check(namespaces)
    base = f"{proc}/{pid}"
    if not os.path.exists(base):
        raise OSError(errno.ESRCH, f"target pid {pid}: no such process ({base} does not exist)")
    fds: dict[str, int] = {}
    try:
        for name in names:
            path = f"{base}/ns/{name}"
            try:
                fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise OSError(e.errno, f"open namespace {name!r} of pid {pid} ({path}): {e.strerror}") from e
        root_path = f"{base}/root"
        try:
            root_fd = os.open(root_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"open root of pid {pid} ({root_path}): {e.strerror}") from e
        cgroups = cgroup_paths_of(pid, proc=proc)
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return ContainerHandle(pid=pid, ns_fds=fds, root_fd=root_fd, cgroups=cgroups)


def join_namespaces(handle: ContainerHandle, *, chroot: bool = True) -> None:
    """setns into every opened namespace (mnt last), then chroot to the container root.

    After this returns the pid namespace applies to *children* only: fork once
    more to get a process that really lives in the container's pid namespace.
    """
    for name in JOIN_ORDER:
        fd = handle.ns_fds.get(name)
        if fd is None or _same_namespace(fd, name):
            continue
        try:
            setns(fd, NAMESPACE_TYPES[name])
        except OSError as e:
            raise OSError(e.errno, f"setns into {name!r} namespace of pid {handle.pid}: {e.strerror}") from e
    if chroot:
        try:
            os.fchdir(handle.root_fd)
            os.chroot(".")
            os.chdir("/")
        except OSError as e:
            raise OSError(e.errno, f"chroot to root of pid {handle.pid}: {e.strerror}") from e


# --------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupMembership:
    """One line of /proc/PID/cgroup: hierarchy id, its controllers, the path in it.

    cgroup v2 (the unified hierarchy) is hierarchy 0 with no controllers listed.
    Named v1 hierarchies appear as a controller `name=...` (e.g. name=systemd).
    """

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str

    @property
    def is_v2(self) -> bool:
        return self.hierarchy_id == 0 and not self.controllers


def parse_proc_cgroup(text: str) -> list[CgroupMembership]:
    """Parse /proc/PID/cgroup (`id:controller,list:/path` per line)."""
    out: list[CgroupMembership] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split(":", 2)
        if len(parts) != 3:
            raise ValueError(f"/proc/PID/cgroup line {lineno}: expected 'id:controllers:path', got {raw!r}")
        hid, ctrl, path = parts
        try:
            hierarchy_id = int(hid)
        except ValueError:
            raise ValueError(
                f"/proc/PID/cgroup line {lineno}: hierarchy id {hid!r} is not a number"
            ) from None
        if not path.startswith("/"):
            raise ValueError(f"/proc/PID/cgroup line {lineno}: path {path!r} is not absolute")
        controllers = tuple(c for c in ctrl.split(",") if c)
        out.append(CgroupMembership(hierarchy_id, controllers, path))
    return out


@dataclass(frozen=True)
class CgroupMount:
    """A mounted cgroup hierarchy from /proc/self/mountinfo."""

    mount_point: str
    root: str  # the cgroup path that is the mount's root (usually "/")
    version: int  # 1 or 2
    options: frozenset[str]  # super options: controllers and flags (v1)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_cgroup_mounts(mountinfo: str) -> list[CgroupMount]:
    """The cgroup and cgroup2 mounts listed in a /proc/PID/mountinfo text."""
    mounts: list[CgroupMount] = []
    for raw in mountinfo.splitlines():
        fields = raw.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 5 or len(fields) < sep + 4:
            continue
        fstype = fields[sep + 1]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        mounts.append(
            CgroupMount(
                mount_point=_unescape_mountinfo(fields[4]),
                root=_unescape_mountinfo(fields[3]),
                version=2 if fstype == "cgroup2" else 1,
                options=frozenset(fields[sep + 3].split(",")),
            )
        )
    return mounts


def cgroup_dir(membership: CgroupMembership, mounts: Sequence[CgroupMount]) -> str:
    """The directory on this machine that holds `membership`'s cgroup.

    A v1 hierarchy is found by its controllers (all must be in the mount's
    super options); v2 by type. The mount's own root is stripped from the path
    (a mount of a sub-tree, as inside some containers).
    """
    for m in mounts:
        if membership.is_v2:
            if m.version != 2:
                continue
        elif m.version != 1 or not set(membership.controllers) <= m.options:
            continue
        path = membership.path
        if m.root != "/":
            if path != m.root and not path.startswith(m.root.rstrip("/") + "/"):
                continue
            path = path[len(m.root.rstrip("/")) :] or "/"
        return os.path.normpath(m.mount_point + "/" + path.lstrip("/"))
    what = "cgroup v2" if membership.is_v2 else ",".join(membership.controllers)
    raise OSError(errno.ENOENT, f"cgroup hierarchy {what!r} (path {membership.path}) is not mounted here")


FREEZER = "freezer"


def charge_memberships(memberships: Sequence[CgroupMembership]) -> list[CgroupMembership]:
    """The hierarchies a zygote joins to be charged to its parent VM: all but the v1 freezer.

    cgroup v1 hierarchies are independent of each other, so a process can sit in
    the parent container's memory, cpu, pids... cgroups (its pages and CPU are
    the parent's) while staying in its own freezer cgroup. `docker pause` of the
    parent (the v1 freezer) then leaves the zygote running, and a quiesced
    parent can still be forked, as in Fargo. On a pure cgroup v2 host the
    freezer is part of the one unified hierarchy (`cgroup.freeze`): there is no
    way to be charged without being frozen, and the v2 entry is kept (charged,
    and frozen with the parent; see `freezes_with_parent`).
    """
    return [m for m in memberships if FREEZER not in m.controllers]


def freezes_with_parent(memberships: Sequence[CgroupMembership]) -> bool:
    """Whether joining `charge_memberships(memberships)` still freezes with the parent:
    true on a pure v2 host (no v1 freezer hierarchy, the v2 one joined)."""
    has_v1_freezer = any(FREEZER in m.controllers for m in memberships)
    return not has_v1_freezer and any(m.is_v2 for m in memberships)


def cgroup_paths_of(pid: int, *, proc: str = "/proc") -> list[CgroupMembership]:
    """The cgroups `pid` belongs to, one per hierarchy (v1 and/or v2)."""
    path = f"{proc}/{pid}/cgroup"
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        raise OSError(errno.ESRCH, f"target pid {pid}: no such process ({path} does not exist)") from None
    return parse_proc_cgroup(text)


def read_cgroup_mounts(proc: str = "/proc") -> list[CgroupMount]:
    with open(f"{proc}/self/mountinfo") as f:
        return parse_cgroup_mounts(f.read())


def move_to_cgroups(
    pid: int,
    memberships: Sequence[CgroupMembership],
    *,
    mounts: Sequence[CgroupMount] | None = None,
    skip_empty_v2: bool = True,
) -> list[str]:
    """Write `pid` into `cgroup.procs` of every hierarchy in `memberships`.

    Returns the directories written. On a hybrid v1 host the v2 entry is
    written too when the directory exists (Docker creates it); a v2 path of
    "/" with no directory is skipped when `skip_empty_v2`.
    """
    if mounts is None:
        mounts = read_cgroup_mounts()
    written: list[str] = []
    for mem in memberships:
        what = "cgroup v2" if mem.is_v2 else ",".join(mem.controllers)
        directory = cgroup_dir(mem, mounts)
        procs = os.path.join(directory, "cgroup.procs")
        if mem.is_v2 and skip_empty_v2 and not os.path.exists(procs):
            continue
        try:
            with open(procs, "w") as f:
                f.write(f"{pid}\n")
        except OSError as e:
            raise OSError(e.errno, f"move pid {pid} into {what} cgroup {procs}: {e.strerror}") from e
        written.append(directory)
    return written


# --------------------------------------------------------------------------- process identity


@dataclass(frozen=True)
class Capabilities:
    """The five capability sets of a process, as bit masks (from /proc/PID/status)."""

    inheritable: int
    permitted: int
    effective: int
    bounding: int
    ambient: int
    no_new_privs: bool


def parse_capabilities(status_text: str) -> Capabilities:
    """Read CapInh/CapPrm/CapEff/CapBnd/CapAmb/NoNewPrivs from /proc/PID/status text."""
    fields: dict[str, str] = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    try:
        return Capabilities(
            inheritable=int(fields["CapInh"], 16),
            permitted=int(fields["CapPrm"], 16),
            effective=int(fields["CapEff"], 16),
            bounding=int(fields["CapBnd"], 16),
            ambient=int(fields.get("CapAmb", "0"), 16),
            no_new_privs=fields.get("NoNewPrivs", "0") == "1",
        )
    except KeyError as e:
        raise ValueError(f"/proc/PID/status: missing field {e.args[0]}") from None


def capabilities_of(pid: int, *, proc: str = "/proc") -> Capabilities:
    with open(f"{proc}/{pid}/status") as f:
        return parse_capabilities(f.read())


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def read_cap_last_cap(proc: str = "/proc") -> int:
    """The highest capability number this kernel knows (read it in the host's view)."""
    with open(f"{proc}/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def match_capabilities(caps: Capabilities, last_cap: int) -> None:
    """Reduce this process's capabilities to `caps` (those of the container's init).

    A process that joins a container by setns keeps the host root's full
    capability set; `docker exec` would have given it the container's. Drop the
    bounding set first (needs CAP_SETPCAP, which we still hold), then set
    effective/permitted/inheritable, then no_new_privs if the init has it.
    """
    for cap in range(last_cap + 1):
        if not caps.bounding & (1 << cap):
            ret = _libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0)
            _check(ret, f"drop capability {cap} from the bounding set")
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (caps.effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (caps.permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (caps.inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset to the container's capabilities")
    if caps.no_new_privs:
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to this process (as containerd-shim does).

    The zygote's fork goes child -> grandchild; when the child exits, the
    grandchild (in the container's pid namespace) becomes the zygote's child,
    so the zygote can reap it and report its exit status.
    """
    _check(_libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def set_process_name(name: str) -> None:
    """Set /proc/self/comm (15 bytes max), so `ps`/`docker top` tell clones apart."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(_PR_SET_NAME, buf, 0, 0, 0), "prctl(PR_SET_NAME)")

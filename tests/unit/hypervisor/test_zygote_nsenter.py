"""Pure parts of hypervisor.providers.docker.nsenter: /proc text parsing and cgroup directory mapping."""

from __future__ import annotations

import pytest

from hypervisor.providers.docker.nsenter import (
    CgroupMembership,
    CgroupMount,
    cgroup_dir,
    charge_memberships,
    freezes_with_parent,
    move_to_cgroups,
    open_container,
    parse_capabilities,
    parse_cgroup_mounts,
    parse_proc_cgroup,
)

CID = "3444c348b986fee79e265076eec6557e323da1e88470f30fa33be4045bde9867"

# /proc/PID/cgroup of a Docker 20.10 container on a cgroup v1 host (hybrid: v2 mounted, empty).
PROC_CGROUP_V1 = f"""9:name=systemd:/docker/{CID}
8:pids:/docker/{CID}
7:blkio:/docker/{CID}
6:freezer:/docker/{CID}
5:devices:/docker/{CID}
4:memory:/docker/{CID}
3:cpuset:/docker/{CID}
2:cpuacct:/docker/{CID}
1:cpu:/docker/{CID}
0::/docker/{CID}
"""

MOUNTINFO_V1 = r"""23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

# A systemd-style host where cpu and cpuacct share one hierarchy, and a pure v2 host.
MOUNTINFO_JOINED = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
"""
MOUNTINFO_V2 = (
    "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
)

STATUS = """Name:\tsleep
NoNewPrivs:\t1
CapInh:\t0000000000000000
CapPrm:\t00000000a80425fb
CapEff:\t00000000a80425fb
CapBnd:\t00000000a80425fb
CapAmb:\t0000000000000000
"""


def test_parse_proc_cgroup_v1_lists_every_hierarchy() -> None:
    got = parse_proc_cgroup(PROC_CGROUP_V1)
    assert len(got) == 10
    assert got[0] == CgroupMembership(9, ("name=systemd",), f"/docker/{CID}")
    assert got[5] == CgroupMembership(4, ("memory",), f"/docker/{CID}")
    assert got[-1].is_v2 and got[-1].path == f"/docker/{CID}"
    assert not got[5].is_v2


def test_parse_proc_cgroup_joined_controllers_and_v2_only() -> None:
    got = parse_proc_cgroup("4:cpu,cpuacct:/system.slice/docker-abc.scope\n0::/user.slice\n")
    assert got[0].controllers == ("cpu", "cpuacct")
    assert got[1] == CgroupMembership(0, (), "/user.slice")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("memory:/docker/x", "line 1: expected 'id:controllers:path'"),
        ("x:memory:/docker", "line 1: hierarchy id 'x' is not a number"),
        ("\n4:memory:docker", "line 2: path 'docker' is not absolute"),
    ],
)
def test_parse_proc_cgroup_rejects_garbage_with_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_proc_cgroup(text)


def test_parse_cgroup_mounts_finds_v1_and_v2() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO_V1)
    assert [m.mount_point for m in mounts][:2] == ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpuacct"]
    assert len(mounts) == 10  # sysfs and the tmpfs are not cgroups
    systemd = next(m for m in mounts if "name=systemd" in m.options)
    assert systemd.mount_point == "/sys/fs/cgroup/systemd" and systemd.version == 1
    assert mounts[-1].version == 2 and mounts[-1].mount_point == "/sys/fs/cgroup/unified"


def test_cgroup_dir_maps_each_hierarchy_to_its_mount() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO_V1)
    dirs = [cgroup_dir(m, mounts) for m in parse_proc_cgroup(PROC_CGROUP_V1)]
    assert dirs[0] == f"/sys/fs/cgroup/systemd/docker/{CID}"
    assert dirs[5] == f"/sys/fs/cgroup/memory/docker/{CID}"
    assert dirs[-1] == f"/sys/fs/cgroup/unified/docker/{CID}"
    assert dirs[-2] == f"/sys/fs/cgroup/cpu/docker/{CID}"


def test_cgroup_dir_joined_controllers() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO_JOINED)
    mem = CgroupMembership(3, ("cpu", "cpuacct"), "/docker/abc")
    assert cgroup_dir(mem, mounts) == "/sys/fs/cgroup/cpu,cpuacct/docker/abc"


def test_cgroup_dir_pure_v2_host() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO_V2)
    assert cgroup_dir(CgroupMembership(0, (), "/system.slice/docker-abc.scope"), mounts) == (
        "/sys/fs/cgroup/system.slice/docker-abc.scope"
    )


def test_cgroup_dir_strips_a_mount_root() -> None:
    mounts = [CgroupMount("/sys/fs/cgroup/memory", "/outer", 1, frozenset({"rw", "memory"}))]
    assert cgroup_dir(CgroupMembership(4, ("memory",), "/outer/docker/x"), mounts) == (
        "/sys/fs/cgroup/memory/docker/x"
    )
    with pytest.raises(OSError, match="not mounted here"):
        cgroup_dir(CgroupMembership(4, ("memory",), "/elsewhere/x"), mounts)


def test_cgroup_dir_unmounted_hierarchy_is_a_clear_error() -> None:
    mounts = parse_cgroup_mounts(MOUNTINFO_V2)
    with pytest.raises(OSError, match="cgroup hierarchy 'memory'"):
        cgroup_dir(CgroupMembership(4, ("memory",), "/docker/x"), mounts)


def test_mountinfo_octal_escapes() -> None:
    text = r"50 31 0:40 / /sys/fs/cgroup/with\040space rw - cgroup cgroup rw,pids" + "\n"
    assert parse_cgroup_mounts(text)[0].mount_point == "/sys/fs/cgroup/with space"


def test_move_to_cgroups_names_the_hierarchy_that_failed(tmp_path: pytest.TempPathFactory) -> None:
    mounts = [CgroupMount(str(tmp_path), "/", 1, frozenset({"memory"}))]
    with pytest.raises(OSError, match=r"move pid 1 into memory cgroup .*/missing/cgroup.procs"):
        move_to_cgroups(1, [CgroupMembership(4, ("memory",), "/missing")], mounts=mounts)


def test_move_to_cgroups_writes_cgroup_procs_and_skips_absent_v2(tmp_path: pytest.TempPathFactory) -> None:
    import pathlib

    root = pathlib.Path(str(tmp_path))
    (root / "mem" / "docker" / "c").mkdir(parents=True)
    mounts = [
        CgroupMount(str(root / "mem"), "/", 1, frozenset({"memory"})),
        CgroupMount(str(root / "v2"), "/", 2, frozenset({"rw"})),
    ]
    written = move_to_cgroups(
        4242,
        [CgroupMembership(4, ("memory",), "/docker/c"), CgroupMembership(0, (), "/docker/c")],
        mounts=mounts,
    )
    assert written == [str(root / "mem" / "docker" / "c")]
    assert (root / "mem" / "docker" / "c" / "cgroup.procs").read_text() == "4242\n"


def test_parse_capabilities() -> None:
    caps = parse_capabilities(STATUS)
    assert caps.bounding == 0xA80425FB == caps.effective == caps.permitted
    assert caps.inheritable == 0 and caps.ambient == 0
    assert caps.no_new_privs is True
    with pytest.raises(ValueError, match="missing field CapBnd"):
        parse_capabilities("CapInh:\t0\nCapPrm:\t0\nCapEff:\t0\n")


def test_open_container_rejects_bad_input_before_touching_proc() -> None:
    with pytest.raises(ValueError, match=r"target\.pid: must be a positive integer"):
        open_container(0)
    with pytest.raises(ValueError, match="'user' is not supported"):
        open_container(1, ("user", "mnt"))
    with pytest.raises(ValueError, match="unknown namespace 'bogus'"):
        open_container(1, ("bogus",))


def test_open_container_missing_pid_says_no_such_process(tmp_path: pytest.TempPathFactory) -> None:
    with pytest.raises(OSError, match="target pid 77: no such process"):
        open_container(77, proc=str(tmp_path))


def test_a_zygote_joins_every_parent_hierarchy_but_the_v1_freezer() -> None:
    parent = parse_proc_cgroup(PROC_CGROUP_V1)
    joined = charge_memberships(parent)
    assert [m.controllers for m in joined] == [
        ("name=systemd",), ("pids",), ("blkio",), ("devices",), ("memory",), ("cpuset",), ("cpuacct",),
        ("cpu",), (),
    ]
    assert all(m.path == f"/docker/{CID}" for m in joined)
    assert not freezes_with_parent(parent)


def test_a_freezer_sharing_a_hierarchy_is_left_out_with_it() -> None:
    # A v1 hierarchy mounted with several controllers, the freezer among them,
    # cannot be joined without joining the freezer: it is left out whole.
    parent = parse_proc_cgroup("3:freezer,devices:/docker/x\n4:memory:/docker/x\n")
    assert [m.controllers for m in charge_memberships(parent)] == [("memory",)]


def test_on_a_pure_v2_host_the_unified_hierarchy_is_joined_and_freezes() -> None:
    parent = parse_proc_cgroup("0::/system.slice/docker-abc.scope\n")
    assert charge_memberships(parent) == parent
    assert freezes_with_parent(parent)

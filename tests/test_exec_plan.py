"""The create and destroy steps of issue 14, planned (pure): a net guest's own sysfs, made
in its net namespace and attached through the mirror; a cgroup guest's own cgroup, made
before the namespaces are built (which join it) and removed at destroy once nobody is in
it."""
from __future__ import annotations

from fixture_files import mountinfo_table
from mirrormount.guest.model import CreateRequest, Layout, parse_kinds
from mirrormount.guest.mountops import MountInto
from mirrormount.guest.ops import (MakeCgroup, ReleaseNsFile, RemoveCgroup, SpawnGuest,
                                   StopProcesses, WriteRecord, render)
from mirrormount.guest.plan import HostFacts, Teardown, plan_create, plan_destroy

LAYOUT = Layout()


def plan(kinds: str, rootfs_sys: bool = True):
    t = mountinfo_table("private-bare.host")
    facts = HostFacts(t, nursery_ready=True, rootfs_sys=rootfs_sys)
    return plan_create(CreateRequest("c9", kinds=parse_kinds(kinds)), LAYOUT, facts)


def test_a_net_guest_gets_a_sysfs_made_in_its_net_namespace_after_the_spawn():
    ops = plan("net")
    kinds = [type(op) for op in ops]
    sysfs = next(op for op in ops if isinstance(op, MountInto))
    last_record = len(kinds) - 1 - kinds[::-1].index(WriteRecord)
    assert kinds.index(SpawnGuest) < kinds.index(MountInto) < last_record
    assert (sysfs.target, sysfs.fstype, sysfs.netns) == ("/sys", "sysfs",
                                                         "/run/mirrormount/c9/ns/net")
    assert "nsenter --net=/run/mirrormount/c9/ns/net mount -t sysfs" in render(ops)


def test_no_sysfs_without_a_net_namespace_or_a_sys_directory():
    assert not any(isinstance(op, MountInto) for op in plan("uts,pid"))
    assert not any(isinstance(op, MountInto) for op in plan("net", rootfs_sys=False))


def test_a_cgroup_guest_gets_its_cgroup_before_the_spawn_which_joins_it():
    ops = plan("cgroup,pid")
    kinds = [type(op) for op in ops]
    assert kinds.index(MakeCgroup) == kinds.index(SpawnGuest) - 1
    spawn = next(op for op in ops if isinstance(op, SpawnGuest))
    assert spawn.cgroup_state == LAYOUT.state
    assert "cgroup.procs" in render(ops)
    plain = plan("pid")
    assert MakeCgroup not in [type(op) for op in plain]
    assert next(op for op in plain if isinstance(op, SpawnGuest)).cgroup_state == ""


def test_destroy_removes_the_cgroup_after_the_processes_and_before_the_namespaces():
    t = Teardown("c9", inside=(5,), reapers=(4,), held=("/run/mirrormount/c9/ns/mnt",),
                 cgroup="/sys/fs/cgroup/mirrormount/c9.0-50")
    kinds = [type(op) for op in plan_destroy(t, LAYOUT)]
    assert kinds.index(StopProcesses) < kinds.index(RemoveCgroup) < kinds.index(ReleaseNsFile)
    assert RemoveCgroup not in [type(op) for op in plan_destroy(Teardown("c9"), LAYOUT)]

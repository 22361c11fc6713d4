"""Who pins a mount: every copy of it in every mount namespace, and everything that holds them.

`fuser -m`, `lsof` and `lsfd` answer "which processes use this path as I see it". With mirrors
that is the wrong question: a guest's mount has a peer copy under BASE/NAME on the host, maybe
private copies in namespaces that some tool unshared, copies in namespaces kept alive only by an
nsfs file or an open fd, and lazily detached copies that no table lists. The kernel refuses the
guest's umount (EBUSY) when any peer it would propagate to is in use, and a copy that
propagation skips keeps the device alive after the guest's umount has "succeeded"
(kernel-findings §7).

How (kernel-findings §9):
  1. Resolve the target to a mount (or a device) and so to a device number.
  2. One pass over /proc. Each process's cwd/root/exe and every fd is stat()ed; only those on
     the target's device are statx()ed for their mount id (STATX_MNT_ID) and have their link
     text read. /proc/PID/maps is filtered by device, then map_files is statx()ed. The same pass
     records each process's mount namespace and any fd that holds a mount namespace.
  3. Read each distinct mount namespace's table once: through a process living in it, or, for a
     namespace held only by an nsfs file or an fd, from a forked child that setns()es into it.
     Mount ids are global, so a process's mount id is compared with every table directly; link
     text is only shown, never resolved again in our namespace.
  4. Judge: copies are mounts with the target's device and fs root; process pins are mount ids
     among the copies; a mount id on the device that no table lists is a detached copy. Submounts
     and copies that umount propagation would skip come from the tables; swap files, loop
     backing files, binfmt_misc interpreters and nfsd exports are placed by the mount id of
     their path (and device and inode where the kernel tells it); fanotify marks and io_uring
     registered files come from the fdinfo of the fds the pass found; fds on block device
     nodes are matched by st_rdev.

Every /proc read tolerates processes that vanish (ENOENT, ESRCH) and counts those it may not
inspect (EACCES: this machine's PID 1 denies /proc/1/fd even to root).

The package, one concern per module, each importing only those listed before it (facts.py
also uses devices.py, which imports none of them):
  report.py   results (Copy, Pin, BusyReport), pin kinds, plain-sentence rendering;
  scan.py     the /proc pass (step 2), its workers and the maps filter;
  world.py    mount namespaces, the setns walker and the Index of all mounts (step 3);
  facts.py    swaps, loop devices, nfsd exports, holders, device identity;
  target.py   what a query is about: parsing and resolving the target (step 1);
  judge.py    copies and pins per target (step 4);
  finder.py   this module: the entry points (find_pins, find_residue(s), resolve_target,
              guest_mounts, guest_identities, audit_all), and the names other code imports
              from here.

Privilege: root (other processes' fds and map_files, setns into namespaces).
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..record import replace
from ..guest.model import Layout
from .facts import (LOOP_GET_STATUS64, NFSD_EXPORTS, Facts, LoopDevice, SwapEntry,
                    block_holders, describe_device, parse_exports, parse_swaps, read_facts,
                    unpack_loop_info)
from .judge import UNRELIABLE_ST_DEV, Judge
from .report import (HOST, HOW_ORDER, PIN_KINDS, PROCESS_KINDS, BusyReport, Copy, Pin,
                     describe_pin, explain, shown, who)
from .scan import (MAX_WORKERS, PARALLEL_MIN_PROCESSES, MapEntry, ProcRecord, Scan,
                   default_workers, maps_on_devices, scan_processes)
from .target import Target, TargetSpec, parse_target, resolve
from .world import Index, NsView, World, families, fs_dentry


# Kernel interfaces, not mounts of the guest's own: `busy --all` skips them.
PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "devtmpfs",
                       "debugfs", "tracefs", "securityfs", "pstore", "bpf", "configfs",
                       "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "nsfs", "efivarfs",
                       "rpc_pipefs", "nfsd"})


# ============================================================================ entry points
def _gather(layout: Layout,
            targets_of: Callable[[World], list[Target]]) -> tuple[World, Judge, list[Target]]:
    """Shared pipeline: facts, guests, targets (targets_of(world)), one /proc pass, every
    namespace's table, then a Judge ready to report. The caller closes the World."""
    facts = read_facts()
    world = World(layout, facts.probes)
    try:
        targets = targets_of(world)
        devs = {t.dev for t in targets}
        full = any(t.fstype in UNRELIABLE_ST_DEV for t in targets)
        # Not ourselves: our cwd may well be on the target (`busy .`).
        # Device nodes worth matching by st_rdev: the targets, and every bound loop device
        # (a process holding one open decides what its loop pin's fix is).
        nodes = devs | {lo.rdev for lo in facts.loops if lo.rdev is not None}
        # Each part of the /proc pass as it is ready: the namespaces its processes are in
        # have their tables read while the workers still scan (scan_processes' on_part).
        def take(part: Scan) -> None:
            world.add_processes(part)
            world.read_all()
        scan = scan_processes(devs, full=full, exclude={os.getpid()}, nodes=nodes,
                              on_part=take)
        return world, Judge(world, scan, facts, full), targets
    except BaseException:
        world.close()
        raise


def find_pins(target: str, layout: Layout) -> BusyReport:
    """Everything that keeps TARGET busy (host path, NAME:GUESTPATH, /dev/NODE or MAJ:MIN)."""
    spec = parse_target(target)
    world, judge, targets = _gather(layout, lambda w: [resolve(spec, w)])
    try:
        return judge.report(targets[0])
    finally:
        world.close()


def find_residue(identity: Target, layout: Layout) -> BusyReport:
    """After an umount (lazy or not): what still holds the filesystem that `identity` (a
    target resolved before the umount) named. Every surviving copy is a leak; detached
    holders are listed."""
    return find_residues([identity], layout)[0]


def find_residues(identities: list[Target], layout: Layout) -> list[BusyReport]:
    """find_residue for several filesystems at once (a destroyed guest's mounts), from one
    pass over /proc. One report per identity, in order."""
    ts = [Target(i.spec, i.major, i.minor, i.root, None, i.guest, i.guest_path, i.fstype,
                 i.source, residue=True) for i in identities]
    if not ts:
        return []
    world, judge, _ = _gather(layout, lambda w: ts)
    try:
        # A filesystem still mounted where it is meant to be (the host, a guest) is in use,
        # not leaked: its holders are no residue of this unmount (a bind of /srv/data
        # unmounted in one guest while others, or the host, still have it).
        return [judge.report(t) if not judge.mounted_where_meant(t) else
                replace(judge.report(t), busy=False, copies=(), pins=()) for t in ts]
    finally:
        world.close()


def guest_identities(layout: Layout, names: list[str]) -> dict[str, list[Target]]:
    """Each named guest's own mounts (as guest_mounts finds them), resolved before a destroy,
    so that what survives it can be followed afterwards: name -> targets (none for a guest
    whose namespace is not held). One World for the whole batch."""
    world = World(layout)
    try:
        out: dict[str, list[Target]] = {n: [] for n in names}
        for t in guest_mounts(world, set(names)):
            out[t.guest or ""].append(t)
        return out
    finally:
        world.close()


def residue_left(report: BusyReport) -> list[dict]:
    """What keeps a filesystem alive after an unmount that succeeded, as JSON rows:
    {how, pid, comm, mnt_ns, guest, path} (pid and comm None for a namespace held by a file,
    a swap, a loop device and the like)."""
    return [{"how": p.how, "pid": p.pid, "comm": p.comm, "mnt_ns": p.namespace,
             "guest": p.guest, "path": p.path} for p in report.pins]


def resolve_target(target: str, layout: Layout) -> Target:
    """Resolve without scanning (used before a lazy umount, to know what to follow after)."""
    world = World(layout)
    try:
        return resolve(parse_target(target), world)
    finally:
        world.close()


def guest_mounts(world: World, names: set[str] | None = None) -> list[Target]:
    """Every mount a guest (of `names`, default all) has of its own: not its root, not a
    kernel interface, and not one it inherited from its rootfs (the host has the same
    filesystem at rootfs + path)."""
    own = world.views[world.own]
    assert own.table is not None
    host_keys = {(m.mountpoint, m.major, m.minor, m.root) for m in own.table}
    wanted = {i: n for i, n in world.guest_by_mnt.items() if names is None or n in names}
    world.read_all(only=wanted)
    out = []
    for ino, name in sorted(wanted.items(), key=lambda x: x[1]):
        v = world.views[ino]
        if v.table is None:
            continue
        root = v.table.root()
        rootfs = world.rootfs.get(name, "/").rstrip("/")
        for m in v.table:
            if m.mount_id == root.mount_id or m.fstype in PSEUDO_FS:
                continue
            if (f"{rootfs}{m.mountpoint}" or "/", m.major, m.minor, m.root) in host_keys:
                continue
            out.append(Target(f"{name}:{m.mountpoint}", m.major, m.minor, m.root, m.mount_id,
                              name, m.mountpoint, m.fstype, m.source))
    return out


def audit_all(layout: Layout) -> list[BusyReport]:
    """One report per mount of every guest (busy or not), from one pass over /proc."""
    world, judge, targets = _gather(layout, guest_mounts)
    try:
        return [judge.report(t) for t in targets]
    finally:
        world.close()


__all__ = [
    # the entry points
    "audit_all", "find_pins", "find_residue", "find_residues", "guest_identities",
    "guest_mounts", "residue_left", "resolve_target",
    "PSEUDO_FS", "UNRELIABLE_ST_DEV",
    # re-exported from the modules that own them (see the module docstring)
    "BusyReport", "Copy", "HOST", "HOW_ORDER", "PIN_KINDS", "PROCESS_KINDS", "Pin",
    "describe_pin", "explain", "shown", "who",
    "MAX_WORKERS", "PARALLEL_MIN_PROCESSES", "MapEntry", "ProcRecord", "Scan", "default_workers",
    "maps_on_devices", "scan_processes",
    "Index", "NsView", "World", "families", "fs_dentry",
    "LOOP_GET_STATUS64", "NFSD_EXPORTS", "Facts", "LoopDevice", "SwapEntry", "block_holders",
    "describe_device", "parse_exports", "parse_swaps", "read_facts", "unpack_loop_info",
    "Target", "TargetSpec", "parse_target", "resolve",
    "Judge",
]

"""Pure planning: a request plus the current mount table become an ordered list of operations.

The same list is printed by ``--dry-run`` (as mount(8)/unshare(1)/pivot_root(8) lines, each
with the reason) and carried out by ``apply.py``, so what is printed is what is done.
Nothing here touches the system.
"""
from __future__ import annotations

import shlex

from ..record import record, replace
from ..errors import UsageError
from ..kernel.mountinfo import MountTable, is_under
from .model import (CreateRequest, Layout, validate_caps, validate_confine, validate_name,
                    validate_propagation)
from .mountopts import MountOptions
from .mountopts import parse as parse_options
from .ops import (Op, MakeDir, MountTmpfs, SetPropagation, RBind, StartNursery, SpawnGuest,
                  WriteRecord, StopProcesses, ReleaseNsFile, Detach, Unmount, RemoveDir,
                  RemoveFile, MakeCgroup, RemoveCgroup)
# mountops.py's ops (mount, umount, a net guest's sysfs) are imported by the planners that use
# them: a plain create does not build their classes.
from .owner import LABELS, layout_problems
from .state import GuestRecord


# ----------------------------------------------------------------------------- planners
@record(frozen=True)
class HostFacts:
    """What the planner needs to know about the host, gathered by the caller."""

    table: MountTable
    existing: frozenset[str] = frozenset()
    nursery_ready: bool = False
    put_old: str = "mnt"       # chosen by the caller from the rootfs's directories
    rootfs_sys: bool = False   # the rootfs has a /sys directory (a guest's own sysfs goes there)


def plan_base(layout: Layout, table: MountTable) -> list[Op]:
    """BASE and STATE: each a tmpfs of its own, private and unbindable (findings §5, §5b).
    Raises UsageError, before any change, when either is placed where mirrormount would
    have to change a mount it did not make (owner.py)."""
    problems = layout_problems(layout, table)
    if problems:
        raise UsageError(problems[0])
    ops: list[Op] = []
    for path, what in ((layout.base, "BASE"), (layout.state, "STATE")):
        m = table.at(path)
        if m is not None and m.shared is None and m.master is None and m.unbindable:
            continue            # ours (layout_problems proved it) and set up already
        if m is None:
            ops.append(MakeDir(f"{what}: the directory", path))
            ops.append(MountTmpfs(
                f"{what}: a tmpfs of its own, so the directory beneath stays empty and a guest "
                "whose rootfs is / sees no names in it (findings §5b)", path, LABELS[what],
                "mode=0755" if what == "BASE" else "mode=0700"))
        ops.append(SetPropagation(
            f"{what}: private, so mounts made here never propagate to the host's peers", path,
            "private"))
        ops.append(SetPropagation(
            f"{what}: unbindable, so an rbind of / prunes it: guests never see other guests "
            "or nsfs files (an nsfs file inside a tree makes move_mount fail with ELOOP)",
            path, "unbindable"))
    return ops


def not_receiving(table: MountTable, rootfs: str, layout: Layout) -> list[str]:
    """mirror+host: the host mounts whose new submounts could never reach the mirror because
    they are not shared: the mount the rootfs lies on, and every mount under it (BASE,
    STATE and unbindable mounts aside, which an rbind prunes)."""
    out: list[str] = []
    paths = [m.mountpoint for m in [table.containing(rootfs), *table.under(rootfs)] if m]
    for path in dict.fromkeys(paths):
        top = table.at(path)        # only the topmost mount at a path receives new mounts
        if top is None or top.unbindable or is_under(path, layout.base) or \
                is_under(path, layout.state):
            continue
        if top.shared is None:
            out.append(path)
    return out


def plan_create(req: CreateRequest, layout: Layout, facts: HostFacts,
                created: float = 0.0) -> list[Op]:
    validate_name(req.name)
    validate_propagation(req.propagation)
    validate_confine(req.confine)
    validate_caps(req.drop_caps)
    if req.name in facts.existing:
        raise UsageError(f"guest {req.name} already exists")
    for top, what in ((layout.base, "BASE"), (layout.state, "STATE")):
        if is_under(req.rootfs, top):
            raise UsageError(f"rootfs {req.rootfs} lies inside {what} {top}")
    table = facts.table
    ops = plan_base(layout, table)
    if not facts.nursery_ready:
        ops.append(MakeDir("the nursery's holder directory", layout.nursery_dir))
        ops.append(StartNursery(
            "the nursery: guests are cloned from this near-empty namespace, so the cost of a "
            "create does not grow with the number of guests (findings §4)",
            layout.nursery_file, f"{layout.nursery_dir}/root"))
    mirror = layout.mirror(req.name)
    if req.propagation == "mirror+host":
        # Never change the host's propagation (ownership): say what to make shared instead,
        # as Docker's ensureShared does.
        private = not_receiving(table, req.rootfs, layout)
        if private:
            shown = ", ".join(private[:3]) + (f" and {len(private) - 3} more"
                                              if len(private) > 3 else "")
            raise UsageError(
                f"--propagation mirror+host: {len(private)} host mount(s) not shared "
                f"({shown}): nothing mounted there would reach the guest. Make them shared "
                f"first: mount --make-shared {shlex.quote(private[0])} for each, or mount "
                "--make-rshared / as systemd does")
    ops += [
        MakeDir("the guest's state directory (0700)", layout.guest_dir(req.name)),
        WriteRecord("claim the name in STATE before the mirror exists: whatever a kill leaves "
                    "in BASE is then provably this STATE's to clean up", layout.claim(req.name),
                    {"mirror": mirror}),
    ]
    ops += [
        MakeDir("the mirror's mountpoint (inside BASE's tmpfs)", mirror),
        RBind("the mirror: every mount of the rootfs, copied; BASE and STATE are unbindable "
              "and so pruned", req.rootfs, mirror),
    ]
    if req.propagation == "mirror":
        ops.append(SetPropagation(
            "cut every tie to the host's peer groups: when / is shared, rbind copies join the "
            "host's groups, and make-rshared alone would keep them", mirror, "private",
            recursive=True))
    else:
        ops.append(SetPropagation(
            "mirror+host: receive the host's mounts (slave of its groups) but send nothing back",
            mirror, "slave", recursive=True))
    ops.append(SetPropagation(
        "a fresh peer group per mount of the mirror, which the guest's copy will join: "
        "mounts then flow both ways between BASE/NAME and the guest", mirror, "shared",
        recursive=True))
    ops.append(MakeDir("where its nsfs binds live", layout.ns_dir(req.name)))
    own_cgroup = "cgroup" in req.all_kinds
    if own_cgroup:
        ops.append(MakeCgroup(
            "a cgroup of the guest's own, which its processes join and its cgroup namespace "
            "is rooted at (exec and enter place each command there)", req.name, layout.state))
    ops.append(SpawnGuest(
        "the guest's namespaces, cloned from the nursery and pivot_rooted into the mirror; "
        "kept alive by nsfs binds, so the guest needs no process",
        req.name, mirror, layout.nursery_file, layout.ns_dir(req.name), req.all_kinds,
        req.hostname, facts.put_old, req.confine, req.drop_caps,
        cgroup_state=layout.state if own_cgroup else "", init=req.init,
        joins=tuple((k, layout.ns_file(g, k)) for k, g in req.joins)))
    if "net" in req.all_kinds and facts.rootfs_sys:
        from .mountops import MountInto
        ops.append(MountInto(
            "a sysfs of the guest's own, made in its net namespace, over the rootfs's /sys "
            "(as `ip netns exec` does): /sys/class/net lists the guest's interfaces, not the "
            "host's. Attached through the mirror, it shows on both sides like any guest mount",
            req.name, mirror, "/sys", "sysfs", "sysfs", parse_options("nosuid,nodev,noexec"),
            resolved="/sys", netns=f"{layout.ns_dir(req.name)}/net"))
    record = GuestRecord(name=req.name, mirror=mirror, rootfs=req.rootfs,
                         kinds=req.all_kinds, propagation=req.propagation,
                         hostname=req.hostname, created=created, confine=req.confine,
                         drop_caps=req.drop_caps, init=req.init,
                         stop_signal=req.stop_signal, start=req.start,
                         shutdown=req.shutdown, joins=dict(req.joins))
    ops.append(WriteRecord("the guest's record, written atomically (temp file + rename), "
                           "last: a guest with a record is a complete guest",
                           layout.record(req.name), record.to_json()))
    return ops


# ----------------------------------------------------------------------------- destroy
@record(frozen=True)
class Teardown:
    """What destroy needs to know, gathered by the caller (guests.py)."""

    name: str
    inside: tuple[int, ...] = ()        # processes in the guest other than its reaper
    reapers: tuple[int, ...] = ()       # mirrormount's PID 1 of the guest's pid namespace
    held: tuple[str, ...] = ()          # nsfs files under STATE/NAME/ns that exist
    mirror: str | None = None           # the mirror this STATE proves is the guest's (owner)
    mirror_mounted: bool = False
    mirror_dir: bool = False            # the mirror exists as a plain directory in BASE
    record: bool = False
    claim: bool = False
    grace: float = 5.0
    last: bool = False                  # no other guest in STATE: BASE and STATE go too
    cgroup: str | None = None           # the guest's own cgroup directory, if it exists


def plan_destroy(t: Teardown, layout: Layout) -> list[Op]:
    """Tear a guest down, the processes first, the mirror detached privately, and only empty
    directories removed. Steps whose target is already gone are left out, so a destroy
    that was interrupted is completed by planning it again."""
    ops: list[Op] = []
    if t.inside:
        ops.append(StopProcesses("the guest's processes: TERM, a grace period, then KILL",
                                 t.inside, t.grace))
    if t.reapers:
        ops.append(StopProcesses("the guest's PID 1 (mirrormount's reaper): the kernel then "
                                 "ends its pid namespace", t.reapers, 0.0))
    if t.cgroup:
        ops.append(RemoveCgroup("the guest's own cgroup, now that nobody is in it",
                                t.cgroup))
    for holder in t.held:
        ops.append(ReleaseNsFile("release a namespace held by its nsfs bind", holder))
    if t.mirror and t.mirror_mounted:
        ops.append(Detach("the mirror, made private first so that its unmount propagates "
                          "into no peer (findings §3)", t.mirror))
    if t.mirror and (t.mirror_mounted or t.mirror_dir):
        ops.append(RemoveDir("the mirror's empty mountpoint in BASE", t.mirror))
    if t.last:
        # The guest's record goes with STATE, last of all: a destroy killed before that
        # still finds the guest, so the next one completes the job.
        return ops + plan_unbase(layout)
    if t.record:
        ops.append(RemoveFile("the guest's record", layout.record(t.name)))
    if t.claim:
        ops.append(RemoveFile("the guest's claim on its mirror", layout.claim(t.name)))
    ops.append(RemoveDir("the guest's nsfs directory, once empty", layout.ns_dir(t.name)))
    ops.append(RemoveDir("the guest's state directory, once empty", layout.guest_dir(t.name)))
    return ops


def plan_unbase(layout: Layout) -> list[Op]:
    """After the last guest: the nursery, BASE and STATE go, so the host's mount table is as
    it was before the first create. Idempotent (each step skips what is gone). A plain
    unmount, not a private detach: where the parent of BASE or STATE is shared (a nested
    mirrormount, a systemd host), the copies our mount made in the parent's peers go too."""
    return [
        ReleaseNsFile("the nursery: no guest is left to clone", layout.nursery_file),
        Unmount("BASE, the last guest gone; its copies in the peers of its parent, if any, "
                "go with it", layout.base, LABELS["BASE"]),
        Unmount("STATE, with the last record in it, likewise", layout.state,
                LABELS["STATE"]),
    ]


# ----------------------------------------------------------------------------- mount/umount
def plan_mount(rec: GuestRecord, layout: Layout, source: str, target: str,
               fstype: str | None, opts: MountOptions, bind: bool,
               guest_only: bool = False, resolved: str | None = None,
               under: tuple[int, int] = (0, 0)) -> list[Op]:
    """One mount into a guest; ``opts`` is the parsed -o (mountopts.parse). ``resolved`` is
    TARGET as the kernel resolved it in the guest (symlinks followed); a guest-only mount
    records it in the guest's record. ``under``: the ids of the mounts on top of that path
    now, in the guest and in the mirror: the record marks a guest-only mount as pending
    with them first, so whatever a kill leaves above them is known to be ours."""
    from .mountops import MountGuestOnly, MountInto, RecoverGuestOnly
    if not guest_only:
        return [MountInto("mount through the mirror: BASE/NAME and the guest are one peer "
                          "group, so the mount appears on both sides", rec.name, rec.mirror,
                          target, source, fstype, opts, bind, resolved or "")]
    path = resolved or target
    holder = layout.ns_file(rec.name, "mnt")
    ops: list[Op] = []
    if rec.pending:
        ops.append(RecoverGuestOnly("an earlier guest-only mount was interrupted: take away "
                                    "what it left (private, so nothing else is touched)",
                                    holder, rec.mirror, rec.pending))
        if rec.pending.get("path") == path:     # ids measured before the leftovers came
            under = (int(rec.pending.get("guest_under", 0)),
                     int(rec.pending.get("host_under", 0)))
    clean = replace(rec, pending=None)
    started = replace(clean, pending={"path": path, "guest_under": under[0],
                                      "host_under": under[1]})
    done = replace(clean, guest_only=tuple(sorted({*rec.guest_only, path})))
    record = layout.record(rec.name)
    return ops + [
        WriteRecord("mark the guest-only mount as in progress, so that a kill midway is "
                    "cleaned up by the next call", record, started.to_json(), rec.to_json()),
        MountGuestOnly("a mount in the guest only: on a private self-bind, so nothing "
                       "propagates to the host, which keeps nothing to pin",
                       rec.name, rec.mirror, holder, path, source, fstype, opts, bind),
        WriteRecord("remember the guest-only path in the record", record, done.to_json(),
                    started.to_json()),
    ]


def plan_umount(rec: GuestRecord, layout: Layout, target: str, lazy: bool,
                resolved: str | None = None) -> list[Op]:
    """Unmount in the guest (the mirror follows). For a guest-only path, also drop the
    self-bind it stood on and the record's entry."""
    from .mountops import DropSelfBind, UmountIn
    holder = layout.ns_file(rec.name, "mnt")
    path = resolved or target
    ops: list[Op] = [UmountIn("unmount inside the guest; the mirror's copy follows by "
                              "propagation", rec.name, holder, target, lazy,
                              path in rec.guest_only)]
    if path in rec.guest_only:
        ops.append(DropSelfBind("a guest-only mount's private self-bind, if the kernel left "
                                "it", holder, path))
        new = replace(rec, guest_only=tuple(p for p in rec.guest_only if p != path))
        ops.append(WriteRecord("forget the guest-only path", layout.record(rec.name),
                               new.to_json(), rec.to_json()))
    return ops

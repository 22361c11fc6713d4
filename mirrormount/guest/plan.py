"""Pure planning: a request plus the current mount table become an ordered list of operations.

The same list is printed by ``--dry-run`` (as mount(8)/unshare(1)/pivot_root(8) lines, each
with the reason) and carried out by ``apply.py``, so what is printed is what is done.
Nothing here touches the system.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field, replace

from ..errors import UsageError
from ..kernel.mountinfo import MountTable, is_under
from .model import KIND, CreateRequest, Layout, validate_name, validate_propagation
from .owner import LABELS, layout_problems
from .state import GuestRecord


# ----------------------------------------------------------------------------- operations
# Operations are frozen and never compared (eq=False): each method a dataclass generates
# is compiled at import, and every CLI command that plans pays for it.
@dataclass(frozen=True, eq=False)
class Op:
    """One step. ``why`` is printed beside the shell line: it says why, in propagation terms."""

    why: str

    def shell(self) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class MakeDir(Op):
    path: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class MountTmpfs(Op):
    path: str = ""
    source: str = ""
    options: str = "mode=0700"

    def shell(self) -> list[str]:
        return [f"mount -t tmpfs -o {self.options} {self.source} {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class SetPropagation(Op):
    path: str = ""
    flag: str = "private"        # private | shared | slave | unbindable
    recursive: bool = False
    undo_flag: str | None = None  # what to restore if a later step fails

    def shell(self) -> list[str]:
        r = "r" if self.recursive else ""
        return [f"mount --make-{r}{self.flag} {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class RBind(Op):
    source: str = ""
    target: str = ""

    def shell(self) -> list[str]:
        return [f"mount --rbind {shlex.quote(self.source)} {shlex.quote(self.target)}"]


@dataclass(frozen=True, eq=False)
class StartNursery(Op):
    """A persistent, nearly empty mount namespace held by an nsfs bind at ``holder``.
    Guests are cloned from it, so a create copies ~1 mount instead of the whole host table."""

    holder: str = ""
    root: str = ""   # where its tmpfs is mounted, in the child's private copy only

    def shell(self) -> list[str]:
        q = shlex.quote
        root = q(self.root)
        inner = (f"mkdir -p {root}; mount -t tmpfs -o mode=0700,size=64k mirrormount-nursery "
                 f"{root}; mkdir {root}/newroot {root}/old; cd {root}; pivot_root . old; "
                 "umount -l /old; exec sleep infinity")
        return [
            f"touch {q(self.holder)}",
            f"unshare --mount --propagation private sh -e -c {q(inner)} &",
            "# bound from the host, so the nsfs file lands in the host's table",
            f"mount --bind /proc/$!/ns/mnt {q(self.holder)}; kill $!",
        ]


@dataclass(frozen=True, eq=False)
class SpawnGuest(Op):
    """Fork a child that builds the guest's namespaces from the nursery; bind them to STATE."""

    name: str = ""
    mirror: str = ""
    nursery: str = ""
    ns_dir: str = ""
    kinds: tuple[str, ...] = ("mnt",)
    hostname: str | None = None
    put_old: str = "mnt"  # an existing directory of the rootfs, used only during pivot_root

    def shell(self) -> list[str]:
        q = shlex.quote
        flags = " ".join(KIND[k].unshare_opt for k in self.kinds)
        old = f"/{self.put_old}"
        steps = [
            "# open_tree(MIRROR, OPEN_TREE_CLONE|AT_RECURSIVE) then move_mount(tree -> /newroot):",
            "# a detached copy whose mounts are peers of the mirror; no shell equivalent, it is",
            f"# what `mount --rbind {self.mirror} /newroot` would do from a namespace seeing both.",
            "mount --rbind MIRROR_TREE /newroot",
            f"# put_old must not be on a shared mount: a private self-bind of {old}, for a moment",
            f"mount --bind /newroot{old} /newroot{old}",
            f"mount --make-private /newroot{old}",
            f"cd /newroot && pivot_root . {self.put_old}",
            "cd /",
            f"mount --make-rprivate {old}     # never let the detach propagate (findings §3)",
            f"umount -l {old}                 # the nursery's tmpfs",
            f"umount {old}                    # the self-bind; its host copy goes with it",
        ]
        if self.hostname:
            steps.append(f"hostname {q(self.hostname)}")
        if "pid" in self.kinds:
            steps.append("mount -t proc proc /proc   # by the guest's PID 1 (mirrormount reaper)")
        # Trailing comments explain each step here but must not reach `sh -c`, where the
        # first '#' would swallow every later step.
        inner = "; ".join(s.split("  #")[0].rstrip() for s in steps if not s.startswith("#"))
        lines = [f"# guest {self.name}: " + s[2:] for s in steps if s.startswith("#")]
        lines.append(f"nsenter --mount={q(self.nursery)} unshare {flags} "
                     f"--propagation unchanged sh -e -c {q(inner)} &")
        for kind in self.kinds:
            # with --fork, $! is unshare itself: its children are in the new pid namespace
            src = "pid_for_children" if kind == "pid" else kind
            lines.append(f"touch {q(self.ns_dir)}/{kind}; "
                         f"mount --bind /proc/$!/ns/{src} {q(self.ns_dir)}/{kind}")
        return lines


@dataclass(frozen=True, eq=False)
class WriteRecord(Op):
    """The guest's record, whole: everything it holds is known when planning, so it travels
    here and nothing fills it in later. ``previous`` is what to restore on rollback (None:
    there was no record, so rollback removes it)."""

    path: str = ""
    record: dict = field(default_factory=dict, hash=False, compare=False)
    previous: dict | None = field(default=None, hash=False, compare=False)

    def shell(self) -> list[str]:
        q = shlex.quote
        text = json.dumps(self.record, sort_keys=True)
        return [f"printf '%s\\n' {q(text)} > {q(self.path)}.tmp && "
                f"mv {q(self.path)}.tmp {q(self.path)}"]


# ----------------------------------------------------------------------------- teardown
# destroy's steps undo nothing: a detached mirror cannot be put back. Each is idempotent
# instead, so a destroy that failed or was killed midway is completed by the next one.
@dataclass(frozen=True, eq=False)
class StopProcesses(Op):
    pids: tuple[int, ...] = ()
    grace: float = 0.0          # seconds between TERM and KILL; 0: KILL at once

    def shell(self) -> list[str]:
        pids = " ".join(map(str, self.pids))
        if self.grace > 0:
            return [f"kill -TERM {pids}; sleep {self.grace:g}; kill -KILL {pids}"]
        return [f"kill -KILL {pids}"]


@dataclass(frozen=True, eq=False)
class ReleaseNsFile(Op):
    path: str = ""

    def shell(self) -> list[str]:
        return [f"umount -l {shlex.quote(self.path)}; rm -f {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class Detach(Op):
    """Private first, then detach: a detach of a shared tree would propagate the unmount
    into every peer (kernel-findings §3), i.e. into the guest."""

    path: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote(self.path)
        return [f"mount --make-rprivate {q}", f"umount -l {q}"]


@dataclass(frozen=True, eq=False)
class Unmount(Op):
    """Unmount BASE or STATE, only while it is still mirrormount's tmpfs (``label``)."""

    path: str = ""
    label: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"findmnt -n -o SOURCE {q(self.path)} | grep -qx {q(self.label)} && "
                f"umount -l {q(self.path)}"]


@dataclass(frozen=True, eq=False)
class RemoveDir(Op):
    """rmdir, never rm -r: a directory that still holds files (or a mount) stays."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"rmdir {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class RemoveFile(Op):
    path: str = ""

    def shell(self) -> list[str]:
        return [f"rm -f {shlex.quote(self.path)}"]


# ----------------------------------------------------------------------------- mounts
@dataclass(frozen=True, eq=False)
class MountInto(Op):
    """A mount on the host side of the mirror, at TARGET resolved inside the guest's root
    (openat2 RESOLVE_IN_ROOT, so a guest symlink cannot lead out). The mirror's mounts are
    shared with the guest's, so it appears in the guest at TARGET; its undo detaches it
    without making it private first, so the unmount reaches the guest's copy too."""

    name: str = ""
    mirror: str = ""
    target: str = ""            # guest path
    source: str = ""
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    bind: bool = False
    options: str | None = None  # as typed, for the shell line

    def shell(self) -> list[str]:
        q = shlex.quote
        where = q(self.mirror.rstrip("/") + "/" + self.target.lstrip("/"))
        opts = f" -o {q(self.options)}" if self.options else ""
        kind = "--bind" if self.bind else f"-t {q(self.fstype or 'auto')}"
        return [f"# TARGET is resolved inside the guest's root: guest symlinks stay inside",
                f"mount {kind}{opts} {q(self.source)} {where}"]


@dataclass(frozen=True, eq=False)
class MountGuestOnly(Op):
    """A mount the host mirror never sees (guest/guestonly.py explains each step)."""

    name: str = ""
    mirror: str = ""
    holder: str = ""            # the guest's mnt nsfs file
    scratch: str = ""           # a private scratch dir inside STATE for a new filesystem
    target: str = ""            # guest path, as resolved in the guest
    source: str = ""
    fstype: str | None = None
    flags: int = 0
    data: str | None = None
    bind: bool = False
    options: str | None = None

    def shell(self) -> list[str]:
        q = shlex.quote
        t = q(self.target)
        opts = f" -o {q(self.options)}" if self.options else ""
        made = (f"mount --bind{opts} {q(self.source)}" if self.bind
                else f"mount -t {q(self.fstype or 'auto')}{opts} {q(self.source)}")
        host = q(self.mirror.rstrip("/") + self.target)
        return [f"# 1. host: the filesystem as a detached, private tree ({made})",
                f"nsenter --mount={q(self.holder)} sh -e -c "
                + q(f"mount --bind {t} {t}; mount --make-private {t}; "
                    f"# 2. attach the tree on the private self-bind: nothing propagates"),
                f"umount -l {host}    # 3. its copy on the host; the guest keeps the mount"]


@dataclass(frozen=True, eq=False)
class UmountIn(Op):
    """Unmount a guest path from inside the guest's namespace; the mirror follows by
    propagation. EBUSY is reported as busy (exit 3)."""

    name: str = ""
    holder: str = ""
    target: str = ""
    lazy: bool = False
    # A guest-only path still in the record: if it is no mount point any more (a call
    # killed after unmounting), the step is done already and only the record is left.
    gone_ok: bool = False

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"nsenter --mount={q(self.holder)} umount {'-l ' if self.lazy else ''}"
                f"{q(self.target)}" + ("   # done already if no mount is there"
                                       if self.gone_ok else "")]


@dataclass(frozen=True, eq=False)
class DropSelfBind(Op):
    """After unmounting a guest-only mount: remove the private self-bind it stood on, if a
    kernel left it (guestonly.py, step 3)."""

    holder: str = ""
    target: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"nsenter --mount={q(self.holder)} umount -l {q(self.target)}"
                "   # only if the top mount there is the private self-bind"]


@dataclass(frozen=True, eq=False)
class RecoverGuestOnly(Op):
    """Before a guest-only mount: clean up one that was killed midway (the record's
    ``pending`` entry), so the new one starts from the table as it was before that one."""

    holder: str = ""
    mirror: str = ""
    scratch: str = ""
    pending: dict = field(default_factory=dict, hash=False, compare=False)

    def shell(self) -> list[str]:
        q = shlex.quote
        path = str(self.pending.get("path", ""))
        return [f"umount -l {q(self.scratch)}; rmdir {q(self.scratch)}   # if left",
                f"nsenter --mount={q(self.holder)} umount -l {q(path)}"
                "   # each private mount stacked there by the interrupted call",
                f"umount -l {q(self.mirror.rstrip('/') + path)}"
                "   # its empty self-bind in the mirror, if left"]


def render(ops: list[Op]) -> str:
    """The dry-run text: each operation's shell lines, the reason as a trailing comment."""
    out = []
    for number, op in enumerate(ops, start=1):
        out.append(f"# step {number}: {op.why}")
        out.extend(op.shell())
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- planners
@dataclass(frozen=True)
class HostFacts:
    """What the planner needs to know about the host, gathered by the caller."""

    table: MountTable
    existing: frozenset[str] = frozenset()
    nursery_ready: bool = False
    put_old: str = "mnt"       # chosen by the caller from the rootfs's directories


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
    ops.append(SpawnGuest(
        "the guest's namespaces, cloned from the nursery and pivot_rooted into the mirror; "
        "kept alive by nsfs binds, so the guest needs no process",
        req.name, mirror, layout.nursery_file, layout.ns_dir(req.name), req.all_kinds,
        req.hostname, facts.put_old))
    record = GuestRecord(name=req.name, mirror=mirror, rootfs=req.rootfs,
                         kinds=req.all_kinds, propagation=req.propagation,
                         hostname=req.hostname, created=created)
    ops.append(WriteRecord("the guest's record, written atomically (temp file + rename), "
                           "last: a guest with a record is a complete guest",
                           layout.record(req.name), record.to_json()))
    return ops


# ----------------------------------------------------------------------------- destroy
@dataclass(frozen=True)
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
               fstype: str | None, flags: int, data: str | None, bind: bool,
               options: str | None, guest_only: bool = False,
               resolved: str | None = None, under: tuple[int, int] = (0, 0)) -> list[Op]:
    """One mount into a guest. A guest-only mount also records its path, as resolved in the
    guest (``resolved``), in the guest's record. ``under``: the ids of the mounts on top of
    that path now, in the guest and in the mirror: the record marks the mount as pending
    with them first, so whatever a kill leaves above them is known to be ours."""
    if not guest_only:
        return [MountInto("mount through the mirror: BASE/NAME and the guest are one peer "
                          "group, so the mount appears on both sides", rec.name, rec.mirror,
                          target, source, fstype, flags, data, bind, options)]
    path = resolved or target
    holder = layout.ns_file(rec.name, "mnt")
    scratch = f"{layout.state.rstrip('/')}/.guest-only.{rec.name}"
    ops: list[Op] = []
    if rec.pending:
        ops.append(RecoverGuestOnly("an earlier guest-only mount was interrupted: take away "
                                    "what it left (private, so nothing else is touched)",
                                    holder, rec.mirror, scratch, rec.pending))
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
                       rec.name, rec.mirror, holder, scratch, path, source, fstype, flags,
                       data, bind, options),
        WriteRecord("remember the guest-only path in the record", record, done.to_json(),
                    started.to_json()),
    ]


def plan_umount(rec: GuestRecord, layout: Layout, target: str, lazy: bool,
                resolved: str | None = None) -> list[Op]:
    """Unmount in the guest (the mirror follows). For a guest-only path, also drop the
    self-bind it stood on and the record's entry."""
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

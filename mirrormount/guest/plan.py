"""Pure planning: a request plus the current mount table become an ordered list of operations.

The same list is printed by ``--dry-run`` (as mount(8)/unshare(1)/pivot_root(8) lines, each
with the reason) and carried out by ``apply.py``, so what is printed is what is done.
Nothing here touches the system.
"""
from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field, replace

from ..errors import UsageError
from ..kernel.mountinfo import MountTable, is_under
from .model import KIND, CreateRequest, Layout, validate_name, validate_propagation
from .mountopts import MountOptions
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
def _mount_command(source: str, fstype: str | None, opts: MountOptions, bind: bool,
                   where: str | None = None) -> str:
    """The mount(8) command that makes the same mount, options as typed (``where``: the
    target, already quoted; None to leave it out)."""
    q = shlex.quote
    words = ["mount", "--bind" if bind else f"-t {q(fstype or 'auto')}"]
    if opts.typed:
        words.append(f"-o {q(opts.typed)}")
    words.append(q(source))
    if where is not None:
        words.append(where)
    return " ".join(words)


def _how(fstype: str | None, opts: MountOptions, bind: bool) -> str:
    """What the executor really calls (detached.py), for the comment above the command."""
    made = ("open_tree(SOURCE, OPEN_TREE_CLONE)" if bind else
            f"fsopen({fstype}) + fsconfig(source{''.join(', ' + k for k in opts.sb_flags)}"
            f"{''.join(', ' + k for k, _ in opts.fs_params)}) + fsmount")
    return (f"# {made}, then mount_setattr(attributes, private) on the detached tree: the "
            "kernel judges every option before anything is attached")


@dataclass(frozen=True, eq=False)
class MountInto(Op):
    """A mount on the host side of the mirror, at TARGET resolved inside the guest's root
    (openat2 RESOLVE_IN_ROOT, so a guest symlink cannot lead out). Built whole as a detached,
    private tree first (detached.py), then attached under the mirror, whose mounts are shared
    with the guest's: it gets a peer group of its own with its copy in the guest, at TARGET.
    Its undo detaches it without making it private first, so the unmount reaches the guest's
    copy too."""

    name: str = ""
    mirror: str = ""
    target: str = ""            # guest path, as typed
    source: str = ""
    fstype: str | None = None
    opts: MountOptions = field(default_factory=MountOptions)
    bind: bool = False
    resolved: str = ""          # guest path, as the kernel resolved it when planning

    def shell(self) -> list[str]:
        path = self.resolved or self.target
        where = shlex.quote(self.mirror.rstrip("/") + "/" + path.lstrip("/"))
        lines = ["# TARGET is resolved inside the guest's root: guest symlinks stay inside",
                 _how(self.fstype, self.opts, self.bind)]
        cmd = _mount_command(self.source, self.fstype, self.opts, self.bind, where)
        if self.resolved and self.resolved != typed_path(self.target):
            cmd += f"    # typed {self.target}: a symlink in the guest"
        return lines + [cmd]


def typed_path(target: str) -> str:
    """TARGET as typed, made absolute and lexically normal: what it names if no symlink is
    in the way."""
    return posixpath.normpath("/" + target.lstrip("/"))


@dataclass(frozen=True, eq=False)
class MountGuestOnly(Op):
    """A mount the host mirror never sees (guest/guestonly.py explains each step)."""

    name: str = ""
    mirror: str = ""
    holder: str = ""            # the guest's mnt nsfs file
    target: str = ""            # guest path, as resolved in the guest
    source: str = ""
    fstype: str | None = None
    opts: MountOptions = field(default_factory=MountOptions)
    bind: bool = False

    def shell(self) -> list[str]:
        q = shlex.quote
        t = q(self.target)
        made = _mount_command(self.source, self.fstype, self.opts, self.bind)
        host = q(self.mirror.rstrip("/") + self.target)
        return [f"# 1. host: the filesystem as a detached, private tree ({made})",
                _how(self.fstype, self.opts, self.bind),
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

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"nsenter --mount={q(self.holder)} umount {'-l ' if self.lazy else ''}"
                f"{q(self.target)}"]


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


def _is_self_mount(table: MountTable, path: str, *, private: bool, unbindable: bool) -> bool:
    m = table.at(path)
    if m is None:
        return False
    ok = True
    if private:
        ok &= m.shared is None and m.master is None
    if unbindable:
        ok &= m.unbindable
    return ok


def plan_base(layout: Layout, table: MountTable) -> list[Op]:
    """BASE and STATE: each a tmpfs of its own, private and unbindable (findings §5, §5b)."""
    ops: list[Op] = []
    for path, label, what in ((layout.base, "mirrormount-base", "BASE"),
                              (layout.state, "mirrormount-state", "STATE")):
        if _is_self_mount(table, path, private=True, unbindable=True):
            continue
        if table.at(path) is None:
            ops.append(MakeDir(f"{what}: the directory", path))
            ops.append(MountTmpfs(
                f"{what}: a tmpfs of its own, so the directory beneath stays empty and a guest "
                "whose rootfs is / sees no names in it (findings §5b)", path, label,
                "mode=0755" if what == "BASE" else "mode=0700"))
        ops.append(SetPropagation(
            f"{what}: private, so mounts made here never propagate to the host's peers", path,
            "private"))
        ops.append(SetPropagation(
            f"{what}: unbindable, so an rbind of / prunes it: guests never see other guests "
            "or nsfs files (an nsfs file inside a tree makes move_mount fail with ELOOP)",
            path, "unbindable"))
    return ops


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
        # Host mounts can only flow into the mirror from mounts that are shared. Make each
        # private host mount under the rootfs shared (its own new group), as systemd does.
        seen: set[str] = set()
        for m in table.under(req.rootfs):
            # A mountpoint names only its topmost mount: one make-shared per path.
            if m.mountpoint in seen:
                continue
            seen.add(m.mountpoint)
            if m.shared is None and m.master is None and not m.unbindable and not (
                    is_under(m.mountpoint, layout.base) or is_under(m.mountpoint, layout.state)):
                ops.append(SetPropagation(
                    "mirror+host: a private host mount sends nothing to its copies; make it "
                    "shared so the mirror can become its slave", m.mountpoint, "shared",
                    undo_flag="private"))
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
    ops.append(MakeDir("the guest's state directory (0700)", layout.guest_dir(req.name)))
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
    mirror_mounted: bool = False
    mirror_dir: bool = False            # BASE/NAME exists as a plain directory in BASE
    record: bool = False
    grace: float = 5.0


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
    mirror = layout.mirror(t.name)
    if t.mirror_mounted:
        ops.append(Detach("the mirror, made private first so that its unmount propagates "
                          "into no peer (findings §3)", mirror))
    if t.mirror_mounted or t.mirror_dir:
        ops.append(RemoveDir("the mirror's empty mountpoint in BASE", mirror))
    if t.record:
        ops.append(RemoveFile("the guest's record", layout.record(t.name)))
    ops.append(RemoveDir("the guest's nsfs directory, once empty", layout.ns_dir(t.name)))
    ops.append(RemoveDir("the guest's state directory, once empty", layout.guest_dir(t.name)))
    return ops


# ----------------------------------------------------------------------------- mount/umount
def plan_mount(rec: GuestRecord, layout: Layout, source: str, target: str,
               fstype: str | None, opts: MountOptions, bind: bool,
               guest_only: bool = False, resolved: str | None = None) -> list[Op]:
    """One mount into a guest; ``opts`` is the parsed -o (mountopts.parse). ``resolved`` is
    TARGET as the kernel resolved it in the guest (symlinks followed); a guest-only mount
    records it in the guest's record."""
    if not guest_only:
        return [MountInto("mount through the mirror: BASE/NAME and the guest are one peer "
                          "group, so the mount appears on both sides", rec.name, rec.mirror,
                          target, source, fstype, opts, bind, resolved or "")]
    path = resolved or target
    holder = layout.ns_file(rec.name, "mnt")
    new = replace(rec, guest_only=tuple(sorted({*rec.guest_only, path})))
    return [
        MountGuestOnly("a mount in the guest only: on a private self-bind, so nothing "
                       "propagates to the host, which keeps nothing to pin",
                       rec.name, rec.mirror, holder, path, source, fstype, opts, bind),
        WriteRecord("remember the guest-only path in the record", layout.record(rec.name),
                    new.to_json(), rec.to_json()),
    ]


def plan_umount(rec: GuestRecord, layout: Layout, target: str, lazy: bool,
                resolved: str | None = None) -> list[Op]:
    """Unmount in the guest (the mirror follows). For a guest-only path, also drop the
    self-bind it stood on and the record's entry."""
    holder = layout.ns_file(rec.name, "mnt")
    ops: list[Op] = [UmountIn("unmount inside the guest; the mirror's copy follows by "
                              "propagation", rec.name, holder, target, lazy)]
    path = resolved or target
    if path in rec.guest_only:
        ops.append(DropSelfBind("a guest-only mount's private self-bind, if the kernel left "
                                "it", holder, path))
        new = replace(rec, guest_only=tuple(p for p in rec.guest_only if p != path))
        ops.append(WriteRecord("forget the guest-only path", layout.record(rec.name),
                               new.to_json(), rec.to_json()))
    return ops

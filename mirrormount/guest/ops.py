"""The operations a plan is made of: each a frozen dataclass that says why (in propagation
terms) and how (``shell()``: the equivalent mount(8)/unshare(1)/nsenter(1) lines that
``--dry-run`` prints). ``plan.py`` builds lists of them, ``apply.py`` carries them out.
Nothing here touches the system.
"""
from __future__ import annotations

import json
import posixpath
import shlex
from dataclasses import dataclass, field, fields, is_dataclass

from .model import KIND
from .mountopts import MountOptions


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
    """mkdir -p of a directory mirrormount owns (BASE, STATE, a guest's own); undone if it
    made it."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class MountTmpfs(Op):
    """A tmpfs of mirrormount's own (BASE, STATE, the nursery's holder)."""

    path: str = ""
    source: str = ""
    options: str = "mode=0700"

    def shell(self) -> list[str]:
        return [f"mount -t tmpfs -o {self.options} {self.source} {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class SetPropagation(Op):
    """A propagation change on a path (MS_PRIVATE, MS_SHARED, ...), with what to restore on
    undo."""

    path: str = ""
    flag: str = "private"        # private | shared | slave | unbindable
    recursive: bool = False
    undo_flag: str | None = None  # what to restore if a later step fails

    def shell(self) -> list[str]:
        r = "r" if self.recursive else ""
        return [f"mount --make-{r}{self.flag} {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class RBind(Op):
    """A recursive bind (the mirror: ROOTFS onto BASE/NAME)."""

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
    confine: str = "none"           # model.CONFINE_MODES: for the guest's init (reaper)
    drop_caps: tuple[str, ...] = ()
    # STATE, when the guest has a cgroup of its own (guest/cgroup.py finds it from STATE):
    # the child joins it before it unshares, so the cgroup namespace is rooted there.
    cgroup_state: str = ""
    init: tuple[str, ...] = ()      # the user's PID 1 (argv); () for mirrormount's reaper
    # (kind, nsfs pin of another guest): setns onto it instead of unsharing that kind
    joins: tuple[tuple[str, str], ...] = ()

    def shell(self) -> list[str]:
        q = shlex.quote
        joined = {k for k, _ in self.joins}
        flags = " ".join(KIND[k].unshare_opt for k in self.kinds if k not in joined)
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
        for kind, pin in self.joins:
            steps.append(f"# {kind}: shared with another guest: setns onto its pin {pin} "
                         f"(nsenter --{KIND[kind].unshare_opt.lstrip('-')}={pin})")
        if self.hostname:
            steps.append(f"hostname {q(self.hostname)}")
        if "pid" in self.kinds:
            who = (f"the guest's init ({shlex.join(self.init)})" if self.init
                   else "the guest's PID 1 (mirrormount reaper)")
            steps.append("umount -l /proc            # the host's /proc, beneath: no way back to "
                         "the host's processes")
            steps.append(f"mount -t proc proc /proc   # by {who}")
            steps.extend(confinement_lines(self.confine, self.drop_caps,
                                           "the init" if self.init else "the reaper"))
            if self.init:
                steps.append(f"exec {shlex.join(self.init)}   # PID 1, once the pins are bound")
        # Trailing comments explain each step here but must not reach `sh -c`, where the
        # first '#' would swallow every later step.
        if self.cgroup_state:
            steps.insert(0, "# first, into the guest's cgroup, so that its cgroup namespace is "
                            "rooted there: echo 0 > CGROUP/cgroup.procs")
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


def confinement_lines(confine: str, drop_caps: tuple[str, ...], who: str) -> list[str]:
    """Comment lines saying what `who` will run under (no shell has a seccomp verb)."""
    out = []
    if confine == "mirror":
        out.append(f"# {who} and all it starts: seccomp refuses mount(2) with MS_PRIVATE, "
                   "MS_SLAVE or MS_UNBINDABLE (EPERM), mount_setattr (ENOSYS) and "
                   "open_by_handle_at (EPERM): the guest cannot cut itself off its mirror")
    if drop_caps:
        out.append(f"# {who}: capabilities dropped from the bounding set: "
                   f"{','.join(drop_caps)}  (like setpriv --bounding-set -{',-'.join(drop_caps)})")
    return out


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
    """TERM, a grace period, then KILL, for the processes inside a guest."""

    pids: tuple[int, ...] = ()
    grace: float = 0.0          # seconds between TERM and KILL; 0: KILL at once

    def shell(self) -> list[str]:
        pids = " ".join(map(str, self.pids))
        if self.grace > 0:
            return [f"kill -TERM {pids}; sleep {self.grace:g}; kill -KILL {pids}"]
        return [f"kill -KILL {pids}"]


@dataclass(frozen=True, eq=False)
class MakeCgroup(Op):
    """The guest's own cgroup (guest/cgroup.py: where, and why there). Nothing when the
    cgroup v2 hierarchy is missing or read-only (doctor says so)."""

    name: str = ""
    state: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p /sys/fs/cgroup/mirrormount/{shlex.quote(self.name)}.STATE_DEV"
                "    # STATE_DEV: MAJ-MIN of STATE's tmpfs; cgroup2 may be at .../unified"]


@dataclass(frozen=True, eq=False)
class RemoveCgroup(Op):
    """Remove the guest's cgroup once its processes are gone (rmdir; destroy, rollback)."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"rmdir {shlex.quote(self.path)}"]


@dataclass(frozen=True, eq=False)
class ReleaseNsFile(Op):
    """Detach an nsfs bind and remove its file: the namespace lives on only if something
    else holds it."""

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
    """Remove a file mirrormount wrote (a record, a claim)."""

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
    # A net namespace's nsfs file: the filesystem is made by a child that entered it. sysfs
    # shows the net namespace of the process that mounts it (fs/sysfs/mount.c takes
    # kobj_ns_grab_current at fs_context creation), as `ip netns exec` relies on.
    netns: str = ""

    def shell(self) -> list[str]:
        path = self.resolved or self.target
        where = shlex.quote(self.mirror.rstrip("/") + "/" + path.lstrip("/"))
        lines = ["# TARGET is resolved inside the guest's root: guest symlinks stay inside",
                 _how(self.fstype, self.opts, self.bind)]
        cmd = _mount_command(self.source, self.fstype, self.opts, self.bind, where)
        if self.netns:
            lines.append("# made in the guest's net namespace: it lists the guest's own "
                         "interfaces")
            cmd = f"nsenter --net={shlex.quote(self.netns)} {cmd}"
        if self.resolved and self.resolved != typed_path(self.target):
            cmd += f"    # typed {self.target}: a symlink in the guest"
        return lines + [cmd]


@dataclass(frozen=True, eq=False)
class MakeTarget(Op):
    """`mount --mkdir`: TARGET's missing directories (mode 0755), made one by one under
    ``parent`` (resolved inside the guest's root when planning) with the mirror, or for
    --guest-only the guest's own /, as root (guest/mkdirs.py). Undone by removing them."""

    name: str = ""
    mirror: str = ""
    holder: str = ""            # the guest's mnt nsfs file, when made in the guest
    parent: str = ""            # guest path, resolved
    names: tuple[str, ...] = ()

    def shell(self) -> list[str]:
        path = posixpath.join(self.parent, *self.names)
        if self.holder:
            return ["# missing directories of TARGET, inside the guest's root (guest-only: "
                    "made where the guest sees them)",
                    f"nsenter --mount={shlex.quote(self.holder)} mkdir -p -m 0755 "
                    + shlex.quote(path)]
        where = self.mirror.rstrip("/") + path
        return ["# missing directories of TARGET, inside the guest's root: in the mirror, "
                "which the guest shares", f"mkdir -p -m 0755 {shlex.quote(where)}"]


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
    pending: dict = field(default_factory=dict, hash=False, compare=False)

    def shell(self) -> list[str]:
        q = shlex.quote
        path = str(self.pending.get("path", ""))
        return [f"nsenter --mount={q(self.holder)} umount -l {q(path)}"
                "   # each private mount stacked there by the interrupted call",
                f"umount -l {q(self.mirror.rstrip('/') + path)}"
                "   # its empty self-bind in the mirror, if left"]


# ----------------------------------------------------------------------------- repair
# A mirror mount lives on two sides: "host" (MIRROR + PATH, in the host's namespace) and
# "guest" (PATH, in the guest's). Host paths are resolved inside the mirror from an fd
# (openat2 RESOLVE_IN_ROOT), never as a string: a guest that swapped a directory of its
# tree for a symlink to / must not make mirrormount change the host's own mounts.
SIDES = ("host", "guest")


def _where(side: str, mirror: str, holder: str, path: str, cmd: str) -> str:
    """`cmd PATH` run on one side, as shell text."""
    q = shlex.quote
    if side == "host":
        return f"{cmd} {q(mirror.rstrip('/') + (path if path != '/' else ''))}"
    return f"nsenter --mount={q(holder)} {cmd} {q(path)}"


@dataclass(frozen=True, eq=False)
class Propagate(Op):
    """One mount's propagation, on one side, not recursive. ``undo_flag``: what rollback
    sets it back to (its kind before; None: nothing to undo)."""

    mirror: str = ""
    holder: str = ""
    side: str = "host"
    path: str = "/"             # guest path
    flag: str = "shared"        # private | shared | slave | unbindable
    undo_flag: str | None = None

    def shell(self) -> list[str]:
        return [_where(self.side, self.mirror, self.holder, self.path,
                       f"mount --make-{self.flag}")]


@dataclass(frozen=True, eq=False)
class JoinGroup(Op):
    """The mount at PATH on side ``to`` (private) joins the peer group of the mount at PATH
    on the other side: move_mount(from, to, MOVE_MOUNT_SET_GROUP), Linux 5.15+ (findings
    §13). Nothing propagates when a group is joined; mounts made afterwards flow both ways.
    Undone by making the target private again."""

    mirror: str = ""
    holder: str = ""
    to: str = "guest"
    path: str = "/"

    def shell(self) -> list[str]:
        src = "host" if self.to == "guest" else "guest"
        what = {"host": self.mirror.rstrip("/") + (self.path if self.path != "/" else ""),
                "guest": f"{self.path} in the guest ({self.holder})"}
        return [f"# move_mount({what[src]} -> {what[self.to]}, MOVE_MOUNT_F_EMPTY_PATH|"
                "MOVE_MOUNT_SET_GROUP): no mount(8) verb does this"]


@dataclass(frozen=True, eq=False)
class CopyTree(Op):
    """Re-create on side ``to`` a tree of mounts that only the other side has: a recursive
    clone of it (open_tree OPEN_TREE_CLONE|AT_RECURSIVE; the clone of a shared mount is its
    peer), attached at the same path with move_mount. The parent on side ``to`` is not a
    peer of the source's parent at that moment (the plan sees to it), so the attach
    propagates nowhere. Undone by detaching the copy privately."""

    mirror: str = ""
    holder: str = ""
    to: str = "guest"
    path: str = "/"
    mounts: int = 1             # how many mounts the tree holds (for the report)

    def shell(self) -> list[str]:
        src = "host" if self.to == "guest" else "guest"
        return [f"# open_tree({src}:{self.path}, OPEN_TREE_CLONE|AT_RECURSIVE), then "
                f"move_mount onto {self.to}:{self.path} ({self.mounts} mount(s)); in "
                "mount(8) words:",
                _where(self.to, self.mirror, self.holder, self.path,
                       f"mount --rbind {src.upper()}:{shlex.quote(self.path)}")]


def render(ops: list[Op]) -> str:
    """The dry-run text: each operation's shell lines, the reason as a trailing comment."""
    out = []
    for number, op in enumerate(ops, start=1):
        out.append(f"# step {number}: {op.why}")
        out.extend(op.shell())
    return "\n".join(out) + "\n"


def op_json(op: Op) -> dict:
    """One operation for `--dry-run --json`: {"op": its class name, then every field by
    name ("why" first), then "shell": the lines --dry-run prints for it}. Values as JSON
    has them: tuples become lists, a nested dataclass (MountOptions) an object."""
    out: dict = {"op": type(op).__name__}
    out.update({f.name: _jsonable(getattr(op, f.name)) for f in fields(op)})
    out["shell"] = op.shell()
    return out


def _jsonable(value: object) -> object:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def ops_json(ops: list[Op]) -> list[dict]:
    """The plan as JSON: one object per step, in order (``op_json``)."""
    return [op_json(op) for op in ops]

"""The operations only `mount`, `umount` and `repair` plan (and a net guest's own sysfs): each
a frozen record like those of ops.py, which says why and how (``shell()``).

Why a module of their own: every create imports ops.py, and a create needs none of these
nine (a net guest's sysfs excepted, imported then); ops.py stays the short list of what a
create can do. Nothing here touches the system.
"""
from __future__ import annotations

import posixpath
import shlex

from ..record import field, record
from .mountopts import MountOptions
from .ops import Op


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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
class DropSelfBind(Op):
    """After unmounting a guest-only mount: remove the private self-bind it stood on, if a
    kernel left it (guestonly.py, step 3)."""

    holder: str = ""
    target: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"nsenter --mount={q(self.holder)} umount -l {q(self.target)}"
                "   # only if the top mount there is the private self-bind"]


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
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

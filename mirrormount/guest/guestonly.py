"""Guest-only mounts: `mirrormount mount NAME SOURCE TARGET --guest-only`.

The answer to the thread's open question (issue 3, kernel-findings §7). A normal guest mount is
mirrored at BASE/NAME/TARGET, so a host task sitting in that copy keeps the guest from
unmounting. A guest-only mount has no copy anywhere outside the guest, so nothing on the host
can pin it: the host mirror shows the plain directory underneath.

The recipe, each step for a propagation reason:

1. Host: make the mount ready as a detached tree, so the source (device path, bind path,
   option paths) is resolved and the filesystem is created with the host's view, exactly as a
   normal `mirrormount mount` does: the same code (detached.make_tree). A bind is
   open_tree(SOURCE, OPEN_TREE_CLONE); a filesystem is fsopen/fsconfig/fsmount, so it never
   stands anywhere, not even for a moment. The options (mountopts.py) go on that tree with
   mount_setattr, and it is made private: a bind of a shared host mount would otherwise stay
   a peer of it, and the guest's submounts would flow back out to the host.
2. Guest (a forked child in its mount namespace): bind TARGET onto itself (B). B's parent is a
   peer of the mirror, so B propagates: a copy B' appears at BASE/NAME/TARGET (an empty
   self-bind). Make B private, then attach the tree on B. A mount whose parent is private
   propagates nowhere: the host never receives a copy of the filesystem.
3. Host: detach B'. The unmount propagates to its cognate B in the guest, and since B's only
   child covers B's root, the kernel puts that child in B's place instead of keeping B
   (umount propagation reparents such a "topper"; measured on 6.18). End state: the guest
   has the filesystem at TARGET, private, directly under its mirrored parent; the host has
   nothing new at all, not even the self-bind. A kernel that skips B instead leaves B
   (private, the filesystem on top) in the guest only, which `umount` removes afterwards.

The guest path, as resolved in the guest, is recorded in the guest's record
(``guest_only``), so `list` and `status` show it and health checks do not count it as a
broken mirror. These steps are the executor's MountGuestOnly operation (apply.py), each
undone on failure; `umount` of such a path plans DropSelfBind (a leftover self-bind) and a
record rewrite after the unmount (plan.plan_umount).

Privilege: root.
"""
from __future__ import annotations

import os
import posixpath

from ..record import record
from ..kernel import syscalls as sc
from ..errors import OperationError, UsageError
from ..kernel import mountinfo
from ..kernel.mountinfo import Mount, MountTable
from . import detached
from .mountopts import MountOptions
from .nsexec import in_namespaces, read_own_mountinfo

RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS


@record(frozen=True)
class Placed:
    """What the guest-side child did, reported back to the host side."""

    guest_path: str     # TARGET as the kernel resolved it in the guest (symlinks followed)
    self_bind: int      # mount id of B
    mount_id: int       # mount id of the guest-only mount itself


# ----------------------------------------------------------------------------- pure helpers
def shows_own_directory(m: Mount, parent: Mount | None) -> bool:
    """Whether m is a bind of the very directory it is mounted on: same filesystem as its
    parent, and its root is the parent's directory at m's mountpoint. Removing such a mount
    changes nothing a process can see."""
    if parent is None or m.dev != parent.dev:
        return False
    if m.mountpoint == parent.mountpoint:      # stacked on the parent's own root
        return m.root == parent.root
    rel = posixpath.relpath(m.mountpoint, parent.mountpoint)
    if rel.startswith(".."):
        return False
    return m.root == posixpath.normpath(posixpath.join(parent.root, rel))


def is_self_bind(m: Mount, parent: Mount | None) -> bool:
    """The private self-bind a guest-only mount stands on (B in the module docstring)."""
    return m.shared is None and m.master is None and shows_own_directory(m, parent)


# ----------------------------------------------------------------------------- guest side
def _open(root: int, path: str) -> int:
    """O_PATH fd for path, resolved with `root` as /: neither '..' nor a symlink the guest
    made can lead outside it. The walk crosses mounts, so it lands on the topmost one."""
    return sc.openat2(root, path.lstrip("/") or ".", sc.O_PATH, RESOLVE)


def _mnt_id(fd: int) -> int:
    return sc.statx("", fd, sc.AT_EMPTY_PATH).mnt_id


def _own_table(proc_fd: int) -> MountTable:
    return MountTable.parse(read_own_mountinfo(proc_fd))


def _attach_in_guest(proc_fd: int, tree_fd: int, target: str) -> Placed:
    """Step 2, in a child inside the guest's mount namespace."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    tfd = _open(root, target)
    # Checked when planning too (Guests.plan_mount); again here, where it is decided, since
    # the guest may have changed TARGET since: move_mount would say only EINVAL, and only
    # after the self-bind was made.
    wrong = detached.kind_mismatch(detached.is_dir_fd(tree_fd), detached.is_dir_fd(tfd),
                                   target)
    if wrong is not None:
        raise wrong
    under = _mnt_id(tfd)
    # The path the kernel reached, relative to the guest's root (now ours).
    guest_path = os.readlink(f"self/fd/{tfd}", dir_fd=proc_fd)
    if guest_path == "/":
        # Everything mounted in the guest would land on a private mount: no mirror any more.
        raise UsageError("mount --guest-only: not on the guest's / (it would cut the mirror)")
    # mount(2) takes paths, not fds: hand it the resolved fd through the host's /proc by a
    # relative path, so nothing the guest does to the path string can redirect it.
    os.fchdir(proc_fd)
    sc.mount(f"self/fd/{tfd}", f"self/fd/{tfd}", None, sc.MS_BIND)
    os.close(tfd)
    ours: set[int] = set()   # what to take down again if a later step fails
    try:
        mine = [m for m in _own_table(proc_fd)
                if m.parent_id == under and m.mountpoint == guest_path]
        if not mine:
            raise OperationError(f"mount --guest-only: the self-bind of {guest_path} vanished")
        self_bind = mine[-1].mount_id
        ours.add(self_bind)
        bfd = _open(root, guest_path)
        try:
            if _mnt_id(bfd) != self_bind:
                raise OperationError(f"mount --guest-only: {guest_path} changed while "
                                     "mounting (something else was mounted there)")
            # B leaves its peer group: what is mounted on it from now on goes nowhere else.
            sc.mount(None, f"self/fd/{bfd}", None, sc.MS_PRIVATE)
            sc.move_mount(tree_fd, "", bfd, "", sc.MOVE_MOUNT_F_EMPTY_PATH |
                          sc.MOVE_MOUNT_T_EMPTY_PATH, what="guest-only tree")
        finally:
            os.close(bfd)
        ffd = _open(root, guest_path)
        try:
            mount_id = _mnt_id(ffd)
        finally:
            os.close(ffd)
    except BaseException:
        _detach_stack(proc_fd, root, guest_path, ours)
        raise
    return Placed(guest_path, self_bind, mount_id)


def _detach_stack(proc_fd: int, root: int, guest_path: str, ours: set[int]) -> None:
    """Undo: detach, top first, the mounts at guest_path that belong to this operation
    (the guest-only mount on B, then B). Detaching B propagates to B' on the host, which
    has no child, so it goes too."""
    os.fchdir(proc_fd)
    # Ours are at most two (the mount and B); a couple more rounds take whatever the guest
    # mounted on them meanwhile, and the loop ends at the first mount that is not ours.
    for _ in range(4):
        fd = _open(root, guest_path)
        try:
            table = _own_table(proc_fd)
            top = _mnt_id(fd)
            m = table.by_id.get(top)
            if m is None or not (top in ours or m.parent_id in ours):
                return
            ours.add(top)
            sc.umount2(f"self/fd/{fd}", sc.MNT_DETACH)
        finally:
            os.close(fd)


def _undo_in_guest(proc_fd: int, placed: Placed) -> None:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    _detach_stack(proc_fd, root, placed.guest_path, {placed.self_bind, placed.mount_id})


def _remove_self_bind_in_guest(proc_fd: int, target: str,
                               guest_only: tuple[str, ...]) -> str:
    """After an umount of a guest-only path: if the private self-bind it stood on is now
    the top mount there, remove it. Returns the guest's mountinfo text afterwards."""
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open(root, target)
    except OSError:
        fd = None   # the guest removed the directory: nothing can be left on it
    if fd is not None:
        try:
            guest_path = os.readlink(f"self/fd/{fd}", dir_fd=proc_fd)
            table = _own_table(proc_fd)
            top = table.by_id.get(_mnt_id(fd))
            if guest_path in guest_only and top is not None and \
                    top.mountpoint == guest_path and \
                    is_self_bind(top, table.by_id.get(top.parent_id)):
                os.fchdir(proc_fd)
                # B is private, so this unmount propagates nowhere. Detached through our fd,
                # so it is exactly the mount we checked; lazily, because that very fd pins it
                # (a plain umount would say EBUSY). B only shows a directory its parent
                # shows too, so whoever still sits in it loses nothing.
                sc.umount2(f"self/fd/{fd}", sc.MNT_DETACH)
        finally:
            os.close(fd)
    return read_own_mountinfo(proc_fd)


# ----------------------------------------------------------------------------- host side
def detached_tree(source: str, fstype: str | None, opts: MountOptions, bind: bool) -> int:
    """Step 1: the mount as a detached, private tree made in the host's namespace, with its
    per-mount options set (detached.make_tree, the same path as every mount). Returns the
    tree's fd. Nothing is attached anywhere yet: closing the fd frees it."""
    return detached.make_tree(source, fstype, opts, bind)


def attach_in_guest(holder: str, tree_fd: int, target: str) -> Placed:
    """Step 2, run in a child inside the guest's mount namespace (held at `holder`)."""
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return in_namespaces({"mnt": holder}, _attach_in_guest, proc_fd, tree_fd, target)
    finally:
        os.close(proc_fd)


def undo_in_guest(holder: str, placed: Placed) -> None:
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        in_namespaces({"mnt": holder}, _undo_in_guest, proc_fd, placed)
    finally:
        os.close(proc_fd)


def drop_self_bind(holder: str, target: str) -> None:
    """After an umount of a guest-only path: remove the private self-bind it stood on when
    a kernel left it (step 3)."""
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        in_namespaces({"mnt": holder}, _remove_self_bind_in_guest, proc_fd, target, (target,))
    finally:
        os.close(proc_fd)


def host_mount_ids() -> set[int]:
    return {m.mount_id for m in MountTable.of(mountinfo.read())}


def _open_in_mirror(mirror: str, guest_path: str) -> int:
    """O_PATH fd for a guest path seen through the host's mirror, resolved with the mirror
    as root (so a guest's symlink cannot lead outside it)."""
    root = os.open(mirror, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _open(root, guest_path)
    finally:
        os.close(root)


def detach_host_copy(mirror: str, guest_path: str, before: set[int]) -> bool:
    """Step 3: detach B', the copy of the guest's self-bind that propagated to the mirror.
    Returns False when there was none (TARGET's parent in the guest was not shared)."""
    where = mirror if guest_path == "/" else mirror.rstrip("/") + guest_path
    table = MountTable.of(mountinfo.read())
    # B' is still in the peer group B had before it was made private: no propagation test.
    new = [m for m in table if m.mountpoint == where and m.mount_id not in before
           and shows_own_directory(m, table.by_id.get(m.parent_id))]
    if not new:
        return False
    fd = _open_in_mirror(mirror, guest_path)
    try:
        if _mnt_id(fd) != new[-1].mount_id:
            raise OperationError(f"mount --guest-only: {where} changed on the host while "
                                 "mounting; nothing was mounted")
        # Lazy: a host task that wandered into B' in the last milliseconds cannot make this
        # fail, and keeps only the empty directory alive, never the guest's device.
        sc.umount2(f"/proc/self/fd/{fd}", sc.MNT_DETACH)
    finally:
        os.close(fd)
    return True


def host_top(mirror: str, guest_path: str) -> int:
    """The id of the mount on top of guest_path in the host's mirror (statx STATX_MNT_ID)."""
    fd = _open_in_mirror(mirror, guest_path)
    try:
        return _mnt_id(fd)
    finally:
        os.close(fd)


def recover(holder: str, mirror: str, pending: dict) -> None:
    """Clean up after a guest-only mount that was killed midway (its record still holds
    ``pending``): in the guest, every private mount stacked at the pending path above the
    one that was on top before (B and the tree), then in the mirror the self-bind B' above
    the mirror's own mount there. (The tree of step 1 is detached, held only by the killed
    process's fd: it went with it.) Idempotent."""
    path = str(pending.get("path", ""))
    if not path.startswith("/") or path == "/":
        return
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        in_namespaces({"mnt": holder}, _recover_in_guest, proc_fd, path,
                      int(pending.get("guest_under", 0)))
    finally:
        os.close(proc_fd)
    _recover_in_mirror(mirror, path, int(pending.get("host_under", 0)))


def _recover_in_guest(proc_fd: int, path: str, under: int) -> None:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    os.fchdir(proc_fd)
    for _ in range(4):   # at most B and the tree are ours; the bound is a safety net
        try:
            fd = _open(root, path)
        except FileNotFoundError:
            return
        try:
            top = _mnt_id(fd)
            m = _own_table(proc_fd).by_id.get(top)
            # Ours are private and mounted exactly at the path; the mirrored mounts the
            # guest shares with the host are in a peer group, so never taken here.
            if top == under or m is None or m.mountpoint != path or \
                    m.shared is not None or m.master is not None:
                return
            sc.umount2(f"self/fd/{fd}", sc.MNT_DETACH)
        finally:
            os.close(fd)


def _recover_in_mirror(mirror: str, path: str, under: int) -> None:
    where = mirror.rstrip("/") + path
    for _ in range(4):
        try:
            top = host_top(mirror, path)
        except FileNotFoundError:
            return
        table = MountTable.of(mountinfo.read())
        m = table.by_id.get(top)
        # B' is an empty self-bind: taking it away hides nothing anyone could see.
        if top == under or m is None or m.mountpoint != where or \
                not shows_own_directory(m, table.by_id.get(m.parent_id)):
            return
        fd = _open_in_mirror(mirror, path)
        try:
            if _mnt_id(fd) != top:
                return
            # B' is still a peer of nothing but B, which recovery in the guest took first.
            sc.umount2(f"/proc/self/fd/{fd}", sc.MNT_DETACH)
        finally:
            os.close(fd)


def resolve_in_guest(holder: str, target: str) -> str:
    """TARGET as the kernel resolves it inside the guest (symlinks followed, inside the
    guest's root), for the record. Read-only: a child enters the guest and reads a link."""
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return in_namespaces({"mnt": holder}, _resolved_path, proc_fd, target)
    finally:
        os.close(proc_fd)


def _resolved_path(proc_fd: int, target: str) -> str:
    return _resolved(proc_fd, target)[0]


def _resolved(proc_fd: int, target: str) -> tuple[str, bool, int]:
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = _open(root, target)
    finally:
        os.close(root)
    try:
        return (os.readlink(f"self/fd/{fd}", dir_fd=proc_fd), detached.is_dir_fd(fd),
                _mnt_id(fd))
    finally:
        os.close(fd)


def target_in_guest(holder: str, target: str) -> tuple[str, bool, int]:
    """TARGET as resolved inside the guest, whether it is a directory there (what the
    guest sees, which for a guest-only mount may differ from the mirror), and the id of the
    mount on top there now (what a guest-only mount will stand on). Read-only."""
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return in_namespaces({"mnt": holder}, _resolved, proc_fd, target)
    finally:
        os.close(proc_fd)

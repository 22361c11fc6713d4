"""Detached trees: every mount `mirrormount mount` makes is built here, whole, before it is
attached anywhere. Normal mounts (apply.py, MountInto) and guest-only mounts (guestonly.py)
take the same path:

- a new filesystem: fsopen(TYPE), fsconfig(FSCONFIG_SET_STRING "source" and each filesystem
  option; FSCONFIG_SET_FLAG each superblock flag), FSCONFIG_CMD_CREATE, fsmount. The kernel
  judges each option when it is set, so an unknown or bad one ("tmpfs: Unknown parameter
  'x'", read back from the context fd) is refused before any filesystem exists;
- a bind: open_tree(SOURCE, OPEN_TREE_CLONE), a detached copy of that one mount;
- then, on the tree, one mount_setattr(2): the per-mount attributes (mountopts.py: ro, nosuid,
  nodev, noexec, the atime family, nodiratime, nosymfollow) and MS_PRIVATE. The attributes go
  on before the tree is attached, because the guest's copy is made from it by propagation and
  inherits them; a remount afterwards would change one side only. Private, because a clone of
  a shared host mount is a peer of that mount: attached under the shared mirror it would tie
  the guest to the host's peer group, and the guest's mounts beneath it would appear on the
  host (measured on 6.18 with / rshared). A private tree attached under a shared parent gets
  a fresh peer group, shared with the guest's copy only: the mirror's own rule.

The caller attaches the tree with move_mount(2) onto an fd it resolved itself, and owns the
fd. Sources: fsopen(2), fsconfig(2), fsmount(2), open_tree(2), mount_setattr(2), move_mount(2);
Documentation/filesystems/mount_api.rst.

Privilege: root (CAP_SYS_ADMIN).
"""
from __future__ import annotations

import errno
import os
import stat

from ..errors import KernelError, UsageError
from ..kernel import syscalls as sc
from .mountopts import MountOptions

# fsconfig failures that mean "this option (or value) is not acceptable": bad input. (The
# kernel's internal ENOPARAM, "no filesystem knows this key", reaches us as EINVAL.)
_REFUSED_OPTION = (errno.EINVAL, errno.EOPNOTSUPP)


def _configure(fstype: str, source: str, opts: MountOptions) -> int:
    """fsopen + fsconfig of the source and every option; returns the context fd (not created
    yet). An option the filesystem refuses is a UsageError with the kernel's own words."""
    fd = sc.fsopen(fstype)
    try:
        sc.fsconfig(fd, sc.FSCONFIG_SET_STRING, "source", source, what=source)
        for key in opts.sb_flags:
            _set(fd, fstype, key, None)
        for key, value in opts.fs_params:
            _set(fd, fstype, key, value)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _set(fd: int, fstype: str, key: str, value: str | None) -> None:
    try:
        if value is None:
            sc.fsconfig(fd, sc.FSCONFIG_SET_FLAG, key)
        else:
            sc.fsconfig(fd, sc.FSCONFIG_SET_STRING, key, value)
    except KernelError as exc:
        if exc.errno not in _REFUSED_OPTION:
            raise
        typed = key if value is None else f"{key}={value}"
        said = exc.detail or f"{fstype}: {exc.strerror}"
        raise UsageError(f"mount: option {typed!r} refused by the kernel: {said}") from None


def check_filesystem(fstype: str, source: str, opts: MountOptions) -> None:
    """Plan time: let the kernel judge the type and every option, creating nothing (no
    FSCONFIG_CMD_CREATE, so no device is opened). Raises UsageError for a refused option."""
    os.close(_configure(fstype, source, opts))


def new_filesystem(fstype: str, source: str, opts: MountOptions) -> int:
    """A new filesystem as a detached mount (fsmount); returns its fd."""
    fd = _configure(fstype, source, opts)
    try:
        sc.fsconfig(fd, sc.FSCONFIG_CMD_CREATE, what=source)
        return sc.fsmount(fd)
    finally:
        os.close(fd)


def make_tree(source: str, fstype: str | None, opts: MountOptions, bind: bool) -> int:
    """The mount as a detached, private tree with its attributes set; returns its fd."""
    if bind:
        tree = sc.open_tree(source, sc.OPEN_TREE_CLONE)
    else:
        assert fstype, "the planner refuses a new filesystem without -t"
        tree = new_filesystem(fstype, source, opts)
    try:
        # One call: attributes on, and private (module docstring: why both, and why now).
        sc.mount_setattr("", sc.MS_PRIVATE, recursive=False, dirfd=tree,
                         flags=sc.AT_EMPTY_PATH, attr_set=opts.attr_set,
                         attr_clr=opts.attr_clr)
    except BaseException:
        os.close(tree)
        raise
    return tree


def is_dir_fd(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def kind_mismatch(source_is_dir: bool, target_is_dir: bool, target: str) -> UsageError | None:
    """The error for a directory onto a file or a file onto a directory, or None. The kernel
    would say only EINVAL (do_move_mount: "a directory covers only a directory")."""
    if source_is_dir == target_is_dir:
        return None
    what = "a directory" if source_is_dir else "a file"
    other = "a file" if source_is_dir else "a directory"
    return UsageError(f"mount: cannot put {what} on {target}, which is {other}: a directory "
                      "covers only a directory, a file only a file")

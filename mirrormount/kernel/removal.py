"""Recursive removal that never crosses a mount point: the one helper tests, benchmarks, the
demo and the product use to delete a tree (the project's rule: nothing ever runs rm -r or
shutil.rmtree).

Why so strict: a test's scratch directory once held an rbind of the machine's `/` (a create
that validation should have refused). shutil.rmtree followed the bind and deleted the
machine's /etc. `rm --one-file-system` would not have helped, since it compares st_dev and a
bind of `/` under `/tmp` has the same st_dev as `/tmp` itself. Mount ids differ for every
mount, bind or not, so that is what is compared here.

Two guards, both needed:
1. Before anything is deleted, the caller's mount table (/proc/self/mountinfo) is read. If any
   mount lies at or below the path, nothing is deleted and ``MountsInside`` is raised, naming
   them. Teardown then fails loudly instead of deleting through a mount.
2. While deleting, every directory is opened with O_NOFOLLOW relative to its parent's fd and
   its mount id (statx STATX_MNT_ID) must equal the top's. A mount that appears meanwhile
   stops the walk with ``MountsInside``; symlinks are unlinked, never followed.

Privilege: none beyond write access to the tree.
"""
from __future__ import annotations

import errno
import os
import stat

from . import mountinfo
from . import syscalls as sc


class MountsInside(OSError):
    """Refused: something is mounted at or under the tree. Nothing (more) was deleted."""

    def __init__(self, path: str, mounts: list[str]) -> None:
        shown = ", ".join(mounts[:5]) + (f" and {len(mounts) - 5} more" if len(mounts) > 5
                                         else "")
        super().__init__(errno.EBUSY, f"refusing to delete {path}: mounted inside: {shown}",
                         path)
        self.mounts = mounts


def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path` (a real path) in the caller's mount namespace."""
    top = path.rstrip("/") or "/"
    return [m.mountpoint for m in mountinfo.read()
            if mountinfo.is_under(m.mountpoint, top)]


def _mnt_id(fd: int) -> int:
    return sc.statx("", fd, sc.AT_EMPTY_PATH).mnt_id


def remove_tree(path: str) -> None:
    """Delete `path` and everything below it, like `rm -r`, but refuse (raise MountsInside,
    delete nothing) when anything is mounted at or under it, and never cross a mount that
    appears while deleting. A missing path is not an error.

    Raises MountsInside (an OSError, errno EBUSY) or the OSError of a failed unlink/rmdir.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    real = os.path.realpath(path)
    inside = mounts_under(real)
    if inside:
        raise MountsInside(real, inside)
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _empty(fd, real, _mnt_id(fd))
    finally:
        os.close(fd)
    os.rmdir(real)


def _empty(dir_fd: int, where: str, mnt_id: int) -> None:
    """Remove everything inside the directory dir_fd, staying on mount mnt_id."""
    with os.scandir(dir_fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if not is_dir:
            os.unlink(name, dir_fd=dir_fd)
            continue
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=dir_fd)
        try:
            if _mnt_id(child) != mnt_id:
                raise MountsInside(where, [os.path.join(where, name)])
            _empty(child, os.path.join(where, name), mnt_id)
        finally:
            os.close(child)
        os.rmdir(name, dir_fd=dir_fd)

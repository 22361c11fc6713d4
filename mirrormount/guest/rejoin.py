"""The kernel work of `repair`'s operations (ops.Propagate, JoinGroup, CopyTree), on either
side of a mirror: "host" (BASE/NAME + PATH, in the host's namespace) or "guest" (PATH, in
the guest's). apply.py calls these; guest/repair.py plans them.

Host paths are opened inside the mirror (openat2 RESOLVE_IN_ROOT, apply.open_in_root) and
used through their fd: a guest could swap a directory of its tree for a symlink to /, and a
string path would then lead mirrormount to the host's own mounts. Guest paths are used
inside the guest's namespace (a forked child that setns()'d there), where the guest's root
is the root: its symlinks stay inside it. Recent kernels also refuse to change propagation
of a mount in another namespace (kernel-findings §8), so guest-side changes must be made
from inside anyway.

move_mount(MOVE_MOUNT_SET_GROUP) works across namespaces (findings §13): the source is an
O_PATH fd opened on its side, the target is reached after setns into the other.

Privilege: root.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..kernel import child
from ..kernel import syscalls as sc
from .nsexec import enter, open_ns_files

PROPAGATION = {"private": sc.MS_PRIVATE, "shared": sc.MS_SHARED, "slave": sc.MS_SLAVE,
               "unbindable": sc.MS_UNBINDABLE}
NO_SET_GROUP_ENV = "MIRRORMOUNT_NO_SET_GROUP"


def set_group_available() -> bool:
    """MOVE_MOUNT_SET_GROUP here (Linux 5.15+). MIRRORMOUNT_NO_SET_GROUP=1 says no, so that
    tests can show what repair does on a kernel without it."""
    return not os.environ.get(NO_SET_GROUP_ENV) and sc.can_set_group()


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _in_guest(holder: str, fn: Callable[..., None], *args: object) -> None:
    def body() -> None:
        enter(open_ns_files({"mnt": holder}))
        fn(*args)
    child.run(body)


def _set(path: str, bits: int) -> None:
    sc.mount(None, path, None, bits)


def propagate(side: str, host_fd: int, holder: str, path: str, flag: str) -> None:
    """mount --make-FLAG on one side's mount at PATH (the top one there). host_fd: that
    mount on the host side, opened inside the mirror by the caller."""
    bits = PROPAGATION[flag]
    if side == "guest":
        _in_guest(holder, _set, path, bits)
    else:
        _set(_fd_path(host_fd), bits)


def _join_into_guest(holder: str, host_fd: int, path: str) -> None:
    enter(open_ns_files({"mnt": holder}))
    sc.move_mount(host_fd, "", sc.AT_FDCWD, path,
                  sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_SET_GROUP, "(host side)")


def _join_into_host(holder: str, host_fd: int, path: str) -> None:
    back = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    enter(open_ns_files({"mnt": holder}))
    guest_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    sc.setns(back, sc.CLONE_NEWNS, "the host's mount namespace")
    sc.move_mount(guest_fd, "", host_fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH
                  | sc.MOVE_MOUNT_T_EMPTY_PATH | sc.MOVE_MOUNT_SET_GROUP, f"{path} (guest side)")


def join_group(to: str, host_fd: int, holder: str, path: str) -> None:
    """The (private) mount at PATH on side `to` joins the peer group of the mount at PATH on
    the other side. host_fd: the host side's mount there, opened before any setns."""
    child.run(_join_into_guest if to == "guest" else _join_into_host, holder, host_fd, path)


def _copy_into_guest(holder: str, host_fd: int, path: str) -> None:
    tree = sc.open_tree("", sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE | sc.AT_EMPTY_PATH, host_fd)
    enter(open_ns_files({"mnt": holder}))
    sc.move_mount(tree, "", sc.AT_FDCWD, path, sc.MOVE_MOUNT_F_EMPTY_PATH, "(host side copy)")


def _copy_into_host(holder: str, host_fd: int, path: str) -> None:
    back = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    enter(open_ns_files({"mnt": holder}))
    tree = sc.open_tree(path, sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE)
    sc.setns(back, sc.CLONE_NEWNS, "the host's mount namespace")
    sc.move_mount(tree, "", host_fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH,
                  f"{path} (guest side copy)")


def copy_tree(to: str, host_fd: int, holder: str, path: str) -> None:
    """A recursive clone of the other side's tree at PATH, attached at PATH on side `to`.
    host_fd: the source (to == "guest") or the directory to attach on (to == "host")."""
    child.run(_copy_into_guest if to == "guest" else _copy_into_host, holder, host_fd, path)


def _detach_private(path: str) -> None:
    # private first, so that the detach reaches no peer (kernel-findings §3)
    sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)
    sc.umount2(path, sc.MNT_DETACH)


def detach_copy(to: str, host_fd: int, holder: str, path: str) -> None:
    """Undo of copy_tree: the copy at PATH on side `to`, detached privately."""
    if to == "guest":
        _in_guest(holder, _detach_private, path)
    else:
        _detach_private(_fd_path(host_fd))

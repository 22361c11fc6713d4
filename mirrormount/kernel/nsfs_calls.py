"""The mount-namespace calls of Linux 6.11+: nsfs ioctls (a namespace's id, its mount count,
the next and previous namespace) and fanotify mount marks. Split from syscalls.py, whose
conventions hold here: thin wrappers, KernelError (an OSError with errno) on failure, no
policy. Read-only: nothing here changes a mount or a namespace.

Privilege: the ioctls on a namespace the caller can open; NS_MNT_GET_NEXT/PREV only from
the initial pid namespace (EPERM elsewhere, measured on 6.18); fanotify needs CAP_SYS_ADMIN.
"""
from __future__ import annotations

import ctypes
import errno
import os

# The one libc handle and the one errno check, shared with the rest of the syscall layer.
from ..record import record
from .syscalls import _check, _libc

# nsfs ioctls (include/uapi/linux/nsfs.h; NSIO 0xb7). _IOR encodes the argument size.
NS_GET_MNTNS_ID = 0x8008B705     # _IOR(NSIO, 5, __u64), 6.11 (the earlier _IO form: ENOTTY)
NS_MNT_GET_INFO = 0x8010B70A     # _IOR(NSIO, 10, struct mnt_ns_info), 6.12
NS_MNT_GET_NEXT = 0x8010B70B     # same, and returns an fd of the next namespace
NS_MNT_GET_PREV = 0x8010B70C

_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


class _MntNsInfo(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("nr_mounts", ctypes.c_uint32),
                ("mnt_ns_id", ctypes.c_uint64)]


@record(frozen=True)
class MntNsInfo:
    """What NS_MNT_GET_INFO says of a mount namespace (struct mnt_ns_info, linux/nsfs.h)."""
    ns_id: int        # the namespace's 64-bit id (never reused; NS_GET_MNTNS_ID's answer)
    nr_mounts: int


def mntns_id(nsfd: int) -> int:
    """NS_GET_MNTNS_ID on an nsfs fd of a mount namespace. ENOTTY before 6.11 (or for a
    fd that is no mount namespace: EINVAL)."""
    out = ctypes.c_uint64(0)
    _check(_libc.ioctl(nsfd, NS_GET_MNTNS_ID, ctypes.byref(out)), "ioctl", "NS_GET_MNTNS_ID")
    return out.value


def mntns_info(nsfd: int) -> MntNsInfo:
    """NS_MNT_GET_INFO (6.12): the namespace's id and how many mounts it holds."""
    info = _MntNsInfo(ctypes.sizeof(_MntNsInfo), 0, 0)
    _check(_libc.ioctl(nsfd, NS_MNT_GET_INFO, ctypes.byref(info)), "ioctl", "NS_MNT_GET_INFO")
    return MntNsInfo(info.mnt_ns_id, info.nr_mounts)


def mntns_step(nsfd: int, forward: bool = True) -> tuple[int, MntNsInfo] | None:
    """NS_MNT_GET_NEXT / PREV (6.12): an fd (O_CLOEXEC is up to us) of the next (previous)
    mount namespace, in id order, that the caller may see (fs/namespace.c
    mntns_get_next: those whose user namespace the caller has CAP_SYS_ADMIN over), and its
    info; None at the end (ENOENT). ENOTTY before 6.12."""
    info = _MntNsInfo(ctypes.sizeof(_MntNsInfo), 0, 0)
    ret = _libc.ioctl(nsfd, NS_MNT_GET_NEXT if forward else NS_MNT_GET_PREV,
                      ctypes.byref(info))
    if ret == -1 and ctypes.get_errno() == errno.ENOENT:
        return None
    fd = _check(ret, "ioctl", "NS_MNT_GET_NEXT" if forward else "NS_MNT_GET_PREV")
    os.set_inheritable(fd, False)
    return fd, MntNsInfo(info.mnt_ns_id, info.nr_mounts)


# fanotify mount events (include/uapi/linux/fanotify.h; Linux 6.15): one group per mount
# namespace, marked with FAN_MARK_MNTNS on an nsfs fd; each event carries an info record of
# type FAN_EVENT_INFO_TYPE_MNT with the mount's unique id. A move sets both bits.
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_REPORT_MNT = 0x4000
FAN_MARK_ADD = 0x1
FAN_MARK_MNTNS = 0x110
FAN_MNT_ATTACH = 0x01000000
FAN_MNT_DETACH = 0x02000000
FAN_Q_OVERFLOW = 0x4000
FAN_EVENT_INFO_TYPE_MNT = 7
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]


def fanotify_mount_group() -> int:
    """fanotify_init(FAN_REPORT_MNT): a notification group for mount events. EINVAL before
    6.15 (the flag is unknown); EPERM without CAP_SYS_ADMIN."""
    return _check(_libc.fanotify_init(FAN_REPORT_MNT | FAN_CLOEXEC | FAN_NONBLOCK,
                                      os.O_RDONLY), "fanotify_init", "FAN_REPORT_MNT")


def fanotify_mark_mntns(group: int, nsfd: int) -> None:
    """Watch attach/detach of every mount in the mount namespace of nsfd."""
    _check(_libc.fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_MNTNS,
                               FAN_MNT_ATTACH | FAN_MNT_DETACH, nsfd, None),
           "fanotify_mark", "FAN_MARK_MNTNS")

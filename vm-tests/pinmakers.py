"""Test-only pin makers that need syscalls Python does not wrap (fanotify, io_uring).

Run as a script inside a sandbox, each prints its pid once the pin is in place and then holds
it until killed:

    python pinmakers.py fanotify MOUNTPOINT FILE   a fanotify mount mark on MOUNTPOINT and one
                                                   unread FAN_OPEN event (opening FILE): the
                                                   queued event holds the mount (struct path)
    python pinmakers.py io_uring FILE              FILE registered with an io_uring
                                                   (IORING_REGISTER_FILES), then its fd closed:
                                                   only the ring holds it

ctypes lives here, not in mirrormount: the product only reads what the kernel shows of these
pins in /proc/PID/fdinfo. Layouts: fanotify_init(2), fanotify_mark(2) and
include/uapi/linux/io_uring.h (struct io_uring_params is 120 bytes; zeroed is a valid request).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)

FAN_CLOEXEC = 0x1
FAN_CLASS_NOTIF = 0x0
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_OPEN = 0x20
AT_FDCWD = -100

NR_IO_URING_SETUP = 425          # x86-64 and every architecture using the generic table
NR_IO_URING_REGISTER = 427
IORING_REGISTER_FILES = 2


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def fanotify_mount_mark(mountpoint: str) -> int:
    """A notification group with a mount mark for FAN_OPEN on `mountpoint`; returns its fd."""
    fd = _check(_libc.fanotify_init(ctypes.c_uint(FAN_CLASS_NOTIF | FAN_CLOEXEC),
                                    ctypes.c_uint(os.O_RDONLY)), "fanotify_init")
    _check(_libc.fanotify_mark(ctypes.c_int(fd), ctypes.c_uint(FAN_MARK_ADD | FAN_MARK_MOUNT),
                               ctypes.c_uint64(FAN_OPEN), ctypes.c_int(AT_FDCWD),
                               mountpoint.encode()), "fanotify_mark")
    return fd


def io_uring_with_file(path: str) -> int:
    """An io_uring with `path` registered as fixed file 0; the file's own fd is closed."""
    params = (ctypes.c_uint8 * 120)()
    ring = _check(_libc.syscall(ctypes.c_long(NR_IO_URING_SETUP), ctypes.c_uint(4),
                                ctypes.byref(params)), "io_uring_setup")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    fds = (ctypes.c_int32 * 1)(fd)
    _check(_libc.syscall(ctypes.c_long(NR_IO_URING_REGISTER), ctypes.c_int(ring),
                         ctypes.c_uint(IORING_REGISTER_FILES), ctypes.byref(fds),
                         ctypes.c_uint(1)), "io_uring_register")
    os.close(fd)
    return ring


def main(argv: list[str]) -> int:
    kind = argv[1]
    if kind == "fanotify":
        fanotify_mount_mark(argv[2])
        os.close(os.open(argv[3], os.O_RDONLY))    # one FAN_OPEN event, never read
    elif kind == "io_uring":
        io_uring_with_file(argv[2])
    else:
        print(f"unknown pin kind {kind}", file=sys.stderr)
        return 2
    print(os.getpid(), flush=True)
    time.sleep(600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

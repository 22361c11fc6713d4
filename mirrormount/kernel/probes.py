"""Which of the newer mount interfaces the running kernel offers, for `doctor`: each asked
once, harmlessly, through the module that uses it (kernel/mountns.py, kernel/mntevents.py).

Privilege: none needed; without root some answer no (EPERM), which doctor reports.
"""
from __future__ import annotations

import errno
import os

from ..record import record
from . import nsfs_calls as nc
from . import syscalls as sc
from .mntevents import fanotify_available
from .mountns import (NOT_HERE, switched_off, unique_id, unique_mounts, walk_available,
                      walk_refused)

@record(frozen=True)
class Interface:
    name: str
    since: str          # the Linux version it arrived in
    available: bool
    fallback: str       # what mirrormount uses where it is not available (or switched off)
    switch: str         # MIRRORMOUNT_NO_<switch>=1 forces the fallback
    note: str | None = None     # why it is not available, when more is known

    @property
    def forced_by(self) -> str | None:
        """The set environment variable that turns it off, if any (listmount and fanotify
        need unique ids; fanotify needs listmount)."""
        needs = {"UNIQUE_ID": ("UNIQUE_ID",), "LISTMOUNT": ("LISTMOUNT", "UNIQUE_ID"),
                 "NSWALK": ("NSWALK",),
                 "FANOTIFY_MNT": ("FANOTIFY_MNT", "LISTMOUNT", "UNIQUE_ID")}[self.switch]
        for name in needs:
            if os.environ.get(f"MIRRORMOUNT_NO_{name}"):
                return f"MIRRORMOUNT_NO_{name}"
        return None


def _probe_ok(fn) -> bool:
    try:
        fn()
        return True
    except NotImplementedError:
        return False
    except OSError as exc:
        if exc.errno in NOT_HERE or exc.errno in (errno.EPERM, errno.ENOENT):
            return False
        raise


def _own_ns_id() -> int:
    fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return nc.mntns_id(fd)
    finally:
        os.close(fd)


def interfaces() -> list[Interface]:
    """Which of the newer interfaces this kernel offers, each asked once, harmlessly: a
    statx of /, a listmount of our own namespace by its id, one NS_MNT_GET_INFO, a fanotify
    group made and closed. Each answers False on ENOSYS, EINVAL, ENOTTY, EOPNOTSUPP (an
    older kernel), EPERM (not root) or when its switch is set."""
    def unique() -> None:
        if unique_id("/") is None:
            raise NotImplementedError
    return [
        Interface("unique mount ids", "6.8",
                  not switched_off("UNIQUE_ID") and _probe_ok(unique),
                  "32-bit mount ids (mountinfo)", "UNIQUE_ID"),
        # listmount of another namespace is 6.11, but statmount names a mount's source only
        # from 6.13 (STATMOUNT_SB_SOURCE), and the finder needs it: measured on 6.12.117.
        Interface("listmount/statmount", "6.13",
                  not switched_off("LISTMOUNT") and _probe_ok(
                      lambda: unique_mounts(_own_ns_id(), parent=sc.LSMT_ROOT) and None),
                  "mountinfo, setns for a namespace no process is in", "LISTMOUNT"),
        Interface("namespace walk", "6.12", walk_available(),
                  "/proc scan (processes, fds, nsfs binds)", "NSWALK",
                  note=walk_refused()),
        Interface("fanotify mount events", "6.15", fanotify_available(),
                  "POLLPRI on mountinfo, diffed", "FANOTIFY_MNT"),
    ]

"""Mount attach, detach and move events of one mount namespace, from either source:

- ``FanotifySource`` (Linux 6.15, include/uapi/linux/fanotify.h): a fanotify group with
  FAN_REPORT_MNT, marked FAN_MARK_MNTNS on the namespace; each event names a mount by its
  unique id (FAN_MNT_ATTACH, FAN_MNT_DETACH, both for a move). statmount(2) on that id and
  the namespace's id says where and what; a cache taken at the start (listmount) answers for
  detached mounts, which statmount no longer knows.
- ``PollSource`` (every kernel; ``MIRRORMOUNT_NO_FANOTIFY_MNT=1`` forces it): an open
  /proc/PID/mountinfo of the namespace, which poll(2) reports with POLLPRI (and POLLERR) when
  the namespace's mounts changed since the last poll (fs/proc_namespace.c mounts_poll); the
  table is read again and diffed by mount id. The file holds the namespace, not the process:
  for a namespace no process lives in, a forked child setns()es there, we open its
  /proc/PID/mountinfo, and the child exits.

Both give ``MountEvent`` records with the path as a process in that namespace sees it.
A source holds its namespace alive (the poll path's file, not fanotify's mark): close it when
the namespace should go (a destroyed guest).

Privilege: root (CAP_SYS_ADMIN for fanotify and setns).
"""
from __future__ import annotations

import errno
import os
import select
import struct

from ..record import record
from . import child
from . import nsfs_calls as nc
from . import syscalls as sc
from .mountinfo import Mount, MountTable
from .mountns import NOT_HERE, mount_of, switched_off, unique_mounts
from .procfs import read_to_end


@record(frozen=True)
class MountEvent:
    event: str          # attach | detach | move
    guest: str          # a guest's name or "host"
    path: str           # as a process in that namespace sees it
    mount_id: int       # the mount id mountinfo shows (32-bit)
    source: str
    fstype: str
    old_path: str | None = None     # for a move: where it was

    def to_json(self) -> dict:
        out = {"event": self.event, "guest": self.guest, "path": self.path,
               "mount_id": self.mount_id, "source": self.source, "fstype": self.fstype}
        if self.old_path is not None:
            out["old_path"] = self.old_path
        return out


def _event(kind: str, guest: str, m: Mount, old: Mount | None = None) -> MountEvent:
    return MountEvent(kind, guest, m.mountpoint, m.mount_id, m.source, m.fstype,
                      old.mountpoint if old is not None else None)


def diff(guest: str, before: MountTable, after: MountTable) -> list[MountEvent]:
    """What changed between two tables of one namespace (pure): mounts gone (detach), new
    (attach), and kept under the same id with another mountpoint or parent (move). Detaches
    first, as the kernel would have done them to make room."""
    out = [_event("detach", guest, m) for m in before if m.mount_id not in after.by_id]
    for m in after:
        old = before.by_id.get(m.mount_id)
        if old is None:
            out.append(_event("attach", guest, m))
        elif (old.mountpoint, old.parent_id) != (m.mountpoint, m.parent_id):
            out.append(_event("move", guest, m, old))
    return out


# ============================================================================ fanotify
_FAN_META = struct.Struct("=IBBHQii")     # struct fanotify_event_metadata, 24 bytes
_FAN_INFO = struct.Struct("=BBH")         # struct fanotify_event_info_header


def parse_fanotify(data: bytes) -> list[tuple[int, int]]:
    """fanotify mount events as (mask, unique mount id) (pure). Each event is the metadata,
    then info records; the FAN_EVENT_INFO_TYPE_MNT one holds the u64 id after its 4-byte
    header and 4 bytes of padding (struct fanotify_event_info_mnt)."""
    out = []
    pos = 0
    while pos + _FAN_META.size <= len(data):
        length, _vers, _res, meta_len, mask, _fd, _pid = _FAN_META.unpack_from(data, pos)
        if length < meta_len or meta_len == 0:
            break
        mnt_id, info = 0, pos + meta_len
        while info + _FAN_INFO.size <= pos + length:
            kind, _pad, ilen = _FAN_INFO.unpack_from(data, info)
            if ilen == 0:
                break
            if kind == nc.FAN_EVENT_INFO_TYPE_MNT and ilen >= 16:
                (mnt_id,) = struct.unpack_from("=Q", data, info + 8)
            info += ilen
        out.append((mask, mnt_id))
        pos += length
    return out


def fanotify_available() -> bool:
    """Whether fanotify mount events work here (6.15+): a group with FAN_REPORT_MNT can be
    made and marked on our own namespace. EINVAL before 6.15; the switch turns it off."""
    if switched_off("FANOTIFY_MNT") or switched_off("LISTMOUNT"):
        return False
    try:
        group = nc.fanotify_mount_group()
    except OSError as exc:
        if exc.errno in NOT_HERE or exc.errno == errno.EPERM:
            return False
        raise
    try:
        fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            nc.fanotify_mark_mntns(group, fd)
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        if exc.errno in NOT_HERE or exc.errno == errno.EPERM:
            return False
        raise
    finally:
        os.close(group)


class FanotifySource:
    """Events of one namespace from a fanotify mount group. ns_path: an nsfs file or
    /proc/PID/ns/mnt; own: it is our namespace (statmount without an id)."""

    def __init__(self, guest: str, ns_path: str, own: bool = False) -> None:
        self.guest = guest
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.ns_id = 0 if own else nc.mntns_id(fd)
            self.fd = nc.fanotify_mount_group()
            try:
                nc.fanotify_mark_mntns(self.fd, fd)
                self.known = unique_mounts(self.ns_id)     # after the mark: nothing missed
            except BaseException:
                os.close(self.fd)
                raise
        finally:
            os.close(fd)
        self.events = select.POLLIN

    def read(self) -> list[MountEvent]:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        out: list[MountEvent] = []
        for mask, uid in parse_fanotify(data):
            if mask & nc.FAN_Q_OVERFLOW:
                out.extend(self._resync())
                continue
            old = self.known.get(uid)
            now = self._stat(uid) if mask & nc.FAN_MNT_ATTACH else None
            if now is not None:
                self.known[uid] = now
            else:
                self.known.pop(uid, None)
            if mask & nc.FAN_MNT_ATTACH and mask & nc.FAN_MNT_DETACH:
                if now is not None:
                    out.append(_event("move", self.guest, now, old))
                elif old is not None:       # moved, then gone before we looked
                    out.append(_event("detach", self.guest, old))
            elif mask & nc.FAN_MNT_ATTACH and now is not None:
                out.append(_event("attach", self.guest, now))
            elif mask & nc.FAN_MNT_DETACH and old is not None:
                out.append(_event("detach", self.guest, old))
            # An attach gone before statmount, or a detach of a mount we never knew
            # (attached and gone between the mark and our listing): nothing to say.
        return out

    def _stat(self, uid: int) -> Mount | None:
        try:
            return mount_of(sc.statmount(uid, self.ns_id))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _resync(self) -> list[MountEvent]:
        """The queue overflowed: events were lost. Compare a fresh listing with ours."""
        before = MountTable.of(self.known.values())
        self.known = unique_mounts(self.ns_id)
        return diff(self.guest, before, MountTable.of(self.known.values()))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# ============================================================================ poll
def _hold_ns(path: str) -> None:
    """In a forked child: enter the namespace and wait (report_ready) while the parent opens
    our /proc/PID/mountinfo."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(fd, sc.CLONE_NEWNS, path)
    os.close(fd)
    child.report_ready()


def open_mountinfo(ns_path: str | None, proc: str = "/proc") -> int:
    """An fd of a mountinfo file showing the namespace at ns_path (None: ours), as a process
    at its root sees it. The file keeps the namespace (not the process) it was opened on."""
    if ns_path is None:
        return os.open(f"{proc}/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    helper = child.Child.start(_hold_ns, ns_path)
    try:
        helper.ready(timeout=10)
        return os.open(f"{proc}/{helper.pid}/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.close()


def _read_fd(fd: int) -> MountTable:
    os.lseek(fd, 0, os.SEEK_SET)
    return MountTable.parse(read_to_end(fd).decode("utf-8", "surrogateescape"))


class PollSource:
    """Events of one namespace by POLLPRI on its mountinfo and a diff of the table."""

    def __init__(self, guest: str, ns_path: str | None, proc: str = "/proc") -> None:
        self.guest = guest
        self.fd = open_mountinfo(ns_path, proc)
        self.table = _read_fd(self.fd)
        self.events = select.POLLPRI | select.POLLERR

    def read(self) -> list[MountEvent]:
        now = _read_fd(self.fd)
        out = diff(self.guest, self.table, now)
        self.table = now
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

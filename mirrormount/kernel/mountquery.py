"""Questions about single mounts that must not cost O(size of the mount table).

A host with 500 guests has tens of thousands of mounts; reading /proc/self/mountinfo then
costs tens of milliseconds in the kernel alone, so create would get slower with every guest.
Here, statx(STATX_MNT_ID_UNIQUE) names the mount at a path and statmount(2) (Linux 6.8+)
describes it. Older kernels fall back to one mountinfo scan that fully parses only the lines
asked for.

`status` needs more than single mounts: one mirror's whole subtree, and every host mount
outside BASE (to see whether a mirror mount shares a peer group with the host). table_beside
reads the table once and parses only those lines; the other guests' mirrors, which are nearly
all of a big host's table, are skipped on a look at their mountpoint (select_lines, pure).

Privilege: none.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator

from . import syscalls as sc
from .mountinfo import Mount, MountTable, parse_line, unescape

# None: not tried yet. Kernels before 6.8 (Debian's 6.1 among them) have no statmount and
# no STATX_MNT_ID_UNIQUE; MIRRORMOUNT_NO_STATMOUNT=1 forces that path here, for tests.
# MIRRORMOUNT_NO_UNIQUE_ID=1 does the same: statmount names mounts by their unique ids.
_statmount_ok: bool | None = False if (os.environ.get("MIRRORMOUNT_NO_STATMOUNT") or
                                       os.environ.get("MIRRORMOUNT_NO_UNIQUE_ID")) else None


def _unique_id(path: str) -> int | None:
    st = sc.statx(path, flags=sc.AT_SYMLINK_NOFOLLOW, mask=sc.STATX_MNT_ID_UNIQUE)
    return st.mnt_id if st.mask & sc.STATX_MNT_ID_UNIQUE else None


# How often a path is looked at again when its mount went away between statx and statmount.
_RACE_RETRIES = 8


def _via_statmount(path: str) -> Mount | None:
    """The topmost mount whose root is at path, or None when path is not a mountpoint.

    One statx and one statmount. A path that is no mountpoint lies inside a mount attached
    elsewhere, which the mnt_point test below turns away; asking the parent directory first
    would only save that statmount, and cost a statx for every path that is a mountpoint,
    which is nearly every path asked about (`list` asks 2-7 per guest)."""
    for attempt in range(_RACE_RETRIES):
        try:
            mid = _unique_id(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if mid is None:
            raise NotImplementedError
        try:
            sm = sc.statmount(mid)
            break
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                raise NotImplementedError from exc
            # ENOENT: the mount was unmounted after statx named it (a destroy running
            # beside this read-only caller, which holds no lock; the last destroy unmounts
            # BASE and STATE). What is at path now is another mount, or none: look again.
            if exc.errno != errno.ENOENT or attempt + 1 == _RACE_RETRIES:
                raise
    if sm.mnt_point != path:
        return None  # path lies inside a mount attached elsewhere: no mountpoint
    if sm.sb_source is None:
        raise NotImplementedError    # 6.8-6.12: no source; ownership needs it (guest/owner.py)
    prop = sm.propagation
    return Mount(mount_id=sm.mnt_id_old, parent_id=sm.parent_id_old, major=sm.dev_major,
                 minor=sm.dev_minor, root=sm.mnt_root, mountpoint=sm.mnt_point, options="",
                 shared=sm.peer_group if prop & sc.MS_SHARED else None,
                 master=sm.master if prop & sc.MS_SLAVE else None,
                 unbindable=bool(prop & sc.MS_UNBINDABLE), fstype=sm.fs_type,
                 source=sm.sb_source)


def _mountpoint(line: str) -> str | None:
    """A mountinfo line's mountpoint (field 5), decoded; None if the line has no such field.
    Only a field holding a backslash has escapes to undo: sparing the regex for the rest
    matters on a table of tens of thousands of lines."""
    fields = line.split(" ", 5)
    if len(fields) < 6:
        return None
    return unescape(fields[4]) if "\\" in fields[4] else fields[4]


def _via_mountinfo(paths: set[str], proc: str = "/proc") -> list[Mount]:
    found = []
    with open(f"{proc}/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            if _mountpoint(line) in paths:
                found.append(parse_line(line))
    return found


def select_lines(lines: Iterable[str], skip_under: str,
                 keep: Iterable[str] = ()) -> Iterator[str]:
    """The mountinfo lines whose mountpoint is not strictly beneath skip_under, or is at or
    beneath a path in keep. Blank lines are dropped; any other line without a mountpoint is
    passed on, for parse_line to refuse. skip_under "/" skips nothing."""
    top = skip_under.rstrip("/")
    skip = top + "/"
    kept = {k.rstrip("/") or "/" for k in keep}
    # is_under as one startswith per line, and no unescape without a backslash: this loop
    # runs for each of every other guest's mounts (52k lines at 1,000 guests).
    kept_under = tuple("/" if k == "/" else k + "/" for k in kept)
    for line in lines:
        fields = line.split(" ", 5)
        if len(fields) < 6:
            if line.strip():
                yield line
            continue
        mp = unescape(fields[4]) if "\\" in fields[4] else fields[4]
        if not top or not mp.startswith(skip) or mp in kept or mp.startswith(kept_under):
            yield line


def table_beside(skip_under: str, keep: Iterable[str] = (), proc: str = "/proc") -> MountTable:
    """The caller's mount table without the mounts strictly beneath skip_under, except those
    at or beneath a path in keep (select_lines). One read of mountinfo, which the kernel
    writes whole; Python parses only what is kept."""
    with open(f"{proc}/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    return MountTable.of(parse_line(line)
                         for line in select_lines(text.split("\n"), skip_under, keep))


def stack_ids(path: str) -> list[int]:
    """The unique ids (STATX_MNT_ID_UNIQUE) of every mount stacked at path, bottom first
    (mounted on one another at the same mountpoint, tucked mounts included); [] when path
    is not a mountpoint (or is missing). O(stack depth), whatever the size of the table:
    statx names the top, and statmount's mnt_parent_id leads down while the parent is
    mounted at the same path (include/uapi/linux/mount.h struct statmount). The bottom is
    what listmount(2) must start from to list everything at or beneath path, hidden
    mounts too, as a scan of mountinfo by path sees them. NotImplementedError where the
    kernel has no unique ids or statmount (before 6.8) or MIRRORMOUNT_NO_UNIQUE_ID /
    _NO_STATMOUNT is set; the caller then scans mountinfo."""
    if _statmount_ok is False:
        raise NotImplementedError("statmount")
    want = path.rstrip("/") or "/"
    try:
        uid = _unique_id(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    if uid is None:
        raise NotImplementedError("STATX_MNT_ID_UNIQUE")
    ids: list[int] = []
    while True:
        try:
            sm = sc.statmount(uid)
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EINVAL):
                raise NotImplementedError("statmount") from exc
            if exc.errno != errno.ENOENT:
                raise
            break       # unmounted meanwhile (a destroy beside this unlocked reader)
        if sm.mnt_point != want:
            break       # the top lies inside a mount attached elsewhere, or the stack ended
        ids.append(uid)
        if sm.parent_id in (0, uid):
            break       # the namespace's root mount is its own parent
        uid = sm.parent_id
    return ids[::-1]


def cheap() -> bool:
    """True when single-mount lookups avoid reading the whole table (statmount works)."""
    if _statmount_ok is None:
        mounts_at(["/"])
    return _statmount_ok is not False


def mounts_at(paths: Iterable[str]) -> MountTable:
    """A partial MountTable holding only the (topmost) mounts at these paths."""
    wanted = set(paths)
    global _statmount_ok
    if _statmount_ok is not False:
        try:
            table = MountTable.of(m for m in (_via_statmount(p) for p in sorted(wanted)) if m)
            _statmount_ok = True
            return table
        except NotImplementedError:
            _statmount_ok = False
    return MountTable.of(_via_mountinfo(wanted))

"""System facts that pin a filesystem without any process (kernel-findings §9, step 4): swap
files (/proc/swaps), loop devices' backing files (sysfs and LOOP_GET_STATUS64), nfsd exports,
and block devices stacked on a device (dm/md holders); plus the device's identity for reports.

The parsers (parse_swaps, parse_exports, unpack_loop_info) are pure: text or bytes in, values
out. read_facts() reads them all once per query; the judge matches them by device (and inode
where the kernel tells it).

Privilege: none to read; LOOP_GET_STATUS64 needs /dev/loopN opened, and without it a loop
device's backing file is matched by the path sysfs shows.
"""
from __future__ import annotations

import fcntl
import os
import struct
from dataclasses import dataclass

from ..kernel.mountinfo import unescape
from ..kernel.procfs import read_text
from . import devices

NFSD_EXPORTS = ("/proc/fs/nfsd/exports", "/var/lib/nfs/etab")
LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 (linux/loop.h): lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit,
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags, lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32], lo_init[2].
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")


# ============================================================================ pure parsing
@dataclass(frozen=True)
class SwapEntry:
    path: str
    kind: str            # file | partition
    deleted: bool = False


def parse_swaps(text: str) -> list[SwapEntry]:
    """/proc/swaps. The kernel escapes blanks and backslashes in the name as octal and appends
    ' (deleted)' to a swap file that was unlinked."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 2:
            continue
        # The name has no raw blanks: even the " (deleted)" d_path appends is escaped (\040).
        path = unescape(fields[0])
        deleted = path.endswith(" (deleted)")
        if deleted:
            path = path[:-len(" (deleted)")]
        out.append(SwapEntry(path, fields[1], deleted))
    return out


def parse_exports(text: str) -> list[str]:
    """Exported paths from /proc/fs/nfsd/exports or /var/lib/nfs/etab (first field, octal
    escaped; comment lines start with #)."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        path = unescape(line.split()[0])
        if path not in out:
            out.append(path)
    return out


def unpack_loop_info(buf: bytes) -> tuple[int, int, str]:
    """(backing file st_dev, backing file inode, file name) from a struct loop_info64."""
    fields = _LOOP_INFO64.unpack(buf[:_LOOP_INFO64.size])
    name = fields[9].split(b"\0", 1)[0].decode(errors="replace")
    return fields[0], fields[1], name


# ============================================================================ system facts
@dataclass(frozen=True)
class LoopDevice:
    name: str            # loop3
    backing: str         # as /sys shows it (relative to the namespace that opened it)
    dev: int | None      # the backing file's st_dev and inode, from LOOP_GET_STATUS64
    ino: int | None


@dataclass(frozen=True)
class Facts:
    swaps: tuple[SwapEntry, ...]
    loops: tuple[LoopDevice, ...]
    exports: tuple[str, ...]

    @property
    def probes(self) -> list[str]:
        """Paths worth stat()ing in every namespace, to tell which copy they lie on."""
        out = [s.path for s in self.swaps if s.kind == "file" and not s.deleted]
        out += [lo.backing for lo in self.loops if lo.backing.startswith("/")]
        return out


def read_facts(sys_root: str = "/sys", proc: str = "/proc") -> Facts:
    swaps = parse_swaps(read_text(f"{proc}/swaps") or "")
    loops = []
    try:
        names = sorted(n for n in os.listdir(f"{sys_root}/block") if n.startswith("loop"))
    except OSError:
        names = []
    for n in names:
        backing = read_text(f"{sys_root}/block/{n}/loop/backing_file")
        if backing is None:
            continue     # not bound
        dev = ino = None
        try:
            fd = os.open(f"/dev/{n}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            try:
                buf = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(_LOOP_INFO64.size))
                dev, ino, _ = unpack_loop_info(buf)
            finally:
                os.close(fd)
        except OSError:
            pass         # no node in /dev here: fall back to the path as sysfs shows it
        loops.append(LoopDevice(n, backing.rstrip("\n"), dev, ino))
    exports: list[str] = []
    for path in NFSD_EXPORTS:
        text = read_text(path)
        if text:
            exports = parse_exports(text)
            break
    return Facts(tuple(swaps), tuple(loops), tuple(exports))


def block_holders(major: int, minor: int, sys_root: str = "/sys") -> list[str]:
    try:
        return sorted(os.listdir(f"{sys_root}/dev/block/{major}:{minor}/holders"))
    except OSError:
        return []


def describe_device(major: int, minor: int, fstype: str, source: str) -> dict:
    """Device identity (devices.py: udev or sysfs). It is decoration: if reading it fails,
    the pins must still be reported, so fall back to what mountinfo already told us."""
    try:
        return devices.describe_device(major, minor, fstype, source)
    except Exception:  # noqa: BLE001
        return {"devnode": source if source.startswith("/dev/") else None,
                "majmin": f"{major}:{minor}", "fstype": fstype}

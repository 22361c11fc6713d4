"""System facts that pin a filesystem without any process (kernel-findings §9, step 4): swap
files (/proc/swaps), loop devices' backing files and state (sysfs and LOOP_GET_STATUS64), nfsd
exports (the kernel's own table only: /proc/fs/nfsd/exports), binfmt_misc interpreters the
kernel holds open (flag F), and block devices stacked on a device (dm/md holders); plus the
device's identity for reports. The fdinfo parsers of fanotify groups and io_urings are here too:
the kernel holds files for them, and only their fdinfo says which.

The parsers (parse_swaps, parse_exports, parse_binfmt, parse_fanotify_fdinfo,
parse_io_uring_fdinfo, unpack_loop_info) are pure: text or bytes in, values out. read_facts() reads them all once per query; the judge matches them by device (and inode
where the kernel tells it).

Privilege: none to read; LOOP_GET_STATUS64 needs /dev/loopN opened, and without it a loop
device's backing file is matched by the path sysfs shows.
"""
from __future__ import annotations

import fcntl
import os
import struct

from ..record import record
from ..kernel.mountinfo import unescape
from ..kernel.procfs import read_text
from . import devices

# Only the kernel's own export table: /var/lib/nfs/etab is exportfs's wish list, and stays on
# disk, stale, when nfsd is stopped (it then pins nothing).
NFSD_EXPORTS = ("/proc/fs/nfsd/exports",)
BINFMT_MISC = "/proc/sys/fs/binfmt_misc"
LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 (linux/loop.h): lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit,
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags, lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32], lo_init[2].
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")


# ============================================================================ pure parsing
@record(frozen=True)
class SwapEntry:
    """One active swap area (/proc/swaps): a file or a partition."""

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


@record(frozen=True)
class BinfmtEntry:
    """One binfmt_misc entry (/proc/sys/fs/binfmt_misc/NAME): its interpreter and flags."""

    name: str            # the file under /proc/sys/fs/binfmt_misc
    interpreter: str     # as registered: a path in the registering process's namespace
    flags: str           # "F": the kernel opened the interpreter at registration and holds it
    enabled: bool


def parse_binfmt(name: str, text: str) -> BinfmtEntry | None:
    """One /proc/sys/fs/binfmt_misc/NAME file (fs/binfmt_misc.c, entry_status): 'enabled' or
    'disabled', then 'interpreter PATH', 'flags: LETTERS', then the magic or extension."""
    lines = text.splitlines()
    interp, flags = None, ""
    for line in lines[1:]:
        if line.startswith("interpreter "):
            interp = line[len("interpreter "):]
        elif line.startswith("flags:"):
            flags = line[len("flags:"):].strip()
    if not lines or interp is None:
        return None
    return BinfmtEntry(name, interp, flags, lines[0].strip() == "enabled")


def _kernel_dev(text: str) -> int:
    """A dev_t as the kernel prints it in fdinfo ('%x' of the in-kernel encoding: major in the
    top 12 bits, minor in the low 20; include/linux/kdev_t.h) -> a user-space dev_t."""
    raw = int(text, 16)
    return os.makedev(raw >> 20, raw & 0xFFFFF)


@record(frozen=True)
class FanotifyMark:
    """One mark of a fanotify group, from its fd's fdinfo (fs/notify/fdinfo.c)."""

    kind: str            # mount | inode | sb
    mnt_id: int | None   # mount marks
    dev: int | None      # inode and sb marks: the superblock's device (user-space dev_t)
    ino: int | None


def parse_fanotify_fdinfo(text: str) -> list[FanotifyMark]:
    """The marks of a fanotify group from /proc/PID/fdinfo/FD (fs/notify/fdinfo.c):
    'fanotify mnt_id:%x ...', 'fanotify ino:%lx sdev:%x ...', 'fanotify sdev:%x ...'."""
    out = []
    for line in text.splitlines():
        if not line.startswith("fanotify "):
            continue
        fields = dict(f.split(":", 1) for f in line.split()[1:] if ":" in f)
        try:
            if "mnt_id" in fields:
                out.append(FanotifyMark("mount", int(fields["mnt_id"], 16), None, None))
            elif "ino" in fields and "sdev" in fields:
                out.append(FanotifyMark("inode", None, _kernel_dev(fields["sdev"]),
                                        int(fields["ino"], 16)))
            elif "sdev" in fields:
                out.append(FanotifyMark("sb", None, _kernel_dev(fields["sdev"]), None))
        except ValueError:
            continue
    return out


def parse_io_uring_fdinfo(text: str) -> list[str]:
    """Registered files of an io_uring from /proc/PID/fdinfo/FD (io_uring/fdinfo.c): after
    'UserFiles:\tN', lines '%5u: PATH' (the path as the reader sees it, with blanks and
    backslashes octal escaped). The kernel holds each one until it is unregistered or the
    ring is freed, whether or not the process still has an fd to it."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("UserFiles:"):
            inside = True
            continue
        if not inside:
            continue
        head, sep, path = line.partition(": ")
        if not sep or not head.strip().isdigit():
            break    # the next section (UserBufs:, PollList:, ...)
        out.append(unescape(path))
    return out


def unpack_loop_info(buf: bytes) -> tuple[int, int, str]:
    """(backing file st_dev, backing file inode, file name) from a struct loop_info64."""
    fields = _LOOP_INFO64.unpack(buf[:_LOOP_INFO64.size])
    name = fields[9].split(b"\0", 1)[0].decode(errors="replace")
    return fields[0], fields[1], name


# ============================================================================ system facts
@record(frozen=True)
class LoopDevice:
    """One bound loop device and its backing file (/sys/block/loopN, LOOP_GET_STATUS64)."""

    name: str            # loop3
    backing: str         # as /sys shows it (relative to the namespace that opened it)
    dev: int | None      # the backing file's st_dev and inode, from LOOP_GET_STATUS64
    ino: int | None
    rdev: tuple[int, int] | None = None    # the loop device's own MAJ:MIN
    autoclear: bool = False                # detach already asked for: it goes at last close


@record(frozen=True)
class Facts:
    """What the kernel holds outside processes, read once per query: swaps, loop devices,
    nfsd exports and binfmt_misc entries."""

    swaps: tuple[SwapEntry, ...]
    loops: tuple[LoopDevice, ...]
    exports: tuple[str, ...]
    binfmts: tuple[BinfmtEntry, ...] = ()

    @property
    def probes(self) -> list[str]:
        """Paths worth stat()ing in every namespace, to tell which copy they lie on."""
        out = [s.path for s in self.swaps if s.kind == "file" and not s.deleted]
        out += [lo.backing for lo in self.loops if lo.backing.startswith("/")]
        out += [b.interpreter for b in self.binfmts if b.interpreter.startswith("/")]
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
        majmin = (read_text(f"{sys_root}/block/{n}/dev") or "").strip().partition(":")
        rdev = (int(majmin[0]), int(majmin[2])) if majmin[2].isdigit() else None
        autoclear = (read_text(f"{sys_root}/block/{n}/loop/autoclear") or "").strip() == "1"
        loops.append(LoopDevice(n, backing.rstrip("\n"), dev, ino, rdev, autoclear))
    exports: list[str] = []
    for path in NFSD_EXPORTS:
        text = read_text(path.replace("/proc", proc, 1))
        if text:
            exports = parse_exports(text)
            break
    return Facts(tuple(swaps), tuple(loops), tuple(exports), read_binfmts(proc))


def read_binfmts(proc: str = "/proc") -> tuple[BinfmtEntry, ...]:
    """binfmt_misc entries whose interpreter the kernel holds open (flag F), where
    binfmt_misc is mounted at /proc/sys/fs/binfmt_misc; none where it is not (unmounted, the
    kernel has no entries we could read)."""
    root = BINFMT_MISC.replace("/proc", proc, 1)
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return ()
    out = []
    for n in names:
        if n in ("register", "status"):
            continue
        entry = parse_binfmt(n, read_text(f"{root}/{n}") or "")
        if entry is not None and "F" in entry.flags:
            out.append(entry)
    return tuple(out)


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

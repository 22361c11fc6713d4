"""Thin wrappers over the mount and namespace syscalls; with nsfs_calls.py (the mount
namespace ioctls and fanotify mount marks, Linux 6.11+), the only modules that touch ctypes.

Every wrapper returns a plain result or raises ``errors.KernelError``: an OSError with
``errno``, ``op`` (the syscall), ``filename``/``filename2`` (the paths) and the plain strerror,
so nothing has to be parsed back out of a message, and the error survives a pickle from a
forked child intact. Only the CLI turns it into text (``errors.describe``). Nothing here
decides policy; it only speaks to the kernel.

Python 3.11 has no os.setns / os.unshare / os.statx, and glibc may lack wrappers for the new
mount API, so everything goes through ``syscall(2)`` with numbers from a per-architecture table.

Privilege: every call except statx and openat2 needs CAP_SYS_ADMIN in the initial user namespace.
"""
from __future__ import annotations

import array
import ctypes
import errno
import os

from ..record import record
from ..errors import KernelError

# The running program's own symbols include libc's. (ctypes.util.find_library would import
# subprocess and shell out: ~10 ms of start-up for every command.)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def library_loads(soname: str) -> bool:
    """Whether the dynamic loader finds and loads the shared library `soname` (dlopen(3),
    its standard search: the ld.so cache, LD_LIBRARY_PATH, the default directories)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True

# Syscall numbers differ per architecture; the new mount API (428+) is shared by all of them.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"unshare": 272, "setns": 308, "pivot_root": 155, "statx": 332, "open_tree": 428,
               "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "openat2": 437,
               "mount_setattr": 442, "statmount": 457, "listmount": 458, "capget": 125,
               "capset": 126},
    "aarch64": {"unshare": 97, "setns": 268, "pivot_root": 41, "statx": 291, "open_tree": 428,
                "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "openat2": 437,
                "mount_setattr": 442, "statmount": 457, "listmount": 458, "capget": 90,
                "capset": 91},
}
MACHINE = os.uname().machine
_NR = _SYSCALLS.get(MACHINE, {})

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
# Bit 31: internal to the kernel; mount(2) refuses it (EINVAL), except as part of the old
# magic MS_MGC_VAL (0xC0ED0000 in the top 16 bits), which the kernel strips, propagation
# bits and all, before looking at the flags (fs/namespace.c path_mount / ksys_mount).
MS_NOUSER = 1 << 31
PROPAGATION_FLAGS = MS_UNBINDABLE | MS_PRIVATE | MS_SLAVE | MS_SHARED

# umount2(2) flags
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# clone(2) namespace flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# open_tree / move_mount / mount_setattr
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
AT_RECURSIVE = 0x8000
AT_FDCWD = -100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
# Linux 5.15+ (include/uapi/linux/mount.h; fs/namespace.c do_set_group): the target mount,
# which must be private, joins the source mount's peer group (and its master, if the source
# is a slave). Same superblock, and the source's root at or above the target's. The one way
# to put a mount back into a peer group it left.
MOVE_MOUNT_SET_GROUP = 0x100

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
O_PATH = 0o10000000

# statx
STATX_MNT_ID = 0x1000
STATX_MNT_ID_UNIQUE = 0x4000


def _nr(name: str) -> int:
    try:
        return _NR[name]
    except KeyError:
        raise KernelError(errno.ENOSYS, name,
                          where=f"(no syscall number known for {MACHINE})") from None


def _check(ret: int, op: str, *paths: str) -> int:
    """Raise KernelError(errno, op, path[, path2]) when a libc/syscall call returned -1."""
    if ret == -1:
        raise KernelError(ctypes.get_errno(), op, *(p or None for p in paths[:2]))
    return ret


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2). Used both for new mounts and for propagation changes (source/fstype None).
    A failure names source and target, or only the target when there is no source."""
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount",
           *((source, target) if source is not None else (target,)))


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(_libc.syscall(_nr("unshare"), ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0, what: str = "") -> None:
    """setns(2). For CLONE_NEWNS the caller must be single-threaded: call it in a forked child."""
    _check(_libc.syscall(_nr("setns"), ctypes.c_int(fd), ctypes.c_int(nstype)), "setns", what)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_nr("pivot_root"), _b(new_root), _b(put_old)), "pivot_root", new_root,
           put_old)


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    """open_tree(2): with OPEN_TREE_CLONE|AT_RECURSIVE, a detached copy of the tree at path."""
    return _check(_libc.syscall(_nr("open_tree"), ctypes.c_int(dirfd), _b(path),
                                ctypes.c_uint(flags | OPEN_TREE_CLOEXEC)), "open_tree", path)


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str, flags: int,
               what: str = "") -> None:
    _check(_libc.syscall(_nr("move_mount"), ctypes.c_int(from_fd), _b(from_path),
                         ctypes.c_int(to_fd), _b(to_path), ctypes.c_uint(flags)),
           "move_mount", what or from_path, to_path)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


# Per-mount attributes (include/uapi/linux/mount.h; mount_setattr(2), fsmount(2)). The atime
# setting is not a bit but a 3-valued field under MOUNT_ATTR__ATIME: to change it, put the
# mask in attr_clr and exactly one of RELATIME (0), NOATIME, STRICTATIME in attr_set.
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000     # Linux 5.14+


def mount_setattr(path: str, propagation: int, recursive: bool = True,
                  dirfd: int = AT_FDCWD, flags: int = 0, attr_set: int = 0,
                  attr_clr: int = 0) -> None:
    """mount_setattr(2): propagation and/or MOUNT_ATTR_* flags set and cleared, possibly of a
    detached tree (dirfd + "" + AT_EMPTY_PATH)."""
    attr = _MountAttr(attr_set, attr_clr, propagation, 0)
    at = flags | (AT_RECURSIVE if recursive else 0)
    _check(_libc.syscall(_nr("mount_setattr"), ctypes.c_int(dirfd), _b(path), ctypes.c_uint(at),
                         ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr", path)


# fsopen(2) / fsconfig(2) / fsmount(2), Linux 5.2+: a filesystem is configured in a context
# fd, option by option, and only then created and handed back as a detached mount. The kernel
# refuses a bad option at the fsconfig call that sets it, before anything exists.
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0        # key only ("ro", "sync", a filesystem's flag option)
FSCONFIG_SET_STRING = 1      # key=value ("source", "size=1m")
FSCONFIG_CMD_CREATE = 6      # create (or find) the superblock
FSMOUNT_CLOEXEC = 0x1


def fsopen(fstype: str) -> int:
    """fsopen(2): a filesystem context for `fstype`. ENODEV: the kernel knows no such type."""
    return _check(_libc.syscall(_nr("fsopen"), _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)),
                  "fsopen", fstype)


def fs_messages(fd: int) -> list[str]:
    """What the kernel logged into a filesystem context (Documentation/filesystems/mount_api
    .rst, "Error handling"): one message per read(), "e "/"w "/"i " then the text, until
    ENODATA. Without the prefix; [] when there is nothing (or the fd is not a context)."""
    out: list[str] = []
    for _ in range(64):        # the kernel keeps at most 8; a bound in case of a surprise
        try:
            raw = os.read(fd, 4096)
        except OSError:
            break              # ENODATA: nothing more
        if not raw:
            break
        text = os.fsdecode(raw).strip()
        out.append(text[2:] if text[1:2] == " " and text[:1] in "ewi" else text)
    return out


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None,
             what: str = "") -> None:
    """fsconfig(2). On failure, the KernelError (op "fsconfig", path `what` or the key) carries
    the filesystem's own words in ``detail`` ("tmpfs: Unknown parameter 'x'")."""
    ret = _libc.syscall(_nr("fsconfig"), ctypes.c_int(fd), ctypes.c_uint(cmd), _b(key),
                        _b(value), ctypes.c_int(0))
    if ret == -1:
        err = KernelError(ctypes.get_errno(), "fsconfig", what or key or None)
        err.detail = "; ".join(fs_messages(fd)) or None
        raise err


def fsmount(fd: int, attr_flags: int = 0) -> int:
    """fsmount(2): the created filesystem as a detached mount (an O_PATH-like fd), attached
    nowhere until move_mount. attr_flags: MOUNT_ATTR_* for that mount."""
    return _check(_libc.syscall(_nr("fsmount"), ctypes.c_int(fd),
                                ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags)),
                  "fsmount")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2). With RESOLVE_IN_ROOT, '..' and absolute symlinks stay inside dirfd."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    return _check(_libc.syscall(_nr("openat2"), ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                                ctypes.c_size_t(ctypes.sizeof(how))), "openat2", path)


class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32),
                ("__reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("stx_mask", ctypes.c_uint32), ("stx_blksize", ctypes.c_uint32),
                ("stx_attributes", ctypes.c_uint64), ("stx_nlink", ctypes.c_uint32),
                ("stx_uid", ctypes.c_uint32), ("stx_gid", ctypes.c_uint32),
                ("stx_mode", ctypes.c_uint16), ("__spare0", ctypes.c_uint16),
                ("stx_ino", ctypes.c_uint64), ("stx_size", ctypes.c_uint64),
                ("stx_blocks", ctypes.c_uint64), ("stx_attributes_mask", ctypes.c_uint64),
                ("stx_atime", _StatxTimestamp), ("stx_btime", _StatxTimestamp),
                ("stx_ctime", _StatxTimestamp), ("stx_mtime", _StatxTimestamp),
                ("stx_rdev_major", ctypes.c_uint32), ("stx_rdev_minor", ctypes.c_uint32),
                ("stx_dev_major", ctypes.c_uint32), ("stx_dev_minor", ctypes.c_uint32),
                ("stx_mnt_id", ctypes.c_uint64), ("__spare2", ctypes.c_uint64 * 13)]


@record(frozen=True)
class StatxResult:
    """What statx(2) says of a path that mirrormount asks about (mount id, device,
    attributes)."""

    mnt_id: int
    dev_major: int
    dev_minor: int
    ino: int
    mode: int
    mask: int = 0


_statx_buf = _Statx()
_statx_nr: int | None = _NR.get("statx")


def statx(path: str, dirfd: int = AT_FDCWD, flags: int = 0,
          mask: int = STATX_MNT_ID) -> StatxResult:
    """statx(2) asking for the mount id. Follows the final link (so /proc/PID/cwd names the
    directory the process uses, resolved by the kernel in *its* namespace, not ours)."""
    if _statx_nr is None:
        _nr("statx")
    buf = _statx_buf
    ret = _libc.syscall(_statx_nr, ctypes.c_int(dirfd), _b(path),
                        ctypes.c_int(flags | AT_NO_AUTOMOUNT), ctypes.c_uint(mask),
                        ctypes.byref(buf))
    _check(ret, "statx", path)
    return StatxResult(buf.stx_mnt_id, buf.stx_dev_major, buf.stx_dev_minor, buf.stx_ino,
                       buf.stx_mode, buf.stx_mask)


# statmount(2), Linux 6.8+: one mount's facts by its unique id, without reading mountinfo.
STATMOUNT_SB_BASIC = 0x1
STATMOUNT_MNT_BASIC = 0x2
STATMOUNT_MNT_ROOT = 0x8
STATMOUNT_MNT_POINT = 0x10
STATMOUNT_FS_TYPE = 0x20
STATMOUNT_SB_SOURCE = 0x200     # 6.13 (include/uapi/linux/mount.h); older kernels leave it unset


STATMOUNT_MNT_NS_ID = 0x80       # 6.11: the namespace the mount belongs to
LSMT_ROOT = 0xFFFFFFFFFFFFFFFF   # listmount: start from the (caller's or namespace's) root


class _MntIdReq(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("spare", ctypes.c_uint32),
                ("mnt_id", ctypes.c_uint64), ("param", ctypes.c_uint64)]


class _MntIdReqV1(ctypes.Structure):
    """MNT_ID_REQ_SIZE_VER1 (32 bytes, Linux 6.11, include/uapi/linux/mount.h): mnt_ns_id
    names another mount namespace (its NS_GET_MNTNS_ID); 0 means the caller's."""
    _fields_ = [("size", ctypes.c_uint32), ("spare", ctypes.c_uint32),
                ("mnt_id", ctypes.c_uint64), ("param", ctypes.c_uint64),
                ("mnt_ns_id", ctypes.c_uint64)]


def _mnt_id_req(mnt_id: int, param: int, ns_id: int) -> ctypes.Structure:
    # The 24-byte VER0 form when no namespace is named: 6.8-6.10 refuse the larger size.
    if ns_id:
        return _MntIdReqV1(ctypes.sizeof(_MntIdReqV1), 0, mnt_id, param, ns_id)
    return _MntIdReq(ctypes.sizeof(_MntIdReq), 0, mnt_id, param)


class _StatmountHead(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("mnt_opts", ctypes.c_uint32),
                ("mask", ctypes.c_uint64), ("sb_dev_major", ctypes.c_uint32),
                ("sb_dev_minor", ctypes.c_uint32), ("sb_magic", ctypes.c_uint64),
                ("sb_flags", ctypes.c_uint32), ("fs_type", ctypes.c_uint32),
                ("mnt_id", ctypes.c_uint64), ("mnt_parent_id", ctypes.c_uint64),
                ("mnt_id_old", ctypes.c_uint32), ("mnt_parent_id_old", ctypes.c_uint32),
                ("mnt_attr", ctypes.c_uint64), ("mnt_propagation", ctypes.c_uint64),
                ("mnt_peer_group", ctypes.c_uint64), ("mnt_master", ctypes.c_uint64),
                ("propagate_from", ctypes.c_uint64), ("mnt_root", ctypes.c_uint32),
                ("mnt_point", ctypes.c_uint32), ("mnt_ns_id", ctypes.c_uint64),
                ("fs_subtype", ctypes.c_uint32), ("sb_source", ctypes.c_uint32),
                ("spare2", ctypes.c_uint64 * 48)]


@record(frozen=True)
class StatmountResult:
    """What statmount(2) says of one mount (Linux 6.8+): ids, device, propagation,
    filesystem."""

    mnt_id_old: int
    parent_id_old: int
    dev_major: int
    dev_minor: int
    propagation: int        # MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE bits
    peer_group: int
    master: int
    fs_type: str
    mnt_root: str
    mnt_point: str
    sb_source: str | None = None   # None: this kernel does not say (before 6.13)
    mnt_id: int = 0                # the unique 64-bit ids (never reused)
    parent_id: int = 0
    ns_id: int = 0                 # 0: not asked, or before 6.11
    mnt_attr: int = 0              # MOUNT_ATTR_* of this mount
    propagate_from: int = 0        # dominating peer group of a slave (mountinfo's field)


_SM_BUF = ctypes.create_string_buffer(ctypes.sizeof(_StatmountHead) + 8192)


def statmount(unique_id: int, ns_id: int = 0) -> StatmountResult:
    """statmount(2) for one mount (by STATX_MNT_ID_UNIQUE id): O(1), whatever the table size.
    ns_id (Linux 6.11+): look the mount up in that mount namespace instead of the caller's;
    mnt_point is then relative to that namespace's root (fs/namespace.c grab_requested_root).
    ENOENT: no such mount (there); EINVAL on 6.8-6.10 for a nonzero ns_id."""
    want = (STATMOUNT_SB_BASIC | STATMOUNT_MNT_BASIC | STATMOUNT_FS_TYPE | STATMOUNT_MNT_ROOT
            | STATMOUNT_MNT_POINT | STATMOUNT_SB_SOURCE)
    req = _mnt_id_req(unique_id, want, ns_id)  # param: what we want
    _check(_libc.syscall(_nr("statmount"), ctypes.byref(req), _SM_BUF,
                         ctypes.c_size_t(len(_SM_BUF)), ctypes.c_uint(0)), "statmount", "")
    head = _StatmountHead.from_buffer_copy(_SM_BUF)
    base = ctypes.sizeof(_StatmountHead)

    def string(offset: int, bit: int) -> str:
        if not head.mask & bit:
            return ""
        raw = _SM_BUF.raw[base + offset:]
        return os.fsdecode(raw[:raw.index(b"\0")])

    return StatmountResult(head.mnt_id_old, head.mnt_parent_id_old, head.sb_dev_major,
                           head.sb_dev_minor, head.mnt_propagation, head.mnt_peer_group,
                           head.mnt_master, string(head.fs_type, STATMOUNT_FS_TYPE),
                           string(head.mnt_root, STATMOUNT_MNT_ROOT),
                           string(head.mnt_point, STATMOUNT_MNT_POINT),
                           string(head.sb_source, STATMOUNT_SB_SOURCE)
                           if head.mask & STATMOUNT_SB_SOURCE else None,
                           head.mnt_id, head.mnt_parent_id, ns_id, head.mnt_attr,
                           head.propagate_from)


_LM_CHUNK = 1 << 15      # ids per call (256 KiB): a host of 25k mounts in one call


def listmount(parent: int = LSMT_ROOT, ns_id: int = 0) -> list[int]:
    """listmount(2), Linux 6.8+: the unique ids of every mount beneath `parent` (a unique id,
    or LSMT_ROOT for the root, which is then included), recursively, reachable from the
    root, in ascending id order. ns_id (6.11+): in that mount namespace instead of the
    caller's. Asked in chunks, each continuing after the last id seen (param). The kernel
    walks the namespace's whole list for every call, whatever the parent (fs/namespace.c
    do_listmount checks each mount's reachability). ENOSYS before 6.8; EINVAL on 6.8-6.10
    for a nonzero ns_id; ENOENT: no such mount, or no root found in that namespace."""
    out: list[int] = []
    buf = (ctypes.c_uint64 * _LM_CHUNK)()
    last = 0
    nr = _nr("listmount")
    while True:
        req = _mnt_id_req(parent, last, ns_id)
        n = _check(_libc.syscall(nr, ctypes.byref(req), buf, ctypes.c_size_t(_LM_CHUNK),
                                 ctypes.c_uint(0)), "listmount", "")
        out.extend(array.array("Q", ctypes.string_at(buf, n * 8)))
        if n < _LM_CHUNK:
            return out
        last = out[-1]


def can_set_group() -> bool:
    """Whether move_mount(2) knows MOVE_MOUNT_SET_GROUP (Linux 5.15+), asked harmlessly: with
    two bad fds, a kernel that knows the flag gets as far as the fds (EBADF); one that does
    not refuses the flag first (EINVAL, fs/namespace.c: flags & ~MOVE_MOUNT__MASK); no
    move_mount at all is ENOSYS. Nothing is moved either way."""
    if "move_mount" not in _NR:
        return False
    ret = _libc.syscall(_NR["move_mount"], ctypes.c_int(-1), b"", ctypes.c_int(-1), b"",
                        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
                                      | MOVE_MOUNT_SET_GROUP))
    return ret == -1 and ctypes.get_errno() == errno.EBADF


PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4        # prctl(2): 0 = no core dump (fs/coredump.c checks it first)
PR_CAPBSET_DROP = 24       # prctl(2): remove a capability from the bounding set
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_LOWER = 3
_LINUX_CAPABILITY_VERSION_3 = 0x20080522   # include/uapi/linux/capability.h: two u32 words


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities(caps: list[int]) -> None:
    """Take capabilities away from this process and from whatever it execs (capabilities(7)):
    out of the bounding set (prctl PR_CAPBSET_DROP, which needs CAP_SETPCAP: a root exec
    gains only what the bounding set allows), the ambient set, and the inheritable,
    permitted and effective sets (capset(2)), since a root exec would also keep what is
    inheritable. Irreversible; for a child about to exec or to serve as a guest's init."""
    for cap in caps:
        _check(_libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0), "prctl",
               f"PR_CAPBSET_DROP {cap}")
        # EINVAL: no ambient capabilities in this kernel (before 4.3), nothing to lower
        if _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, ctypes.c_ulong(cap), 0, 0) == -1 \
                and ctypes.get_errno() != errno.EINVAL:
            _check(-1, "prctl", f"PR_CAP_AMBIENT_LOWER {cap}")
    head = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_nr("capget"), ctypes.byref(head), data), "capget")
    for cap in caps:
        word, bit = divmod(cap, 32)
        mask = ~(1 << bit) & 0xFFFFFFFF
        data[word].effective &= mask
        data[word].permitted &= mask
        data[word].inheritable &= mask
    _check(_libc.syscall(_nr("capset"), ctypes.byref(head), data), "capset")


def set_process_name(name: str) -> None:
    """prctl(PR_SET_NAME): what ps and /proc/PID/comm show (15 bytes at most)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


PR_SET_MM = 35
PR_SET_MM_ARG_START = 8
PR_SET_MM_ARG_END = 9
_cmdline_buffers: list[ctypes.Array[ctypes.c_char]] = []     # must live as long as the process: the kernel reads it


def set_cmdline(words: list[str]) -> None:
    """What /proc/PID/cmdline (and so `ps -f`, `pgrep -f`) shows: ``words`` as argv.

    First prctl(PR_SET_MM, PR_SET_MM_ARG_START/ARG_END) onto a buffer of our own (prctl(2);
    needs CAP_SYS_RESOURCE; the buffer lies on the heap, below the stack's old argv, so the
    start is set first: the kernel keeps arg_start <= arg_end at each call). Without that
    capability, the old argv area itself is overwritten, as setproctitle(3) does: its
    bounds are fields 48 and 49 of /proc/self/stat (proc(5)); the words are cut to fit and
    the rest is zeroed, so the area still ends in NUL and the kernel shows it as argv
    (fs/proc/base.c get_mm_cmdline). Best effort: the comm name stays either way."""
    data = b"".join(w.encode() + b"\0" for w in words)
    buf = ctypes.create_string_buffer(data, len(data))
    start = ctypes.addressof(buf)
    if _libc.prctl(PR_SET_MM, PR_SET_MM_ARG_START, ctypes.c_ulong(start), 0, 0) == 0 and \
            _libc.prctl(PR_SET_MM, PR_SET_MM_ARG_END, ctypes.c_ulong(start + len(data)),
                        0, 0) == 0:
        _cmdline_buffers.append(buf)
        return
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        arg_start, arg_end = int(fields[45]), int(fields[46])
    except (OSError, IndexError, ValueError):
        return
    size = arg_end - arg_start
    if size <= 1:
        return
    fitted = data[:size - 1].ljust(size, b"\0")
    ctypes.memmove(arg_start, fitted, size)


def set_parent_death_signal(sig: int) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0), "prctl")


def set_dumpable(dumpable: bool) -> None:
    """prctl(PR_SET_DUMPABLE): with 0 the kernel writes no core of this process, whatever
    RLIMIT_CORE and core_pattern say (a pipe core_pattern ignores RLIMIT_CORE)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, ctypes.c_ulong(int(dumpable)), 0, 0, 0), "prctl")


def has_syscall(name: str) -> bool:
    return name in _NR

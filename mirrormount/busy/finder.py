"""Who pins a mount: every copy of it in every mount namespace, and everything that holds them.

`fuser -m`, `lsof` and `lsfd` answer "which processes use this path as I see it". With mirrors
that is the wrong question: a guest's mount has a peer copy under BASE/NAME on the host, maybe
private copies in namespaces that some tool unshared, copies in namespaces kept alive only by an
nsfs file or an open fd, and lazily detached copies that no table lists. The kernel refuses the
guest's umount (EBUSY) when any peer it would propagate to is in use, and a copy that
propagation skips keeps the device alive after the guest's umount has "succeeded"
(kernel-findings §7).

How (kernel-findings §9):
  1. Resolve the target to a mount (or a device) and so to a device number.
  2. One pass over /proc. Each process's cwd/root/exe and every fd is stat()ed; only those on
     the target's device are statx()ed for their mount id (STATX_MNT_ID) and have their link
     text read. /proc/PID/maps is filtered by device, then map_files is statx()ed. The same pass
     records each process's mount namespace and any fd that holds a mount namespace.
  3. Read each distinct mount namespace's table once: through a process living in it, or, for a
     namespace held only by an nsfs file or an fd, from a forked child that setns()es into it.
     Mount ids are global, so a process's mount id is compared with every table directly; link
     text is only shown, never resolved again in our namespace.
  4. Judge: copies are mounts with the target's device and fs root; process pins are mount ids
     among the copies; a mount id on the device that no table lists is a detached copy. Submounts
     and copies that umount propagation would skip come from the tables; swap files, loop
     backing files and nfsd exports are matched by device (and inode where the kernel tells it).

Every /proc read tolerates processes that vanish (ENOENT, ESRCH) and counts those it may not
inspect (EACCES: this machine's PID 1 denies /proc/1/fd even to root).

Privilege: root (other processes' fds and map_files, setns into namespaces).
"""
from __future__ import annotations

import fcntl
import os
import pickle
import posixpath
import re
import stat
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import psutil

from ..kernel import mountinfo
from ..kernel import syscalls as sc
from ..errors import UsageError
from ..kernel.mountinfo import Mount, MountTable, is_under, unescape
from . import devices
from ..guest.nsexec import read_own_mountinfo, run_in_child
from ..guest.model import Layout, is_valid_name
from ..kernel.procfs import parse_nspid, read_text
from ..guest.state import guest_names, load

PROCESS_KINDS = ("cwd", "root", "exe", "fd", "mmap")
PIN_KINDS = (*PROCESS_KINDS, "submount", "leaked-copy", "detached", "swap", "loop", "nfsd-export",
             "holder")
HOST = "host"

# st_dev of these filesystems is not the device mountinfo shows (btrfs subvolumes have their
# own anonymous devices; overlayfs reports the lower/upper fs for files), so the cheap device
# filter would miss pins. For them every fd is statx()ed for its mount id instead.
UNRELIABLE_ST_DEV = frozenset({"btrfs", "overlay", "bcachefs", "zfs", "aufs"})

# Kernel interfaces, not mounts of the guest's own: `busy --all` skips them.
PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "devtmpfs",
                       "debugfs", "tracefs", "securityfs", "pstore", "bpf", "configfs",
                       "fusectl", "hugetlbfs", "binfmt_misc", "autofs", "nsfs", "efivarfs",
                       "rpc_pipefs", "nfsd"})

NFSD_EXPORTS = ("/proc/fs/nfsd/exports", "/var/lib/nfs/etab")
LOOP_GET_STATUS64 = 0x4C05
# struct loop_info64 (linux/loop.h): lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit,
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags, lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32], lo_init[2].
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32s2Q")

T = TypeVar("T")
_MAJMIN = re.compile(r"(\d+):(\d+)")
_NSFS_MNT = re.compile(r"mnt:\[(\d+)\]")


# ============================================================================ results
@dataclass(frozen=True)
class Copy:
    """One copy of the target mount, as its own namespace lists it."""

    namespace: str
    guest: str
    path: str
    mount_id: int

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "guest": self.guest, "path": self.path,
                "mount_id": self.mount_id}


@dataclass(frozen=True)
class Pin:
    """One reason the target stays busy. pid/comm/user are None for pins no process holds
    (a submount, a swap file, a loop device, a namespace kept by an nsfs file)."""

    how: str
    pid: int | None
    guest_pid: int | None
    comm: str | None
    user: str | None
    guest: str
    path: str
    namespace: str | None
    detail: str = field(default="", compare=False)   # extra words for explain(); not in JSON

    def to_json(self) -> dict:
        return {"how": self.how, "pid": self.pid, "guest_pid": self.guest_pid,
                "comm": self.comm, "user": self.user, "guest": self.guest, "path": self.path,
                "namespace": self.namespace}


@dataclass(frozen=True)
class BusyReport:
    target: str
    busy: bool
    device: dict
    copies: tuple[Copy, ...]
    pins: tuple[Pin, ...]
    uninspected: int
    # Not part of the JSON contract: what the target resolved to, for rendering.
    mode: str = field(default="mount", compare=False)        # mount | device | residue
    mount_path: str | None = field(default=None, compare=False)
    guest: str | None = field(default=None, compare=False)

    def to_json(self) -> dict:
        return {"target": self.target, "busy": self.busy, "device": dict(self.device),
                "copies": [c.to_json() for c in self.copies],
                "pins": [p.to_json() for p in self.pins], "uninspected": self.uninspected}


# ============================================================================ pure parsing
@dataclass(frozen=True)
class TargetSpec:
    """What the user typed, classified without touching the system."""

    text: str
    kind: str                        # path | guest | majmin
    path: str | None = None          # host path, or the guest path for kind == guest
    name: str | None = None          # guest name
    major: int | None = None
    minor: int | None = None


def parse_target(text: str) -> TargetSpec:
    """Classify TARGET: a host path, NAME:GUESTPATH, or MAJ:MIN. A device node is a host path
    here; resolve() recognises it by its file type."""
    if not text:
        raise UsageError("empty target: give a host path, NAME:GUESTPATH, /dev/NODE or MAJ:MIN")
    m = _MAJMIN.fullmatch(text)
    if m:
        return TargetSpec(text, "majmin", major=int(m.group(1)), minor=int(m.group(2)))
    if not text.startswith("/") and ":" in text:
        name, _, gpath = text.partition(":")
        if not is_valid_name(name):
            raise UsageError(f"bad target {text!r}: {name!r} is not a guest name")
        if not gpath.startswith("/"):
            raise UsageError(f"bad target {text!r}: the guest path must be absolute "
                             f"(NAME:/path)")
        return TargetSpec(text, "guest", path=posixpath.normpath(gpath), name=name)
    return TargetSpec(text, "path", path=text)


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


@dataclass(frozen=True)
class MapEntry:
    range: str           # "start-end", the name of the /proc/PID/map_files entry
    major: int
    minor: int
    inode: int
    path: str


def maps_on_devices(text: str, devices: Iterable[tuple[int, int]]) -> list[MapEntry]:
    """The lines of /proc/PID/maps whose file lies on one of the devices.

    The device field is "%02x:%02x" (major:minor in hex). A cheap substring test on the whole
    text comes first: most processes map nothing from the target."""
    pats = {f" {ma:02x}:{mi:02x} ": (ma, mi) for ma, mi in devices}
    if not any(p in text for p in pats):
        return []
    out = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6:
            continue
        dev = pats.get(f" {fields[3]} ")
        if dev is None or fields[4] == "0":
            continue
        out.append(MapEntry(fields[0], dev[0], dev[1], int(fields[4]), fields[5]))
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


def fs_dentry(parent: Mount, child: Mount) -> str:
    """Where child sits inside its parent's filesystem (the mountpoint dentry). Two mounts in
    different namespaces correspond when their parents propagate to each other and this path is
    the same: that is how umount propagation finds the copies it removes."""
    rel = posixpath.relpath(child.mountpoint, parent.mountpoint)
    return posixpath.normpath(posixpath.join(parent.root, rel))


def families(m: Mount) -> frozenset[int]:
    """Peer groups a mount belongs to or receives from: mounts that share one are propagated
    copies of each other."""
    return frozenset(g for g in (m.shared, m.master) if g is not None)


# ============================================================================ explanation
def shown(text: str | None) -> str:
    """A path or name fit for a terminal line: control characters and backslashes escaped as
    octal, as the kernel does in mountinfo. File names are chosen by other users, and a
    newline in one must not forge a line of our output."""
    if text is None:
        return "-"
    return "".join(f"\\{ord(c):03o}" if (ord(c) < 32 or c in "\\\x7f") else c for c in text)


_PROCESS_VERBS = {
    "cwd": "has its working directory in {path}",
    "root": "has its root directory in {path}",
    "exe": "is running the program {path}",
    "fd": "holds {path} open",
    "mmap": "has {path} mapped in memory",
}


def who(pin: Pin) -> str:
    """'host process 4242 (bash, user admin)' or 'process 4242 of guest c2 (pid 7 there; ...)'."""
    meta = ", ".join(shown(x) for x in (pin.comm, f"user {pin.user}" if pin.user else None)
                     if x)
    if pin.guest == HOST:
        return f"host process {pin.pid}" + (f" ({meta})" if meta else "")
    inside = f"pid {pin.guest_pid} there" if pin.guest_pid not in (None, pin.pid) else ""
    words = "; ".join(x for x in (inside, meta) if x)
    return f"process {pin.pid} of guest {pin.guest}" + (f" ({words})" if words else "")


def _where(pin: Pin) -> str:
    if pin.guest == HOST:
        return f"in the host's namespace {pin.namespace}" if pin.namespace else "on the host"
    return f"in guest {pin.guest}"


def _shown_pin(pin: Pin) -> Pin:
    return Pin(pin.how, pin.pid, pin.guest_pid, pin.comm, pin.user, pin.guest, shown(pin.path),
               pin.namespace, shown(pin.detail) if pin.detail else "")


def describe_pin(pin: Pin) -> str:
    """One plain clause saying what holds the mount and how."""
    pin = _shown_pin(pin)
    if pin.how in _PROCESS_VERBS:
        return f"{who(pin)} {_PROCESS_VERBS[pin.how].format(path=pin.path)}"
    if pin.how == "detached":
        return (f"{who(pin)} still uses {pin.path} on a lazily detached copy of the filesystem"
                + (f" ({pin.detail})" if pin.detail else ""))
    if pin.how == "submount":
        return f"{pin.path} is mounted beneath it {_where(pin)}"
    if pin.how == "leaked-copy":
        holder = f"kept by {who(pin)}" if pin.pid is not None else (pin.detail or "")
        text = (f"a copy at {pin.path} in mount namespace {pin.namespace}"
                + (f" ({holder})" if holder else "")
                + " will not be removed by the unmount and keeps the filesystem mounted")
        return text
    if pin.how == "swap":
        return f"{pin.path} on it is in use as swap (swapoff {pin.path})"
    if pin.how == "loop":
        return (f"{pin.path} on it backs loop device {pin.detail or '?'}"
                f" (losetup -d {pin.detail or 'LOOPDEV'})")
    if pin.how == "nfsd-export":
        return f"{pin.path} is exported by nfsd (exportfs -u)"
    if pin.how == "holder":
        return f"block device {pin.path} is stacked on its device (a dm or md holder)"
    return f"{pin.how}: {pin.path}"


def explain(report: BusyReport, guest_name: str | None, guest_path: str | None,
            lead: str | None = None) -> str:
    """One plain sentence per pin, e.g. `cannot unmount /mnt/usb in c1: host process 4242
    (bash, user admin) has its working directory in /container/c1/mnt/usb`."""
    if lead is None:
        if guest_name:
            lead = f"cannot unmount {guest_path} in {guest_name}"
        else:
            lead = f"{guest_path or report.target} is busy"
    lines = [f"{lead}: {describe_pin(p)}" for p in report.pins]
    if report.uninspected and (lines or report.busy):
        lines.append(f"{lead}: {report.uninspected} process(es) could not be inspected "
                     "(permission denied), so there may be more")
    return "\n".join(lines)


# ============================================================================ namespaces
@dataclass
class NsView:
    """One mount namespace and how we reach it."""

    ino: int
    guest: str = HOST
    table: MountTable | None = None
    pids: list[int] = field(default_factory=list)
    # How a forked child reaches it: ("root", path) opened where the child is, ("proc", rel)
    # opened relative to the host's /proc. Steps after the first run after the previous setns.
    chain: tuple[tuple[str, str], ...] | None = None
    holders: list[str] = field(default_factory=list)          # for namespaces no process uses
    fd_holders: list[int] = field(default_factory=list)       # pids holding an fd to it
    via_pid: int | None = None      # its table came from /proc/PID (root of PID is ns root)
    probes: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"mnt:[{self.ino}]"


def _open_step(proc_fd: int, kind: str, path: str) -> int:
    """("proc", rel) is opened relative to the host's /proc; ("root", path) where we are."""
    if kind == "proc":
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _enter_steps(proc_fd: int, steps: Iterable[tuple[str, str]]) -> None:
    """setns() into each mount namespace in turn; each step is opened from the previous one."""
    for kind, path in steps:
        fd = _open_step(proc_fd, kind, path)
        try:
            sc.setns(fd, sc.CLONE_NEWNS, path)
        finally:
            os.close(fd)


def _read_tables(proc_fd: int, chains: list[tuple[tuple[str, str], ...]],
                 probes: list[str]) -> list[tuple[str | None, dict, str | None]]:
    """In a forked child: setns into each namespace in turn, read its mountinfo through the
    host's /proc (opened before any setns: a guest's /proc may be another pid namespace's)
    and stat the probe paths as that namespace sees them."""

    # Every chain starts in the caller's namespace: open all first steps before moving.
    first: list[int | OSError] = []
    for chain in chains:
        try:
            first.append(_open_step(proc_fd, *chain[0]))
        except OSError as exc:
            first.append(exc)
    out: list[tuple[str | None, dict, str | None]] = []
    for chain, fd0 in zip(chains, first):
        if isinstance(fd0, OSError):
            out.append((None, {}, f"{chain[0][1]}: {fd0.strerror}"))
            continue
        try:
            sc.setns(fd0, sc.CLONE_NEWNS, chain[0][1])
            os.close(fd0)
            _enter_steps(proc_fd, chain[1:])
            text = read_own_mountinfo(proc_fd)
            stats = {p: _stat_key(p) for p in probes}
            out.append((text, stats, None))
        except OSError as exc:
            out.append((None, {}, f"{exc.strerror}"))
    return out


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class World:
    """Every mount namespace we can find, each table read once."""

    def __init__(self, layout: Layout, probes: Iterable[str] = (),
                 proc: str = "/proc") -> None:
        self.layout = layout
        self.proc = proc
        self.probes = sorted(set(probes))
        self.proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self_ns = os.stat(f"{proc}/self/ns/mnt")
        self.own = self_ns.st_ino
        self.nsfs_dev = self_ns.st_dev
        self.views: dict[int, NsView] = {}
        own = self.view(self.own)
        own.table = MountTable.of(mountinfo.read("self", proc))
        own.probes = {p: _stat_key(p) for p in self.probes}
        # Guests: their mnt (and pid) namespaces by the inodes of their nsfs files.
        self.guest_by_mnt: dict[int, str] = {}
        self.guest_by_pidns: dict[int, str] = {}
        self.rootfs: dict[str, str] = {}
        for name in guest_names(layout):
            holder = layout.ns_file(name, "mnt")
            ino = self._nsfs_ino(holder)
            if ino is None:
                continue
            self.guest_by_mnt[ino] = name
            v = self.view(ino)
            v.guest = name
            v.chain = (("root", holder),)
            v.holders.append(f"nsfs file {holder}")
            pid_ino = self._nsfs_ino(layout.ns_file(name, "pid"))
            if pid_ino is not None:
                self.guest_by_pidns[pid_ino] = name
            rec = load(layout, name)
            self.rootfs[name] = rec.rootfs if rec else "/"

    def close(self) -> None:
        os.close(self.proc_fd)

    def _nsfs_ino(self, path: str) -> int | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_ino if st.st_dev == self.nsfs_dev else None

    def view(self, ino: int) -> NsView:
        v = self.views.get(ino)
        if v is None:
            v = self.views[ino] = NsView(ino, guest=HOST)
        return v

    # ------------------------------------------------------------------ discovery
    def add_processes(self, scan: Scan) -> None:
        for ino, pids in scan.pids_by_ns.items():
            self.view(ino).pids.extend(pids)
        for pid, fdname, ino in scan.nsfs_fds:
            v = self.view(ino)
            v.fd_holders.append(pid)
            if v.chain is None and not v.pids:
                v.chain = (("proc", f"{pid}/fd/{fdname}"),)

    def _discover_nsfs_mounts(self) -> bool:
        """Namespaces held by nsfs binds that appear in tables we have read."""
        new = False
        for v in list(self.views.values()):
            if v.table is None:
                continue
            for m in v.table:
                if m.fstype != "nsfs":
                    continue
                hit = _NSFS_MNT.fullmatch(m.root)
                if not hit:
                    continue
                w = self.view(int(hit.group(1)))
                desc = f"nsfs file {m.mountpoint}" + ("" if v.ino == self.own else
                                                      f" in {v.label}")
                if desc not in w.holders:
                    w.holders.append(desc)
                if w.table is not None or w.chain is not None or w.pids:
                    continue
                if v.ino == self.own:
                    w.chain = (("root", m.mountpoint),)
                elif v.via_pid is not None:
                    w.chain = (("proc", f"{v.via_pid}/root{m.mountpoint}"),)
                elif v.chain is not None:
                    w.chain = v.chain + (("root", m.mountpoint),)
                else:
                    continue
                new = True
        return new

    def read_all(self, only: Iterable[int] | None = None) -> None:
        """Read every namespace not yet read (or just `only`), then any namespace found held
        by an nsfs bind inside those, until nothing new turns up."""
        wanted = set(only) if only is not None else None
        for _ in range(8):   # nsfs binds nest rarely; bound the rounds anyway
            todo = [v for v in self.views.values() if v.table is None and v.error is None
                    and (wanted is None or v.ino in wanted)]
            if not todo:
                if wanted is not None or not self._discover_nsfs_mounts():
                    return
                continue
            batch: list[NsView] = []
            for v in todo:
                if not self._read_via_process(v):
                    if v.chain is None and v.pids:
                        v.chain = (("proc", f"{v.pids[0]}/ns/mnt"),)
                    if v.chain is None:
                        v.error = "no way to reach it"
                    else:
                        batch.append(v)
            if batch:
                results = run_in_child(_read_tables, self.proc_fd, [v.chain for v in batch],
                                       self.probes)
                for v, (text, stats, err) in zip(batch, results):
                    if text is None:
                        v.error = err
                    else:
                        v.table = MountTable.parse(text)
                        v.probes = stats
            if wanted is None:
                self._discover_nsfs_mounts()

    def _read_via_process(self, v: NsView) -> bool:
        """Read /proc/PID/mountinfo of a process in the namespace whose root is the namespace's
        root (a chrooted process's table omits mounts outside its root)."""
        if v.guest != HOST and not v.pids:
            return False
        for pid in v.pids[:8]:
            try:
                if os.readlink(f"{pid}/root", dir_fd=self.proc_fd) != "/":
                    continue
                fd = os.open(f"{pid}/mountinfo", os.O_RDONLY | os.O_CLOEXEC,
                             dir_fd=self.proc_fd)
                with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
            except OSError:
                continue     # vanished, or not ours to read: try the next one
            if not text:
                continue     # a zombie's table reads empty
            v.table = MountTable.parse(text)
            v.via_pid = pid
            v.probes = {p: _stat_key(f"{self.proc}/{pid}/root{p}") for p in self.probes}
            return True
        return False

    def guest_of(self, v: NsView) -> str:
        if v.guest != HOST:
            return v.guest
        for pid in v.pids[:1]:
            g = self.guest_of_pid(pid, v.ino)
            if g != HOST:
                return g
        return HOST

    def guest_of_pid(self, pid: int, mnt_ino: int | None) -> str:
        if mnt_ino is not None and mnt_ino in self.guest_by_mnt:
            return self.guest_by_mnt[mnt_ino]
        if self.guest_by_pidns:
            try:
                ino = os.stat(f"{pid}/ns/pid", dir_fd=self.proc_fd).st_ino
            except OSError:
                return HOST
            return self.guest_by_pidns.get(ino, HOST)
        return HOST

    def read_views(self) -> list[NsView]:
        return [v for v in self.views.values() if v.table is not None]


class Index:
    """Every mount of every namespace, by id, parent, peer group and identity."""

    def __init__(self, views: Iterable[NsView], own: int) -> None:
        self.ns_of: dict[int, NsView] = {}
        self.by_id: dict[int, Mount] = {}
        self.children: dict[int, list[Mount]] = defaultdict(list)
        self.by_shared: dict[int, list[Mount]] = defaultdict(list)
        self.by_master: dict[int, list[Mount]] = defaultdict(list)
        self.by_dev: dict[tuple[int, int], list[Mount]] = defaultdict(list)
        # Own namespace first: when a mount id shows up twice (never, barring races), the
        # namespace we stand in wins.
        for v in sorted(views, key=lambda v: v.ino != own):
            assert v.table is not None
            for m in v.table:
                if m.mount_id in self.by_id:
                    continue
                self.by_id[m.mount_id] = m
                self.ns_of[m.mount_id] = v
                if m.parent_id != m.mount_id:
                    self.children[m.parent_id].append(m)
                if m.shared is not None:
                    self.by_shared[m.shared].append(m)
                if m.master is not None:
                    self.by_master[m.master].append(m)
                self.by_dev[(m.major, m.minor)].append(m)
        self._recv: dict[int, frozenset[int]] = {}

    def parent(self, m: Mount) -> Mount | None:
        p = self.by_id.get(m.parent_id)
        return None if p is None or p.mount_id == m.mount_id else p

    def receivers(self, group: int) -> frozenset[int]:
        """Ids of mounts that receive mount events from peer group `group`: its peers, its
        slaves, and (through slaves that are shared themselves) their peers and slaves."""
        cached = self._recv.get(group)
        if cached is not None:
            return cached
        groups, todo, ids = {group}, [group], set[int]()
        while todo:
            g = todo.pop()
            ids.update(m.mount_id for m in self.by_shared.get(g, ()))
            for m in self.by_master.get(g, ()):
                ids.add(m.mount_id)
                if m.shared is not None and m.shared not in groups:
                    groups.add(m.shared)
                    todo.append(m.shared)
        out = self._recv[group] = frozenset(ids)
        return out

    def propagation_set(self, m: Mount) -> tuple[frozenset[int], str | None]:
        """(mounts whose children an umount of m reaches, m's dentry in its parent).

        umount propagation follows the *parent's* propagation: the kernel looks, in every
        mount that receives from m's parent, for a child at the same dentry."""
        parent = self.parent(m)
        if parent is None or parent.shared is None:
            return frozenset(), None
        return self.receivers(parent.shared), fs_dentry(parent, m)

    def reached(self, c: Mount, recv: frozenset[int], dentry: str | None) -> bool:
        if dentry is None or c.parent_id not in recv:
            return False
        parent = self.parent(c)
        return parent is not None and fs_dentry(parent, c) == dentry


# ============================================================================ the /proc pass
@dataclass(frozen=True)
class ProcRecord:
    pid: int
    how: str             # cwd | root | exe | fd | mmap
    mnt_id: int
    dev: int             # st_dev
    path: str            # the link text: the path as that process sees it


@dataclass
class Scan:
    """What the /proc pass kept. Plain dicts and lists: workers send theirs back pickled."""

    records: list[ProcRecord] = field(default_factory=list)
    ns_of_pid: dict[int, int] = field(default_factory=dict)
    pids_by_ns: dict[int, list[int]] = field(default_factory=dict)
    nsfs_fds: list[tuple[int, str, int]] = field(default_factory=list)
    denied: set[int] = field(default_factory=set)
    processes: int = 0

    def merge(self, other: Scan) -> None:
        self.records += other.records
        self.ns_of_pid.update(other.ns_of_pid)
        for ns, pids in other.pids_by_ns.items():
            self.pids_by_ns.setdefault(ns, []).extend(pids)
        self.nsfs_fds += other.nsfs_fds
        self.denied |= other.denied
        self.processes += other.processes


# Below this many processes a worker's fork costs more than it saves.
PARALLEL_MIN_PROCESSES = 300
MAX_WORKERS = 4


def default_workers(processes: int) -> int:
    """The /proc pass is bound by the kernel's cost of each stat() of /proc/PID/fd/N (about
    3 us: a lookup, a permission check and a magic-link walk), the same work fuser does, so
    the way to be faster than fuser is to do it on every CPU at once. Two workers per CPU:
    measured on a 2-CPU machine shared with other work, 4 workers beat 2 by about 10%, as the
    workers then get a larger share of CPUs that other processes also want."""
    if processes < PARALLEL_MIN_PROCESSES:
        return 1
    return max(1, min(2 * len(os.sched_getaffinity(0)), MAX_WORKERS))


def scan_processes(devices: Iterable[tuple[int, int]], *, full: bool = False,
                   proc: str = "/proc", exclude: Iterable[int] = (),
                   workers: int | None = None) -> Scan:
    """One pass over /proc, keeping what lies on `devices` (all fds when `full`).

    The cheap os.stat of each link filters by device; only survivors pay for statx (mount id)
    and readlink. Processes that vanish are skipped; those we may not read are counted. The
    process list is striped over forked workers (see default_workers)."""
    skip = set(exclude)
    names = [n for n in os.listdir(proc) if n.isdigit() and int(n) not in skip]
    devlist = sorted(set(devices))
    n = default_workers(len(names)) if workers is None else max(1, workers)
    if n == 1:
        return _scan_names(names, devlist, full, proc)
    kids: list[tuple[int, int]] = []
    try:
        for i in range(1, n):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:       # worker: scan its stripe, send it back, never return
                os.close(r)
                try:
                    payload: object = _scan_names(names[i::n], devlist, full, proc)
                except BaseException as exc:  # noqa: BLE001 - the parent re-raises it
                    payload = exc
                try:
                    _write_all(w, pickle.dumps(payload))
                finally:
                    os._exit(0)
            os.close(w)
            kids.append((pid, r))
        out = _scan_names(names[0::n], devlist, full, proc)
    finally:
        parts = []
        for pid, r in kids:
            try:
                parts.append(_read_all(r))
            finally:
                os.close(r)
                os.waitpid(pid, 0)
    for data in parts:
        part = pickle.loads(data) if data else RuntimeError("a /proc scan worker died")
        if isinstance(part, BaseException):
            raise part
        out.merge(part)
    return out


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _scan_names(names: list[str], devlist: list[tuple[int, int]], full: bool,
                proc: str) -> Scan:
    devset = {os.makedev(ma, mi) for ma, mi in devlist}
    proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    nsfs_dev = os.stat(f"{proc}/self/ns/mnt").st_dev
    out = Scan()
    records = out.records
    stat_, statx, readlink, listdir = os.stat, sc.statx, os.readlink, os.listdir
    o_dir = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

    def keep(pid: int, how: str, name: str, dirfd: int, dev: int) -> None:
        try:
            mnt = statx(name, dirfd).mnt_id
            text = readlink(name, dir_fd=dirfd)
        except OSError:
            return   # it went away between the stat and now
        records.append(ProcRecord(pid, how, mnt, dev, text))

    try:
        for name in names:
            pid = int(name)
            try:
                ns = stat_(f"{name}/ns/mnt", dir_fd=proc_fd).st_ino
            except PermissionError:
                out.denied.add(pid)
                continue
            except OSError:
                continue     # gone
            out.processes += 1
            out.ns_of_pid[pid] = ns
            out.pids_by_ns.setdefault(ns, []).append(pid)
            for how in ("cwd", "root", "exe"):
                try:
                    dev = stat_(f"{name}/{how}", dir_fd=proc_fd).st_dev
                except PermissionError:
                    out.denied.add(pid)
                    continue
                except OSError:
                    continue     # a kernel thread has no exe; or gone
                if full or dev in devset:
                    keep(pid, how, f"{name}/{how}", proc_fd, dev)
            try:
                dfd = os.open(f"{name}/fd", o_dir, dir_fd=proc_fd)
            except PermissionError:
                out.denied.add(pid)
                dfd = -1
            except OSError:
                continue
            if dfd >= 0:
                try:
                    fds = listdir(dfd)
                except OSError:
                    fds = []
                try:
                    for fdname in fds:
                        try:
                            dev = stat_(fdname, dir_fd=dfd).st_dev
                        except OSError:
                            continue     # closed meanwhile
                        if full or dev in devset:
                            keep(pid, "fd", fdname, dfd, dev)
                        elif dev == nsfs_dev:
                            try:
                                link = readlink(fdname, dir_fd=dfd)
                            except OSError:
                                continue
                            hit = _NSFS_MNT.fullmatch(link)
                            if hit:
                                out.nsfs_fds.append((pid, fdname, int(hit.group(1))))
                finally:
                    os.close(dfd)
            if devlist:
                _scan_maps(pid, name, proc_fd, devlist, out)
    finally:
        os.close(proc_fd)
    return out


def _scan_maps(pid: int, name: str, proc_fd: int, devices: list[tuple[int, int]],
               out: Scan) -> None:
    try:
        fd = os.open(f"{name}/maps", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    except PermissionError:
        out.denied.add(pid)
        return
    except OSError:
        return
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 17)
            if not chunk:
                break
            chunks.append(chunk)
    except PermissionError:
        out.denied.add(pid)
        return
    except OSError:
        return
    finally:
        os.close(fd)
    text = b"".join(chunks).decode(errors="surrogateescape")
    seen: set[str] = set()
    for e in maps_on_devices(text, devices):
        if e.path in seen:
            continue
        try:
            st = sc.statx(f"{name}/map_files/{e.range}", proc_fd)
        except OSError:
            continue     # unmapped meanwhile
        seen.add(e.path)
        out.records.append(ProcRecord(pid, "mmap", st.mnt_id,
                                      os.makedev(st.dev_major, st.dev_minor), e.path))


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


# ============================================================================ targets
@dataclass(frozen=True)
class Target:
    """What a query is about: a mount (its device and fs root), or a whole device."""

    spec: str
    major: int
    minor: int
    root: str | None = None          # fs root to match; None: any (device targets)
    mount_id: int | None = None      # the mount itself; None: device or residue query
    guest: str | None = None
    guest_path: str | None = None
    fstype: str = ""
    source: str = ""
    residue: bool = False            # after a lazy umount: every surviving copy is a leak

    @property
    def dev(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def mode(self) -> str:
        if self.residue:
            return "residue"
        return "mount" if self.mount_id is not None else "device"


def _resolve_in_guest(proc_fd: int, guest_path: str,
                      probes: list[str]) -> tuple[str, int, dict]:
    """In a child inside the guest: its mountinfo, the mount id of guest_path (resolved with
    the guest's / as root, so a symlink the guest made cannot lead elsewhere), and the probe
    paths as the guest sees them."""
    text = read_own_mountinfo(proc_fd)
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pfd = sc.openat2(root, guest_path.lstrip("/") or ".", sc.O_PATH,
                         sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)
    try:
        st = sc.statx("", pfd, sc.AT_EMPTY_PATH)
    finally:
        os.close(pfd)
    return text, st.mnt_id, {p: _stat_key(p) for p in probes}


def resolve(spec: TargetSpec, world: World) -> Target:
    """Turn a parsed target into a mount or a device. UsageError (exit 2) when it names
    nothing: a missing path, an unknown guest, a file that is neither."""
    if spec.kind == "majmin":
        assert spec.major is not None and spec.minor is not None
        return _device_target(spec.text, spec.major, spec.minor, world)
    if spec.kind == "guest":
        assert spec.name is not None and spec.path is not None
        ino = next((i for i, g in world.guest_by_mnt.items() if g == spec.name), None)
        if ino is None:
            raise UsageError(f"no such guest (or its mount namespace is not held): {spec.name}")
        v = world.views[ino]
        try:
            text, mnt_id, probes = run_in_child(_in_ns(v.chain, _resolve_in_guest),
                                                world.proc_fd, spec.path, world.probes)
        except OSError as exc:
            raise UsageError(f"{spec.path} in {spec.name}: "
                             f"{(exc.strerror or '').split(': ')[-1]}") from None
        v.table = MountTable.parse(text)
        v.probes = probes
        m = v.table.by_id.get(mnt_id)
        if m is None:
            raise UsageError(f"{spec.path} in {spec.name} lies on no mount of the guest")
        return Target(spec.text, m.major, m.minor, m.root, m.mount_id, spec.name, spec.path,
                      m.fstype, m.source)
    assert spec.path is not None
    path = os.path.abspath(spec.path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{spec.text}: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        return _device_target(spec.text, os.major(st.st_rdev), os.minor(st.st_rdev), world)
    if stat.S_ISCHR(st.st_mode):
        raise UsageError(f"{spec.text} is a character device, not a block device or a path")
    own = world.views[world.own]
    assert own.table is not None
    try:
        mnt_id = sc.statx(path).mnt_id
    except OSError as exc:
        raise UsageError(f"{spec.text}: {exc.strerror}") from None
    m = own.table.by_id.get(mnt_id)
    if m is None:
        # Reached through another namespace (e.g. /proc/PID/root/...): a device question.
        return _device_target(spec.text, os.major(st.st_dev), os.minor(st.st_dev), world)
    guest, gpath = _guest_path_of(m.mountpoint, world)
    return Target(spec.text, m.major, m.minor, m.root, m.mount_id, guest, gpath, m.fstype,
                  m.source)


def _guest_path_of(host_path: str, world: World) -> tuple[str | None, str | None]:
    base = world.layout.base.rstrip("/")
    if not is_under(host_path, base) or host_path == base:
        return None, None
    rest = host_path[len(base) + 1:]
    name, _, tail = rest.partition("/")
    if name in world.rootfs:
        return name, "/" + tail
    return None, None


def _device_target(text: str, major: int, minor: int, world: World) -> Target:
    own = world.views[world.own]
    assert own.table is not None
    m = next((x for x in own.table if (x.major, x.minor) == (major, minor)), None)
    return Target(text, major, minor, fstype=m.fstype if m else "",
                  source=m.source if m else "")


def _in_ns(chain: tuple[tuple[str, str], ...] | None,
           fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap fn so that, in the forked child, it first walks the chain of setns() steps."""
    if chain is None:
        raise UsageError("that namespace cannot be entered")

    def body(proc_fd: int, *args: object) -> T:
        _enter_steps(proc_fd, chain)
        return fn(proc_fd, *args)

    return body


# ============================================================================ judging
class _ProcInfo:
    """comm, user, guest pid and guest of a process, fetched once and only for pinners."""

    def __init__(self, world: World, scan: Scan) -> None:
        self.world = world
        self.scan = scan
        self.cache: dict[int, tuple[str | None, str | None, int | None, str] | None] = {}

    def get(self, pid: int) -> tuple[str | None, str | None, int | None, str] | None:
        if pid in self.cache:
            return self.cache[pid]
        info: tuple[str | None, str | None, int | None, str] | None
        try:
            p = psutil.Process(pid)
            comm = p.name()
            try:
                user: str | None = p.username()
            except (KeyError, psutil.AccessDenied):
                user = None
            nspid = parse_nspid(read_text(f"{self.world.proc}/{pid}/status") or "")
            guest = self.world.guest_of_pid(pid, self.scan.ns_of_pid.get(pid))
            info = (comm, user, nspid[-1] if nspid else pid, guest)
        except psutil.NoSuchProcess:
            info = None      # it exited: it pins nothing any more
        except psutil.AccessDenied:
            info = (None, None, None, self.world.guest_of_pid(pid, self.scan.ns_of_pid.get(pid)))
        self.cache[pid] = info
        return info

    def pin(self, how: str, pid: int, path: str, namespace: str | None,
            detail: str = "") -> Pin | None:
        info = self.get(pid)
        if info is None:
            return None
        comm, user, gpid, guest = info
        return Pin(how, pid, gpid, comm, user, guest, path, namespace, detail)


_HOW_ORDER = {h: i for i, h in enumerate(PIN_KINDS)}


class Judge:
    """Everything gathered once; reports computed per target."""

    def __init__(self, world: World, scan: Scan, facts: Facts, full: bool) -> None:
        self.world = world
        self.scan = scan
        self.facts = facts
        self.full = full
        self.index = Index(world.read_views(), world.own)
        self.procs = _ProcInfo(world, scan)
        self.by_dev: dict[int, list[ProcRecord]] = defaultdict(list)
        for r in scan.records:
            self.by_dev[r.dev].append(r)

    def copies(self, t: Target) -> list[tuple[NsView, Mount]]:
        found = [(self.index.ns_of[m.mount_id], m) for m in self.index.by_dev.get(t.dev, ())
                 if t.root is None or m.root == t.root]
        own = self.world.own

        def order(item: tuple[NsView, Mount]) -> tuple:
            v, m = item
            return (m.mount_id != t.mount_id, v.ino != own, v.guest == HOST, v.guest, m.mount_id)

        return sorted(found, key=order)

    def report(self, t: Target) -> BusyReport:
        copies = self.copies(t)
        copy_ids = {m.mount_id for _, m in copies}
        pins: list[Pin] = []
        pins += self._process_pins(t, copy_ids)
        pins += self._mount_pins(t, copies)
        pins += self._file_pins(t, copies)
        pins += [Pin("holder", None, None, None, None, HOST, f"/dev/{h}", None)
                 for h in (block_holders(*t.dev) if t.major else [])]
        seen: set[tuple] = set()
        unique = []
        for p in sorted(pins, key=lambda p: (_HOW_ORDER[p.how], p.pid or 0, p.path)):
            key = (p.how, p.pid, p.path, p.namespace)
            if key not in seen:
                seen.add(key)
                unique.append(p)
        out_copies = tuple(Copy(v.label, self.world.guest_of(v), m.mountpoint, m.mount_id)
                           for v, m in copies)
        mount_path = None
        if t.mount_id is not None and t.mount_id in self.index.by_id:
            mount_path = self.index.by_id[t.mount_id].mountpoint
        fstype = t.fstype or (copies[0][1].fstype if copies else "")
        source = t.source or (copies[0][1].source if copies else "")
        return BusyReport(t.spec, bool(unique), describe_device(t.major, t.minor, fstype, source),
                          out_copies, tuple(unique), len(self.scan.denied), t.mode, mount_path,
                          t.guest)

    # ------------------------------------------------------------------ processes
    def _process_pins(self, t: Target, copy_ids: set[int]) -> list[Pin]:
        dev = os.makedev(*t.dev)
        if self.full:
            recs = [r for r in self.scan.records if r.dev == dev or r.mnt_id in copy_ids]
        else:
            recs = self.by_dev.get(dev, [])
        out = []
        for r in recs:
            ns = self.scan.ns_of_pid.get(r.pid)
            label = f"mnt:[{ns}]" if ns is not None else None
            if r.mnt_id in copy_ids:
                pin = self.procs.pin(r.how, r.pid, r.path, label)
            elif r.mnt_id not in self.index.by_id and r.dev == dev:
                # On the device, yet on a mount no namespace lists: a copy that was detached
                # (umount -l, or a detached open_tree) and is still held through this.
                pin = self.procs.pin("detached", r.pid, r.path, label,
                                     f"its {_HOW_NOUN[r.how]}, mount id {r.mnt_id}")
            else:
                continue
            if pin is not None:
                out.append(pin)
        return out

    # ------------------------------------------------------------------ mounts
    def _copy_holder(self, v: NsView) -> tuple[int | None, str]:
        """Who keeps a namespace alive: a process in it, one holding an fd to it, or a file."""
        for pid in sorted(v.pids) + sorted(v.fd_holders):
            if self.procs.get(pid) is not None:
                how = "lives in it" if pid in v.pids else "holds an fd to it"
                return pid, how
        return None, ", ".join(f"held by {h}" for h in v.holders) or "held by nothing we found"

    def _leak(self, v: NsView, m: Mount, why: str) -> Pin:
        pid, how = self._copy_holder(v)
        if pid is not None:
            p = self.procs.pin("leaked-copy", pid, m.mountpoint, v.label, f"{how}; {why}")
            if p is not None:
                return Pin(p.how, p.pid, p.guest_pid, p.comm, p.user, self.world.guest_of(v),
                           p.path, p.namespace, p.detail)
        return Pin("leaked-copy", None, None, None, None, self.world.guest_of(v), m.mountpoint,
                   v.label, f"{how}; {why}")

    def _submount(self, v: NsView, k: Mount) -> Pin:
        return Pin("submount", None, None, None, None, self.world.guest_of(v), k.mountpoint,
                   v.label, f"{k.fstype} {k.source}".strip())

    def _mount_pins(self, t: Target, copies: list[tuple[NsView, Mount]]) -> list[Pin]:
        idx = self.index
        out: list[Pin] = []
        if not copies:
            return out
        children = {m.mount_id: idx.children.get(m.mount_id, []) for _, m in copies}
        if t.mode == "mount" and t.mount_id in idx.by_id:
            anchors = [idx.by_id[t.mount_id]]
        elif t.mode == "device":
            # No single mount: the copies the admin manages (host and guests) are the anchors;
            # a copy elsewhere that no umount of theirs would reach is a leak.
            anchors = [m for v, m in copies if v.ino == self.world.own or v.guest != HOST]
        else:
            anchors = []
        anchor_ids = {a.mount_id for a in anchors}
        reach = [idx.propagation_set(a) for a in anchors]
        fams: set[int] = set()
        for a in anchors:
            for k in children[a.mount_id]:
                fams |= families(k)
        reported: set[int] = set()
        for v, m in copies:
            kids = children[m.mount_id]
            if m.mount_id in anchor_ids:
                extra = kids          # the unmount itself fails on these (EBUSY)
            else:
                reached = any(idx.reached(m, recv, dentry) for recv, dentry in reach)
                # Children that are propagated copies of the anchors' children go with them;
                # any other child makes propagation skip this copy (kernel-findings §7).
                extra = [k for k in kids if not (families(k) & fams)] if reached else []
                if not reached or extra:
                    why = ("it has mounts of its own beneath it, so umount propagation skips "
                           "it" if reached else
                           "umount propagation does not reach it" if anchors else
                           "it outlived the unmount")
                    out.append(self._leak(v, m, why))
            for k in extra:
                fam = families(k)
                if fam and fam & reported:
                    continue     # a propagated copy of a submount already reported
                reported |= fam
                out.append(self._submount(v, k))
        return out

    # ------------------------------------------------------------------ swap, loop, nfsd
    def _place(self, path: str, key: tuple[int, int] | None, want_dev: int,
               copies: list[tuple[NsView, Mount]]) -> tuple[NsView, Mount] | None:
        """The copy a kernel-held file lies on. `path` is how the kernel printed it: relative
        to the root of the namespace that opened it, so test it against each namespace's
        copies and confirm with a stat made inside that namespace."""
        for v, m in copies:
            if not is_under(path, m.mountpoint) or v.table is None:
                continue
            top = v.table.containing(path)
            if top is None or top.mount_id != m.mount_id:
                continue     # another mount sits between: not this copy
            got = v.probes.get(path)
            if got is None:
                continue
            if got[0] == want_dev and (key is None or got == key):
                return v, m
        return None

    def _file_pins(self, t: Target, copies: list[tuple[NsView, Mount]]) -> list[Pin]:
        dev = os.makedev(*t.dev)
        out = []
        for s in self.facts.swaps:
            if s.kind == "partition":
                try:
                    rdev = os.stat(s.path).st_rdev
                except OSError:
                    continue
                if rdev == dev:
                    out.append(Pin("swap", None, None, None, None, HOST, s.path, None))
                continue
            if s.deleted:
                # Unlinked: no stat can confirm it; the namespace's table alone places it.
                hit = next(((v, m) for v, m in copies if v.table is not None
                            and is_under(s.path, m.mountpoint)
                            and (c := v.table.containing(s.path)) is not None
                            and c.mount_id == m.mount_id), None)
            else:
                hit = self._place(s.path, None, dev, copies)
            if hit:
                v, _ = hit
                out.append(Pin("swap", None, None, None, None, self.world.guest_of(v), s.path,
                               v.label))
        for lo in self.facts.loops:
            if lo.dev is not None and lo.dev != dev:
                continue
            key = (lo.dev, lo.ino) if lo.dev is not None and lo.ino is not None else None
            hit = self._place(lo.backing, key, dev, copies)
            if hit:
                v, _ = hit
                out.append(Pin("loop", None, None, None, None, self.world.guest_of(v),
                               lo.backing, v.label, f"/dev/{lo.name}"))
            elif lo.dev == dev and t.mode != "mount":
                # The kernel says the file is on this device; where it was opened from is not
                # visible in any namespace we could read.
                out.append(Pin("loop", None, None, None, None, HOST, lo.backing, None,
                               f"/dev/{lo.name}"))
        own = self.world.views[self.world.own]
        for path in self.facts.exports:
            # nfsd resolves exports in the namespace it was started from: ours.
            st = _stat_key(path)
            if st is None or st[0] != dev or own.table is None:
                continue
            top = own.table.containing(path)
            if top is not None and any(m.mount_id == top.mount_id for _, m in copies):
                out.append(Pin("nfsd-export", None, None, None, None, HOST, path, own.label))
        return out


_HOW_NOUN = {"cwd": "working directory", "root": "root directory", "exe": "program",
             "fd": "open file", "mmap": "memory mapping"}


# ============================================================================ entry points
def _gather(layout: Layout,
            targets_of: Callable[[World], list[Target]]) -> tuple[World, Judge, list[Target]]:
    """Shared pipeline: facts, guests, targets (targets_of(world)), one /proc pass, every
    namespace's table, then a Judge ready to report. The caller closes the World."""
    facts = read_facts()
    world = World(layout, facts.probes)
    try:
        targets = targets_of(world)
        devs = {t.dev for t in targets}
        full = any(t.fstype in UNRELIABLE_ST_DEV for t in targets)
        # Not ourselves: our cwd may well be on the target (`busy .`).
        scan = scan_processes(devs, full=full, exclude={os.getpid()})
        world.add_processes(scan)
        world.read_all()
        return world, Judge(world, scan, facts, full), targets
    except BaseException:
        world.close()
        raise


def find_pins(target: str, layout: Layout) -> BusyReport:
    """Everything that keeps TARGET busy (host path, NAME:GUESTPATH, /dev/NODE or MAJ:MIN)."""
    spec = parse_target(target)
    world, judge, targets = _gather(layout, lambda w: [resolve(spec, w)])
    try:
        return judge.report(targets[0])
    finally:
        world.close()


def find_residue(identity: Target, layout: Layout) -> BusyReport:
    """After a lazy umount: what still holds the filesystem that `identity` (a target resolved
    before the umount) named. Every surviving copy is a leak; detached holders are listed."""
    t = Target(identity.spec, identity.major, identity.minor, identity.root, None,
               identity.guest, identity.guest_path, identity.fstype, identity.source,
               residue=True)
    world, judge, _ = _gather(layout, lambda w: [t])
    try:
        return judge.report(t)
    finally:
        world.close()


def resolve_target(target: str, layout: Layout) -> Target:
    """Resolve without scanning (used before a lazy umount, to know what to follow after)."""
    world = World(layout)
    try:
        return resolve(parse_target(target), world)
    finally:
        world.close()


def guest_mounts(world: World) -> list[Target]:
    """Every mount a guest has of its own: not its root, not a kernel interface, and not one
    it inherited from its rootfs (the host has the same filesystem at rootfs + path)."""
    own = world.views[world.own]
    assert own.table is not None
    host_keys = {(m.mountpoint, m.major, m.minor, m.root) for m in own.table}
    world.read_all(only=world.guest_by_mnt)
    out = []
    for ino, name in sorted(world.guest_by_mnt.items(), key=lambda x: x[1]):
        v = world.views[ino]
        if v.table is None:
            continue
        root = v.table.root()
        rootfs = world.rootfs.get(name, "/").rstrip("/")
        for m in v.table:
            if m.mount_id == root.mount_id or m.fstype in PSEUDO_FS:
                continue
            if (f"{rootfs}{m.mountpoint}" or "/", m.major, m.minor, m.root) in host_keys:
                continue
            out.append(Target(f"{name}:{m.mountpoint}", m.major, m.minor, m.root, m.mount_id,
                              name, m.mountpoint, m.fstype, m.source))
    return out


def audit_all(layout: Layout) -> list[BusyReport]:
    """One report per mount of every guest (busy or not), from one pass over /proc."""
    world, judge, targets = _gather(layout, guest_mounts)
    try:
        return [judge.report(t) for t in targets]
    finally:
        world.close()


__all__ = ["BusyReport", "Copy", "Pin", "PIN_KINDS", "TargetSpec", "Target", "audit_all",
           "explain", "find_pins", "find_residue", "parse_target", "parse_swaps",
           "maps_on_devices", "parse_exports", "resolve_target"]

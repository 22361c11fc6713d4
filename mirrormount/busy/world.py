"""The namespace world (kernel-findings §9, step 3): every mount namespace we can find and how
to reach it (NsView, World), each table read once, and an Index of all their mounts by id,
parent, peer group and device.

A namespace's table is read through a process living in it (/proc/PID/mountinfo), or, for a
namespace held only by an nsfs file or an fd, from a child forked with mirrormount.kernel.child
that setns()es into it along a chain of steps (the setns walker: enter_steps, in_ns). Mount
ids are global, so a process's mount id is compared with every table directly.

Privilege: root (setns into namespaces, other processes' /proc entries).
"""
from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from collections.abc import Callable, Iterable
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import TypeVar
    T = TypeVar("T")

from ..record import field, record
from ..errors import UsageError
from ..kernel import mountinfo
from ..kernel import syscalls as sc
from ..kernel.child import run
from ..kernel.mountinfo import Mount, MountTable
from ..kernel.mountns import walked
from ..guest.model import Layout
from ..guest.nsexec import read_own_mountinfo
from ..guest.state import guest_names, load
from .report import HOST
from .scan import NSFS_MNT, Scan


# ============================================================================ namespaces
@record
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
    # path -> (st_dev, inode, mount id) as this namespace resolves it (stat_key)
    probes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"mnt:[{self.ino}]"


def _open_step(proc_fd: int, kind: str, path: str) -> int:
    """("proc", rel) is opened relative to the host's /proc; ("root", path) where we are."""
    if kind == "proc":
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def enter_steps(proc_fd: int, steps: Iterable[tuple[str, str]]) -> None:
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
            enter_steps(proc_fd, chain[1:])
            text = read_own_mountinfo(proc_fd)
            stats = {p: stat_key(p) for p in probes}
            out.append((text, stats, None))
        except OSError as exc:
            out.append((None, {}, f"{exc.strerror}"))
    return out


_STATX_INO = 0x100      # linux/stat.h; st_dev comes with every statx


def stat_key(path: str) -> tuple[int, int, int] | None:
    """(st_dev, inode, mount id) of a path as the caller's namespace resolves it; None when
    it names nothing. The mount id places the file on a mount even where st_dev is not the
    device mountinfo shows (btrfs subvolumes have anonymous devices of their own)."""
    try:
        st = sc.statx(path, mask=_STATX_INO | sc.STATX_MNT_ID)
    except (OSError, ValueError):
        return None
    return os.makedev(st.dev_major, st.dev_minor), st.ino, st.mnt_id


def in_ns(chain: tuple[tuple[str, str], ...] | None,
          fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap fn so that, in the forked child, it first walks the chain of setns() steps."""
    if chain is None:
        raise UsageError("that namespace cannot be entered")

    def body(proc_fd: int, *args: object) -> T:
        enter_steps(proc_fd, chain)
        return fn(proc_fd, *args)

    return body


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
        self.walk_fds: list[int] = []
        own = self.view(self.own)
        own.table = MountTable.of(mountinfo.read("self", proc))
        own.probes = {p: stat_key(p) for p in self.probes}
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
        for fd in self.walk_fds:
            os.close(fd)
        self.walk_fds = []

    def add_walked(self) -> int:
        """Namespaces the kernel's walk finds (NS_MNT_GET_NEXT, 6.12; kernel/mountns.py) that
        neither a process, an fd we saw nor an nsfs bind in a table we read leads to. We keep
        the walk's fd of each and reach it through /proc/OURPID/fd/N. Returns how many were
        added; 0 where the kernel has no walk (or MIRRORMOUNT_NO_NSWALK is set): the /proc
        discovery above is then all there is."""
        try:
            with walked(self.proc) as found:
                added = 0
                for ns, fd in found:
                    if ns.ino in self.views:
                        continue
                    keep = os.dup(fd)
                    self.walk_fds.append(keep)
                    v = self.view(ns.ino)
                    v.chain = (("proc", f"{os.getpid()}/fd/{keep}"),)
                    v.holders.append("found by the kernel's namespace walk only")
                    added += 1
                return added
        except NotImplementedError:
            return 0

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
                hit = NSFS_MNT.fullmatch(m.root)
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
        self._read_rounds(wanted)
        # Last, the kernel's walk: what it finds now had no other way in (nsfs binds found
        # in the tables give the chains busy reports as holders).
        if wanted is None and self.add_walked():
            self._read_rounds(None)

    def _read_rounds(self, wanted: set[int] | None) -> None:
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
                results = run(_read_tables, self.proc_fd, [v.chain for v in batch],
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
            v.probes = {p: stat_key(f"{self.proc}/{pid}/root{p}") for p in self.probes}
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


# ============================================================================ the index
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

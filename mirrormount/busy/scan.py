"""The one pass over /proc (kernel-findings §9, step 2): for every process, its cwd, root, exe,
fds and memory mappings that lie on the target devices, each with its mount id, plus the
process's mount namespace and any fd that holds a mount namespace.

Each process's cwd/root/exe and every fd is stat()ed; only those on the target's device are
statx()ed for their mount id (STATX_MNT_ID) and have their link text read. /proc/PID/maps is
filtered by device (maps_on_devices, pure), then map_files is statx()ed. On a busy machine the
process list is striped over workers forked with mirrormount.kernel.child (default_workers).

Every read tolerates processes that vanish (ENOENT, ESRCH) and counts those it may not inspect
(EACCES: this machine's PID 1 denies /proc/1/fd even to root).

Measured and not done (2-CPU machine, per fd of /proc/self/fd, Python call included):
stat 3.4 us, readlink 2.9 us, lstat 2.5 us, whatever the fd is (pipe, socket, file,
/dev/null). So reading the link first to skip pipe:, socket: and anon_inode: fds would add
2.9 us to every other fd to save 0.5 us on those: slower for any mix with files in it.

Privilege: root (other processes' fds and map_files).
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable

from ..record import field, record
from ..kernel import syscalls as sc
from ..kernel.child import Child
from ..kernel.procfs import read_to_end

# The link text of an nsfs file for a mount namespace: /proc/PID/fd/N, or an nsfs mount's root.
NSFS_MNT = re.compile(r"mnt:\[(\d+)\]")
# Link texts of anonymous-inode fds whose fdinfo can name files the kernel holds for them:
# a fanotify group's marks and queued events, an io_uring's registered files.
ANON_KINDS = {"anon_inode:[fanotify]": "fanotify", "anon_inode:[io_uring]": "io_uring"}


# ============================================================================ pure parsing
@record(frozen=True)
class MapEntry:
    """One /proc/PID/maps line whose file lies on a device asked about."""

    range: str           # "start-end", the name of the /proc/PID/map_files entry
    major: int
    minor: int
    inode: int
    path: str


# One line of /proc/PID/maps: range, perms, offset, MAJ:MIN (hex), inode, padding, path.
_MAPS_LINE = re.compile(r"^(\S+) \S+ \S+ ([0-9a-f]+:[0-9a-f]+) (\d+) *(.*)$", re.M)
# Up to this many devices, a substring test per device over the whole text (C speed) rules
# out most processes at once; past it, one regex pass with a set lookup per line, so that
# the cost stays linear in the text whatever the number of devices (busy --all).
_SUBSTRING_MAX = 8


def maps_on_devices(text: str, devices: Iterable[tuple[int, int]]) -> list[MapEntry]:
    """The lines of /proc/PID/maps whose file lies on one of the devices.

    The device field is "%02x:%02x" (major:minor in hex; fs/proc/task_mmu.c). Cost: linear in
    the text, for any number of devices."""
    pats = {f"{ma:02x}:{mi:02x}": (ma, mi) for ma, mi in devices}
    if not pats:
        return []
    if len(pats) <= _SUBSTRING_MAX and not any(f" {p} " in text for p in pats):
        return []
    out = []
    for m in _MAPS_LINE.finditer(text):
        dev = pats.get(m.group(2))
        if dev is None or m.group(3) == "0":
            continue
        out.append(MapEntry(m.group(1), dev[0], dev[1], int(m.group(3)), m.group(4)))
    return out


# ============================================================================ the /proc pass
@record(frozen=True)
class ProcRecord:
    """One thing of a process on a device asked about: its cwd, root, exe, an fd or a mapping."""

    pid: int
    how: str             # cwd | root | exe | fd | mmap
    mnt_id: int
    dev: int             # st_dev
    path: str            # the link text: the path as that process sees it
    rdev: int = 0        # an fd on a block device node: the device it opens (st_rdev)


@record
class Scan:
    """What the /proc pass kept. Plain dicts and lists: workers send theirs back pickled."""

    records: list[ProcRecord] = field(default_factory=list)
    ns_of_pid: dict[int, int] = field(default_factory=dict)
    pids_by_ns: dict[int, list[int]] = field(default_factory=dict)
    nsfs_fds: list[tuple[int, str, int]] = field(default_factory=list)
    # (pid, fd, kind): fanotify groups and io_urings, whose fdinfo the judge reads
    anon_fds: list[tuple[int, str, str]] = field(default_factory=list)
    denied: set[int] = field(default_factory=set)
    processes: int = 0

    def merge(self, other: Scan) -> None:
        self.records += other.records
        self.ns_of_pid.update(other.ns_of_pid)
        for ns, pids in other.pids_by_ns.items():
            self.pids_by_ns.setdefault(ns, []).extend(pids)
        self.nsfs_fds += other.nsfs_fds
        self.anon_fds += other.anon_fds
        self.denied |= other.denied
        self.processes += other.processes


# Below this many processes a worker's fork costs more than it saves.
PARALLEL_MIN_PROCESSES = 300
MAX_WORKERS = 4
# This process's stripe, as a share of an even one: it also does the caller's on_part work
# (busy reads the namespaces' mount tables, ~20 ms in bench_busy's state, against ~300 ms
# of scanning per stripe), while a worker only scans.
PARENT_SHARE = 0.9


def default_workers(processes: int) -> int:
    """The /proc pass is bound by the kernel's cost of each stat() of /proc/PID/fd/N (about
    3 us: a lookup, a permission check and a magic-link walk), the same work fuser does, so
    the way to be faster than fuser is to do it on every CPU at once. One worker per CPU
    (this process counts as one): measured on a 2-CPU machine shared with other work
    (load 2-4, bench/bench_busy.py's state, 6 rounds interleaved), the median find_pins
    took 0.68 s with 1 worker, 0.54 s with 2 and 0.65 s with 4; 2 was fastest in 4 rounds
    of 6. Under sched autogroup the workers share their session's CPU share, so they help
    only while a CPU is free. MIRRORMOUNT_BUSY_WORKERS=N (1 to MAX_WORKERS) sets the number
    whatever the count (how the vm-tests compare a striped pass with a single one); any
    other value is ignored."""
    forced = os.environ.get("MIRRORMOUNT_BUSY_WORKERS", "")
    if forced.isdigit() and 1 <= int(forced) <= MAX_WORKERS:
        return int(forced)
    if processes < PARALLEL_MIN_PROCESSES:
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def scan_processes(devices: Iterable[tuple[int, int]], *, full: bool = False,
                   proc: str = "/proc", exclude: Iterable[int] = (),
                   workers: int | None = None,
                   nodes: Iterable[tuple[int, int]] | None = None,
                   on_part: Callable[[Scan], None] | None = None) -> Scan:
    """One pass over /proc, keeping what lies on `devices` (all fds when `full`), and every
    fd that opens a block device node among `nodes` (default: `devices`), matched by st_rdev
    as fuser and lsof do: a device that is not mounted is still busy while its node is open.

    The cheap os.stat of each link filters by device; only survivors pay for statx (mount id)
    and readlink. Anonymous-inode fds (one shared st_dev) have their link text read, to find
    fanotify groups and io_urings. Processes that vanish are skipped; those we may not read
    are counted. The process list is striped over forked workers (see default_workers).

    on_part: called with each part of the answer as it is ready, in order (this process's
    stripe first, while the workers still scan theirs; then each worker's), so the caller
    can work on what is known while the rest is scanned. Returns the whole, merged."""
    skip = set(exclude)
    names = [n for n in os.listdir(proc) if n.isdigit() and int(n) not in skip]
    devlist = sorted(set(devices))
    nodelist = devlist if nodes is None else sorted(set(nodes) | set(devlist))
    n = default_workers(len(names)) if workers is None else max(1, workers)
    if n == 1:
        out = _scan_names(names, devlist, full, proc, nodelist)
        if on_part is not None:
            on_part(out)
        return out
    # One forked worker per stripe but the first, which this process scans meanwhile; its
    # stripe is the smaller by PARENT_SHARE, since on_part's work falls to it too. A worker's
    # exception (or its death: ChildFailed) is raised here; on any error (on_part's too) the
    # workers still running are killed and reaped.
    period, cut = 10 * n, round(10 * PARENT_SHARE)     # striped, as process sizes cluster
    mine = [x for i, x in enumerate(names) if i % period < cut]
    theirs = [x for i, x in enumerate(names) if i % period >= cut]
    kids: list[Child] = []
    try:
        for i in range(n - 1):
            kids.append(Child.start(_scan_names, theirs[i::n - 1], devlist, full, proc,
                                    nodelist))
        out = _scan_names(mine, devlist, full, proc, nodelist)
        if on_part is not None:
            on_part(out)
        whole = Scan()
        whole.merge(out)
        for kid in kids:
            part = kid.result()
            if on_part is not None:
                on_part(part)
            whole.merge(part)
    finally:
        for kid in kids:
            kid.close()
    return whole


def _anon_inode_dev() -> int:
    """st_dev of anon_inodefs, where fanotify, io_uring, eventfd and epoll fds live."""
    fd = os.eventfd(0, os.EFD_CLOEXEC)
    try:
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


def _scan_names(names: list[str], devlist: list[tuple[int, int]], full: bool,
                proc: str, nodelist: list[tuple[int, int]] | None = None) -> Scan:
    devset = {os.makedev(ma, mi) for ma, mi in devlist}
    nodeset = {os.makedev(ma, mi) for ma, mi in (nodelist or devlist)}
    proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    nsfs_dev = os.stat(f"{proc}/self/ns/mnt").st_dev
    anon_dev = _anon_inode_dev()
    # An fd on one of these devices needs a closer look; on any other, only its st_rdev may
    # matter (an open block device node).
    special = devset | {nsfs_dev, anon_dev}
    out = Scan()
    records = out.records
    anon_fds = out.anon_fds
    s_isblk = stat.S_ISBLK
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
                            st = stat_(fdname, dir_fd=dfd)
                        except OSError:
                            continue     # closed meanwhile
                        # Most fds match nothing: one set lookup rules them out (this
                        # loop runs once per fd of the machine, ~100k times).
                        dev = st.st_dev
                        if dev in special:
                            if dev in devset:
                                keep(pid, "fd", fdname, dfd, dev)
                                continue
                            # nsfs or anon_inodefs: below
                        elif st.st_rdev in nodeset and s_isblk(st.st_mode):
                            try:
                                text = readlink(fdname, dir_fd=dfd)
                            except OSError:
                                continue
                            records.append(ProcRecord(pid, "fd", 0, dev, text, st.st_rdev))
                            continue
                        elif full:
                            keep(pid, "fd", fdname, dfd, dev)
                            continue
                        else:
                            continue
                        # An nsfs file (may hold a mount namespace) or an anonymous inode
                        # (may be a fanotify group or an io_uring): the link text says.
                        try:
                            link = readlink(fdname, dir_fd=dfd)
                        except OSError:
                            continue
                        if dev == anon_dev:
                            kind = ANON_KINDS.get(link)
                            if kind:
                                anon_fds.append((pid, fdname, kind))
                            continue
                        hit = NSFS_MNT.fullmatch(link)
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
        data = read_to_end(fd, 1 << 17)
    except PermissionError:
        out.denied.add(pid)
        return
    except OSError:
        return
    finally:
        os.close(fd)
    # Most processes map nothing of the devices: a substring test on the bytes rules them
    # out before any decoding or parsing (maps_on_devices repeats it, on text).
    if len(devices) <= _SUBSTRING_MAX and not any(b" %02x:%02x " % d in data
                                                  for d in devices):
        return
    text = data.decode(errors="surrogateescape")
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

"""Mount namespaces and their mounts, through the kernel's newest interfaces where it has them
and through /proc where it does not. Callers get the same records either way.

- ``namespaces()``: every mount namespace we may see. With NS_MNT_GET_PREV/NEXT (Linux 6.12,
  include/uapi/linux/nsfs.h) the kernel walks its own list, which includes namespaces held
  only by an fd or an nsfs bind. Fallback (``MIRRORMOUNT_NO_NSWALK=1`` forces it): each
  process's /proc/PID/ns/mnt, each fd that is a mount namespace (/proc/PID/fd), and each nsfs
  bind in our table or in the table of a namespace a process lives in. Its limitation: a
  namespace held only by an nsfs bind inside a namespace that itself has no process (held
  only by an fd or a bind) is not found; busy/world.py follows such chains with setns.
- ``mounts_of(ns)``: a namespace's MountTable. With listmount + statmount on a namespace id
  (6.11; 6.13 for the source) no setns and no text: ``MIRRORMOUNT_NO_LISTMOUNT=1`` forces the
  fallback, /proc/PID/mountinfo of a process in it, else a forked child that setns()es in.
- Unique mount ids (STATX_MNT_ID_UNIQUE, 6.8): ``MIRRORMOUNT_NO_UNIQUE_ID=1`` turns off every
  path that needs them (listmount, statmount), as on a 6.1 kernel.

Every probe fails cleanly on old kernels: ENOSYS (no listmount), EINVAL (no namespace id in a
request, no FAN_REPORT_MNT) or ENOTTY (no nsfs ioctl) means "not here", and the fallback runs.

Privilege: root (other processes' /proc entries; CAP_SYS_ADMIN over a namespace to walk to it
or to list it).
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from ..record import record
from . import nsfs_calls as nc
from . import syscalls as sc
from .child import run
from .mountinfo import Mount, MountTable, parse
from .procfs import pids

NOT_HERE = (errno.ENOSYS, errno.EINVAL, errno.ENOTTY, errno.EOPNOTSUPP)
_NSFS_MNT = re.compile(r"mnt:\[(\d+)\]")


def switched_off(name: str) -> bool:
    """An environment switch MIRRORMOUNT_NO_<NAME> that forces a fallback (read per call, so
    tests can flip it)."""
    if name in ("LISTMOUNT", "STATMOUNT") and switched_off("UNIQUE_ID"):
        return True
    return bool(os.environ.get(f"MIRRORMOUNT_NO_{name}"))


@record(frozen=True)
class MountNs:
    """One mount namespace. ino: its nsfs inode (the N of mnt:[N]); ns_id: its 64-bit id (0
    before 6.11); path: where it can be opened (/proc/PID/ns/mnt, /proc/PID/fd/N, an nsfs
    bind), "" when only the walk's fd reaches it; pid: a process in it whose root is the
    namespace's root, if we know one; held_by: how it is held, in words."""

    ino: int
    ns_id: int = 0
    path: str = ""
    pid: int | None = None
    held_by: tuple[str, ...] = ()
    nr_mounts: int | None = None

    @property
    def label(self) -> str:
        return f"mnt:[{self.ino}]"


# ============================================================================ the walk
def _ns_id(fd: int) -> int:
    try:
        return nc.mntns_id(fd)
    except OSError as exc:
        if exc.errno in NOT_HERE:
            return 0
        raise


def walk_refused(proc: str = "/proc") -> str | None:
    """Why the kernel's namespace walk cannot be used here, or None when it can: one
    NS_MNT_GET_INFO and one NS_MNT_GET_NEXT step from our own namespace (the fd it gives is
    closed at once). ENOTTY before 6.12. EPERM (measured on 6.18): the kernel refuses
    the walk to a caller outside the initial pid namespace, even root; a container or a
    sandbox with its own pid namespace uses the /proc scan."""
    if switched_off("NSWALK"):
        return "off: MIRRORMOUNT_NO_NSWALK=1"
    fd = os.open(f"{proc}/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        nc.mntns_info(fd)
        step = nc.mntns_step(fd, True)
        if step is not None:
            os.close(step[0])
        return None
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return "refused (EPERM): the walk works only from the initial pid namespace"
        if exc.errno in NOT_HERE:
            return "not in this kernel"
        raise
    finally:
        os.close(fd)


def walk_available(proc: str = "/proc") -> bool:
    """Whether the namespace walk (NS_MNT_GET_NEXT, Linux 6.12+) works here (walk_refused)."""
    return walk_refused(proc) is None


@contextmanager
def walked(proc: str = "/proc") -> Iterator[list[tuple[MountNs, int]]]:
    """Every mount namespace the kernel lets us see, each with an open fd (closed on exit),
    ours first: NS_MNT_GET_PREV from ours to the oldest, then NEXT to the newest.
    Raises NotImplementedError when the kernel has no walk (before 6.12) or it is switched
    off."""
    if not walk_available(proc):
        raise NotImplementedError("NS_MNT_GET_NEXT")
    own = os.open(f"{proc}/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    info = nc.mntns_info(own)
    found = [(MountNs(os.fstat(own).st_ino, info.ns_id, f"{proc}/self/ns/mnt", os.getpid(),
                      ("this process",), info.nr_mounts), own)]
    try:
        for forward in (False, True):
            cur = os.dup(own)
            while True:
                try:
                    step = nc.mntns_step(cur, forward)
                except OSError as exc:
                    if exc.errno == errno.EPERM:    # see walk_refused
                        raise NotImplementedError("NS_MNT_GET_NEXT: EPERM") from exc
                    raise
                finally:
                    os.close(cur)
                if step is None:
                    break
                cur, nfo = step
                found.append((MountNs(os.fstat(cur).st_ino, nfo.ns_id, held_by=("walk",),
                                      nr_mounts=nfo.nr_mounts), os.dup(cur)))
        yield found
    finally:
        for _, fd in found:
            os.close(fd)


# ============================================================================ the /proc way
def scan_proc(proc: str = "/proc", fds: bool = True) -> list[MountNs]:
    """The fallback: namespaces of processes, of fds (when fds) and of nsfs binds in the
    tables we can read through a process (see the module docstring for what it misses)."""
    own_ino = os.stat(f"{proc}/self/ns/mnt").st_ino
    pid_of: dict[int, int | None] = {}
    path_of: dict[int, str] = {own_ino: f"{proc}/self/ns/mnt"}
    held: dict[int, list[str]] = {own_ino: ["this process"]}
    for pid in pids(proc):
        try:
            ino = os.stat(f"{proc}/{pid}/ns/mnt").st_ino
        except OSError:
            continue          # gone, or a kernel thread's
        path_of.setdefault(ino, f"{proc}/{pid}/ns/mnt")
        if pid_of.get(ino) is None:
            try:
                pid_of[ino] = pid if os.readlink(f"{proc}/{pid}/root") == "/" else None
            except OSError:
                pid_of.setdefault(ino, None)
        held.setdefault(ino, []).append(f"process {pid}")
        if not fds:
            continue
        try:
            names = os.listdir(f"{proc}/{pid}/fd")
        except OSError:
            continue
        for fd in names:
            try:
                link = os.readlink(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue
            hit = _NSFS_MNT.fullmatch(link)
            if hit:
                ino = int(hit.group(1))
                path_of.setdefault(ino, f"{proc}/{pid}/fd/{fd}")
                held.setdefault(ino, []).append(f"fd {fd} of process {pid}")
    pid_of[own_ino] = os.getpid()
    # nsfs binds, in each table a process lets us read (ours through /proc/self).
    for ino, reader in list(pid_of.items()):
        if reader is None:
            continue
        try:
            with open(f"{proc}/{reader}/mountinfo", encoding="utf-8",
                      errors="surrogateescape") as f:
                table = parse(f.read())
        except OSError:
            continue
        for m in table:
            hit = _NSFS_MNT.fullmatch(m.root) if m.fstype == "nsfs" else None
            if hit:
                target = int(hit.group(1))
                where = (m.mountpoint if ino == own_ino
                         else f"{proc}/{reader}/root{m.mountpoint}")
                path_of.setdefault(target, where)
                held.setdefault(target, []).append(f"nsfs file {where}")
    out = []
    for ino, path in path_of.items():
        ns_id = 0
        if not switched_off("LISTMOUNT"):
            try:
                nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                nsfd = -1
            if nsfd >= 0:
                try:
                    ns_id = _ns_id(nsfd)
                finally:
                    os.close(nsfd)
        out.append(MountNs(ino, ns_id, path, pid_of.get(ino), tuple(held.get(ino, ()))))
    return out


def namespaces(proc: str = "/proc") -> list[MountNs]:
    """Every mount namespace we can find, ours first: by the kernel's walk (6.12+), else by
    scan_proc. Namespaces found only by the walk have path "" (use ``walked`` to hold fds)."""
    try:
        with walked(proc) as found:
            return [ns for ns, _ in found]
    except NotImplementedError:
        return scan_proc(proc)


# ============================================================================ mounts
_OPTS = ((sc.MOUNT_ATTR_NOSUID, "nosuid"), (sc.MOUNT_ATTR_NODEV, "nodev"),
         (sc.MOUNT_ATTR_NOEXEC, "noexec"))
MOUNT_ATTR_IDMAP = 0x100000


def mount_options(attr: int) -> str:
    """mountinfo's per-mount option field from statmount's mnt_attr, in show_mnt_opts order
    (fs/proc_namespace.c): ro|rw, nosuid, nodev, noexec, the atime word, nodiratime,
    nosymfollow, idmapped."""
    words = ["ro" if attr & sc.MOUNT_ATTR_RDONLY else "rw"]
    words += [w for bit, w in _OPTS if attr & bit]
    atime = attr & sc.MOUNT_ATTR__ATIME
    if atime == sc.MOUNT_ATTR_NOATIME:
        words.append("noatime")
    if attr & sc.MOUNT_ATTR_NODIRATIME:
        words.append("nodiratime")
    if atime == sc.MOUNT_ATTR_RELATIME:
        words.append("relatime")
    if attr & sc.MOUNT_ATTR_NOSYMFOLLOW:
        words.append("nosymfollow")
    if attr & MOUNT_ATTR_IDMAP:
        words.append("idmapped")
    return ",".join(words)


def mount_of(sm: sc.StatmountResult) -> Mount:
    """statmount's answer as the Mount a mountinfo line gives (mount ids are the 32-bit ones
    mountinfo shows; super_options stay empty)."""
    prop = sm.propagation
    slave = bool(prop & sc.MS_SLAVE)
    return Mount(mount_id=sm.mnt_id_old, parent_id=sm.parent_id_old, major=sm.dev_major,
                 minor=sm.dev_minor, root=sm.mnt_root, mountpoint=sm.mnt_point,
                 options=mount_options(sm.mnt_attr),
                 shared=sm.peer_group if prop & sc.MS_SHARED else None,
                 master=sm.master if slave else None,
                 propagate_from=sm.propagate_from if slave and sm.propagate_from
                 and sm.propagate_from != sm.master else None,
                 unbindable=bool(prop & sc.MS_UNBINDABLE), fstype=sm.fs_type,
                 source=sm.sb_source or "")


def unique_mounts(ns_id: int = 0, parent: int = sc.LSMT_ROOT) -> dict[int, Mount]:
    """{unique id: Mount} of every mount in the namespace (0: ours) beneath parent (a unique
    id; default its root, included), by listmount + statmount. A mount unmounted between the
    two calls is left out. Raises NotImplementedError when the kernel cannot (before 6.11
    for another namespace, 6.13 for the source) or MIRRORMOUNT_NO_LISTMOUNT is set."""
    if switched_off("LISTMOUNT") or not sc.has_syscall("listmount"):
        raise NotImplementedError("listmount")
    try:
        ids = sc.listmount(parent, ns_id)
    except OSError as exc:
        # ENOENT for a whole namespace: its root mount has no child the kernel can start
        # from (fs/namespace.c grab_requested_root), e.g. a namespace whose root was
        # detached. mountinfo read from inside still shows what a process there sees.
        if exc.errno in NOT_HERE or (exc.errno == errno.ENOENT and parent == sc.LSMT_ROOT):
            raise NotImplementedError("listmount") from exc
        raise
    out: dict[int, Mount] = {}
    for uid in ids:
        try:
            sm = sc.statmount(uid, ns_id)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue             # unmounted since listmount named it
            if exc.errno in NOT_HERE:
                raise NotImplementedError("statmount") from exc
            raise
        if sm.sb_source is None:
            raise NotImplementedError("statmount SB_SOURCE")    # 6.11-6.12
        out[uid] = mount_of(sm)
    return out


def _read_in(proc_fd: int, path: str) -> str:
    """In a forked child: setns into the namespace at path and read our own mountinfo."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(fd, sc.CLONE_NEWNS, path)
    os.close(fd)
    fd = os.open("self/mountinfo", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def mountinfo_of(ns: MountNs, proc: str = "/proc") -> MountTable:
    """The fallback: /proc/PID/mountinfo of a process in ns whose root is ns's root, else a
    child that setns()es through ns.path. ValueError when neither is known."""
    if ns.pid is not None:
        try:
            with open(f"{proc}/{ns.pid}/mountinfo", encoding="utf-8",
                      errors="surrogateescape") as f:
                text = f.read()
            if text:
                return MountTable.parse(text)
        except OSError:
            pass                     # gone: try the path
    if not ns.path:
        raise ValueError(f"no way to reach {ns.label}")
    proc_fd = os.open(proc, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return MountTable.parse(run(_read_in, proc_fd, ns.path))
    finally:
        os.close(proc_fd)


def mounts_of(ns: MountNs, proc: str = "/proc") -> MountTable:
    """ns's mount table, relative to its root: listmount + statmount on ns.ns_id where the
    kernel allows, else mountinfo_of. The same Mount records either way (options from
    mnt_attr; super_options empty on the first path)."""
    own = os.stat(f"{proc}/self/ns/mnt").st_ino == ns.ino
    if ns.ns_id or own:
        try:
            return MountTable.of(unique_mounts(0 if own else ns.ns_id).values())
        except NotImplementedError:
            pass
    return mountinfo_of(ns, proc)


def ns_of_path(path: str, proc: str = "/proc") -> MountNs:
    """The namespace an nsfs file (or /proc/PID/ns/mnt) names. OSError if it cannot be
    opened."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ino = os.fstat(fd).st_ino
        ns_id = 0 if switched_off("LISTMOUNT") else _ns_id(fd)
    finally:
        os.close(fd)
    return MountNs(ino, ns_id, path, held_by=(f"nsfs file {path}",))


def unique_id(path: str) -> int | None:
    """STATX_MNT_ID_UNIQUE of the mount at path (6.8+); None where the kernel has none or
    MIRRORMOUNT_NO_UNIQUE_ID is set."""
    if switched_off("UNIQUE_ID"):
        return None
    st = sc.statx(path, flags=sc.AT_SYMLINK_NOFOLLOW, mask=sc.STATX_MNT_ID_UNIQUE)
    return st.mnt_id if st.mask & sc.STATX_MNT_ID_UNIQUE else None


def table_around(subtree: str, skip_under: tuple[str, ...], keep: tuple[str, ...] = ()
                 ) -> MountTable:
    """Our namespace's mounts at or beneath subtree, the mounts at the paths in keep, and
    every mount not strictly beneath any of skip_under, each by statmount; the mounts
    beneath skip_under (other guests' mirrors, nsfs files) only appear in listmount's id
    lists, never described. What `status` needs of the host: the same mounts as a scan of
    mountinfo by path (mountquery.table_beside), hidden ones too, since each listing starts
    from the bottom of the stack of mounts at its path (mountquery.stack_ids, O(stack
    depth)). Cost: 2 + len(skip_under) listmount calls, each a walk of the namespace's whole
    mount list in the kernel (6.18 lists every descendant of the parent and cannot skip a
    subtree: fs/namespace.c do_listmount), ~0.3 ms at 14k mounts even for a call that
    returns nothing, plus ~0.4-0.6 ms per 14k ids returned (copied out, made Python ints);
    the statmounts grow only with the host's own mounts and the guest's. The skip_under
    calls cannot become lookups of the mounts stacked at those paths: they are there to
    name every mount beneath, which only a listing does, and every host mount outside them
    is needed (a mirror mount may share a peer group with any of them). So all of these
    calls are the kernel's cost. NotImplementedError where the kernel has no listmount or
    statmount (or the switches say so): the caller reads mountinfo instead."""
    if switched_off("LISTMOUNT") or not sc.has_syscall("listmount"):
        raise NotImplementedError("listmount")
    try:
        everything = sc.listmount()
    except OSError as exc:
        if exc.errno in NOT_HERE:
            raise NotImplementedError("listmount") from exc
        raise
    # Set arithmetic on the id lists, in C: the Python work per listed id is what grew
    # with other guests' mounts (a filter loop over 14k ids cost more than the syscalls).
    from .mountquery import stack_ids
    wanted = set(everything)
    for path in skip_under:
        stack = stack_ids(path)
        if stack:
            wanted.difference_update(sc.listmount(stack[0]))
            wanted.update(stack)        # the mounts at the path itself stay
    sub = stack_ids(subtree)
    if sub:
        wanted.update(sub)
        wanted.update(sc.listmount(sub[0]))
    for path in keep:
        wanted.update(stack_ids(path))
    out: dict[int, Mount] = {}
    for uid in sorted(wanted):
        try:
            sm = sc.statmount(uid)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                continue
            raise
        if sm.sb_source is None:
            raise NotImplementedError("statmount SB_SOURCE")
        out[uid] = mount_of(sm)
    # In unique-id order, as mountinfo lists them (the namespace's tree of mounts by id).
    return MountTable.of(out.values())


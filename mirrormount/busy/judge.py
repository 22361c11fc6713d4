"""Judging (kernel-findings §9, step 4): from the namespace world, the /proc scan and the
system facts gathered once, the report for each target.

Copies are mounts with the target's device and fs root; process pins are mount ids among the
copies; a mount id on the device that no table lists is a detached copy. Submounts and copies
that umount propagation would skip come from the tables; swap files, loop backing files,
binfmt_misc interpreters and nfsd exports are placed by mount id (and device and inode where
the kernel tells it). A block device asked for as a whole maps to every mount of the
filesystem on it (btrfs shows an anonymous device in mountinfo) and to overlays with a layer
there. Open device nodes (st_rdev), fanotify marks and io_uring registered files (fdinfo) are
pins of their own; a loop pin's fix is read from the loop device's state.

Privilege: none beyond the gathering's; it reads a pinning process's /proc/PID/status and the
fdinfo of fanotify and io_uring fds, and stats swap partitions and exported paths.
"""
from __future__ import annotations

import os
import pwd
from collections import defaultdict

from ..kernel.mountinfo import Mount, is_under
from ..kernel.procfs import parse_nspid, parse_status, read_text
from .devices import block_device_of
from .facts import (Facts, LoopDevice, block_holders, describe_device, parse_fanotify_fdinfo,
                    parse_io_uring_fdinfo)
from .report import HOST, HOW_ORDER, BusyReport, Copy, Pin
from .scan import ProcRecord, Scan
from .target import Target
from .world import Index, NsView, World, families, stat_key

# st_dev of these filesystems is not the device mountinfo shows (btrfs subvolumes have their
# own anonymous devices; overlayfs reports the lower/upper fs for files), so the cheap device
# filter would miss pins. For them every fd is statx()ed for its mount id instead, and files
# the kernel holds (loop, swap, binfmt) are placed by mount id.
UNRELIABLE_ST_DEV = frozenset({"btrfs", "overlay", "bcachefs", "zfs", "aufs"})


# ============================================================================ judging
def _full_comm(proc: str, pid: int, name: str | None) -> str | None:
    """The process name as ps and psutil show it: /proc/PID/status Name (the kernel's comm,
    cut to 15 bytes), completed from argv[0] when it was cut."""
    if name is None or len(name) < 15:
        return name
    raw = read_text(f"{proc}/{pid}/cmdline") or ""
    argv0 = os.path.basename(raw.split("\0", 1)[0])
    return argv0 if argv0.startswith(name) else name


def _user_of(uid_line: str) -> str | None:
    """User name of the real uid in a status 'Uid:' line; the number when no name is known."""
    try:
        uid = int(uid_line.split()[0])
    except (IndexError, ValueError):
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
        # Straight from /proc (proc(5)), not psutil: importing it costs the CLI ~15 ms.
        status = read_text(f"{self.world.proc}/{pid}/status")
        if not status or "\nState:\tZ" in status or "\nState:\tX" in status:
            info = None      # it exited (or is a zombie): it pins nothing any more
        else:
            fields = parse_status(status)
            comm = _full_comm(self.world.proc, pid, fields.get("Name"))
            user = _user_of(fields.get("Uid", ""))
            nspid = parse_nspid(status)
            guest = self.world.guest_of_pid(pid, self.scan.ns_of_pid.get(pid))
            info = (comm, user, nspid[-1] if nspid else pid, guest)
        self.cache[pid] = info
        return info

    def pin(self, how: str, pid: int, path: str, namespace: str | None,
            detail: str = "") -> Pin | None:
        info = self.get(pid)
        if info is None:
            return None
        comm, user, gpid, guest = info
        return Pin(how, pid, gpid, comm, user, guest, path, namespace, detail)


class Judge:
    """Everything gathered once; reports computed per target."""

    def __init__(self, world: World, scan: Scan, facts: Facts, full: bool) -> None:
        self.world = world
        self.scan = scan
        self.facts = facts
        self.full = full
        self.index = Index(world.read_views(), world.own)
        self.procs = _ProcInfo(world, scan)
        self._anon_cache: dict[tuple[int, str], list] = {}
        self.by_dev: dict[int, list[ProcRecord]] = defaultdict(list)
        # fds on block device nodes, by the device they open (st_rdev): kept apart, since
        # their st_dev is only devtmpfs's
        self.by_rdev: dict[int, list[ProcRecord]] = defaultdict(list)
        for r in scan.records:
            (self.by_rdev[r.rdev] if r.rdev else self.by_dev[r.dev]).append(r)

    def fs_devs(self, t: Target) -> set[tuple[int, int]]:
        """The mountinfo devices of the target's filesystem. A block device asked for as a
        whole (no fs root) maps to every mount of the filesystem on it: btrfs shows an
        anonymous 0:N in mountinfo, while its source names the block device."""
        devs = {t.dev}
        if t.root is None and t.major != 0:
            for (ma, mi), ms in self.index.by_dev.items():
                if ma == 0 and any(block_device_of(m.source) == t.dev for m in ms[:1]):
                    devs.add((ma, mi))
        return devs

    def _overlays_on(self, found: list[tuple[NsView, Mount]]) -> list[tuple[NsView, Mount]]:
        """Overlay mounts with a layer (lowerdir, upperdir) on one of the `found` mounts:
        they keep its filesystem in use after the mount itself is gone."""
        ids = {m.mount_id for _, m in found}
        out = []
        for m in self.index.by_id.values():
            if m.fstype != "overlay":
                continue
            v = self.index.ns_of[m.mount_id]
            if v.table is None:
                continue
            for layer in overlay_layers(m.super_options):
                top = v.table.containing(layer)
                if top is not None and top.mount_id in ids:
                    out.append((v, m))
                    break
        return out

    def copies(self, t: Target) -> list[tuple[NsView, Mount]]:
        devs = self.fs_devs(t)
        found = [(self.index.ns_of[m.mount_id], m) for d in sorted(devs)
                 for m in self.index.by_dev.get(d, ()) if t.root is None or m.root == t.root]
        if t.root is None and found:
            found += self._overlays_on(found)
        own = self.world.own

        def order(item: tuple[NsView, Mount]) -> tuple:
            v, m = item
            return (m.mount_id != t.mount_id, v.ino != own, v.guest == HOST, v.guest, m.mount_id)

        return sorted(found, key=order)

    def mounted_where_meant(self, t: Target) -> bool:
        """After an unmount: whether the filesystem is still mounted in the host's namespace
        or in a guest's. Then it is in use as intended (the unmounted mount was a bind of a
        directory mounted elsewhere too, or the filesystem is mounted in another guest), and
        nothing left is a leak; only copies in other namespaces (a process's unshare) and
        holders of a filesystem mounted nowhere else are."""
        own = self.world.own
        for d in self.fs_devs(t):
            for m in self.index.by_dev.get(d, ()):
                v = self.index.ns_of[m.mount_id]
                if v.ino == own or v.guest != HOST:
                    return True
        return False

    def report(self, t: Target) -> BusyReport:
        copies = self.copies(t)
        copy_ids = {m.mount_id for _, m in copies}
        pins: list[Pin] = []
        pins += self._process_pins(t, copy_ids)
        pins += self._mount_pins(t, copies)
        pins += self._file_pins(t, copies)
        pins += self._node_pins(t)
        pins += self._anon_pins(t, copies)
        pins += self._binfmt_pins(t, copies)
        pins += [Pin("holder", None, None, None, None, HOST, f"/dev/{h}", None)
                 for h in (block_holders(*t.dev) if t.major else [])]
        seen: set[tuple] = set()
        unique = []
        for p in sorted(pins, key=lambda p: (HOW_ORDER[p.how], p.pid or 0, p.path)):
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
            if r.rdev:
                continue     # an open device node: _node_pins
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
            if len(got) > 2:
                # Placed by mount id: right even where st_dev is a btrfs subvolume's own.
                if got[2] == m.mount_id and (key is None or tuple(got[:2]) == key):
                    return v, m
            elif got[0] == want_dev and (key is None or got == key):
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
        anon = self._anon_st_dev(t, copies)
        for lo in self.facts.loops:
            if lo.dev is not None and lo.dev != dev and not anon:
                continue
            key = (lo.dev, lo.ino) if lo.dev is not None and lo.ino is not None else None
            hit = self._place(lo.backing, key, dev, copies)
            if hit:
                v, _ = hit
                out.append(Pin("loop", None, None, None, None, self.world.guest_of(v),
                               lo.backing, v.label, self._loop_detail(lo)))
            elif lo.dev == dev and t.mode != "mount":
                # The kernel says the file is on this device; where it was opened from is not
                # visible in any namespace we could read.
                out.append(Pin("loop", None, None, None, None, HOST, lo.backing, None,
                               self._loop_detail(lo)))
        own = self.world.views[self.world.own]
        copy_ids = {m.mount_id for _, m in copies}
        for path in self.facts.exports:
            # nfsd resolves exports in the namespace it was started from: ours.
            st = stat_key(path)
            if st is None or own.table is None:
                continue
            if st[0] != dev and not (len(st) > 2 and st[2] in copy_ids):
                continue
            top = own.table.containing(path)
            if top is not None and any(m.mount_id == top.mount_id for _, m in copies):
                out.append(Pin("nfsd-export", None, None, None, None, HOST, path, own.label))
        return out


    # ------------------------------------------------------------------ kernel-held
    def _anon_st_dev(self, t: Target, copies: list[tuple[NsView, Mount]]) -> bool:
        """Whether files on the target may have an st_dev that is not its mountinfo device."""
        return (t.fstype in UNRELIABLE_ST_DEV
                or any(m.fstype in UNRELIABLE_ST_DEV for _, m in copies))

    def _loop_detail(self, lo: LoopDevice) -> str:
        """'/dev/loopN' or '/dev/loopN: FIX', the fix read from the loop device's real state:
        its autoclear flag (losetup -d on a device in use only sets it) and who uses it: a
        swap on it, a mount of it, a stacked device, a process holding its node open."""
        node = f"/dev/{lo.name}"
        if lo.rdev is None:
            return node
        users: list[str] = []
        rdev = os.makedev(*lo.rdev)
        for s in self.facts.swaps:
            if s.kind == "partition":
                try:
                    if os.stat(s.path).st_rdev == rdev:
                        users.append(f"swapoff {s.path}")
                except OSError:
                    pass
        fake = Target(node, lo.rdev[0], lo.rdev[1])
        mounted = [(v, m) for d in sorted(self.fs_devs(fake))
                   for m in self.index.by_dev.get(d, ()) for v in (self.index.ns_of[m.mount_id],)]
        for v, m in mounted[:1]:
            where = "" if v.ino == self.world.own else f" in {v.label}"
            users.append(f"umount {m.mountpoint}{where}")
        users += [f"remove /dev/{h}, stacked on it" for h in block_holders(*lo.rdev)]
        for r in self.by_rdev.get(rdev, [])[:1]:
            info = self.procs.get(r.pid)
            if info is not None:
                users.append(f"stop process {r.pid} ({info[0] or '?'}), which holds {r.path} "
                             "open")
        if lo.autoclear:
            if not users:
                return f"{node}: losetup -d was already asked for; it detaches at last close"
            return (f"{node}: losetup -d was already asked for, and waits for its users: "
                    + "; ".join(users))
        if users:
            return f"{node}: " + "; ".join(users) + f"; then losetup -d {node}"
        return node

    def _node_pins(self, t: Target) -> list[Pin]:
        """Processes holding the device node itself open (a udev worker, a backup tool, a
        loop or dm setup in progress): the device stays busy though nothing mounts it."""
        if t.mode == "mount" or t.major == 0:
            return []
        out = []
        for r in self.by_rdev.get(os.makedev(*t.dev), []):
            ns = self.scan.ns_of_pid.get(r.pid)
            pin = self.procs.pin("fd", r.pid, r.path, f"mnt:[{ns}]" if ns is not None else None)
            if pin is not None:
                out.append(pin)
        return out

    def _fdinfo(self, pid: int, fd: str) -> str:
        return read_text(f"{self.world.proc}/{pid}/fdinfo/{fd}") or ""

    def _anon_parsed(self, pid: int, fd: str, kind: str) -> list:
        """The marks (fanotify) or registered paths (io_uring) of one fd, read once for all
        targets (busy --all asks for every guest mount)."""
        key = (pid, fd)
        got = self._anon_cache.get(key)
        if got is None:
            text = self._fdinfo(pid, fd)
            got = self._anon_cache[key] = (parse_fanotify_fdinfo(text) if kind == "fanotify"
                                           else parse_io_uring_fdinfo(text))
        return got

    def _anon_pins(self, t: Target, copies: list[tuple[NsView, Mount]]) -> list[Pin]:
        """fanotify groups with a mark on a copy (their unread events hold the mount), and
        io_urings with a registered file on a copy (held after its fd is closed): both are
        visible only in the fdinfo of the group's or ring's fd."""
        if not copies:
            return []
        by_id = {m.mount_id: (v, m) for v, m in copies}
        devs = {os.makedev(*d) for d in self.fs_devs(t)}
        out: list[Pin] = []
        for pid, fd, kind in self.scan.anon_fds:
            parsed = self._anon_parsed(pid, fd, kind)
            ns = self.scan.ns_of_pid.get(pid)
            label = f"mnt:[{ns}]" if ns is not None else None
            if kind == "fanotify":
                for mark in parsed:
                    if mark.kind == "mount" and mark.mnt_id in by_id:
                        path = by_id[mark.mnt_id][1].mountpoint
                    elif mark.dev is not None and mark.dev in devs:
                        # sdev is the superblock's device: mountinfo's, even on btrfs
                        path = copies[0][1].mountpoint + (
                            f" (inode {mark.ino})" if mark.ino is not None else "")
                    else:
                        continue
                    pin = self.procs.pin("fanotify", pid, path, label,
                                         f"fanotify fd {fd}, {mark.kind} mark")
                    if pin is not None:
                        out.append(pin)
                continue
            for path in parsed:
                if self._on_copy(path, ns, copies):
                    pin = self.procs.pin("io_uring", pid, path, label, f"io_uring fd {fd}")
                    if pin is not None:
                        out.append(pin)
        return out

    def _on_copy(self, path: str, ns: int | None,
                 copies: list[tuple[NsView, Mount]]) -> bool:
        """Whether a path the kernel printed for a held file (relative to our root when the
        mount is in our namespace, else to its own namespace's root) lies on a copy: our
        namespace's copies first, then those of the holder's namespace."""
        own = self.world.own
        for want in (own, ns):
            for v, m in copies:
                if v.ino != want or v.table is None or not is_under(path, m.mountpoint):
                    continue
                top = v.table.containing(path)
                if top is not None and top.mount_id == m.mount_id:
                    return True
        return False

    def _binfmt_pins(self, t: Target, copies: list[tuple[NsView, Mount]]) -> list[Pin]:
        """binfmt_misc entries registered with flag F: the kernel opened the interpreter then
        and holds it for as long as the entry exists."""
        dev = os.makedev(*t.dev)
        out = []
        for b in self.facts.binfmts:
            hit = self._place(b.interpreter, None, dev, copies)
            if hit:
                v, _ = hit
                out.append(Pin("binfmt", None, None, None, None, self.world.guest_of(v),
                               b.interpreter, v.label, b.name))
        return out


def overlay_layers(super_options: str) -> list[str]:
    """The layer directories of an overlay mount from its mountinfo super options
    (lowerdir=A:B, upperdir=C, workdir=D; the kernel escapes ',', ':' and '\\' in them with a
    backslash: fs/overlayfs/params.c, ovl_show_options)."""
    out: list[str] = []
    opts, cur, esc = [], "", False
    for ch in super_options:
        if esc:
            cur += "\\" + ch
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            opts.append(cur)
            cur = ""
        else:
            cur += ch
    opts.append(cur)
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or key not in ("lowerdir", "upperdir", "lowerdir+", "datadir+"):
            continue
        parts, part, esc = [], "", False
        for ch in value:
            if esc:
                part += ch
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == ":" and key == "lowerdir":
                parts.append(part)
                part = ""
            else:
                part += ch
        parts.append(part)
        out += [p for p in parts if p]
    return out


_HOW_NOUN = {"cwd": "working directory", "root": "root directory", "exe": "program",
             "fd": "open file", "mmap": "memory mapping"}

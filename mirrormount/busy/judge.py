"""Judging (kernel-findings §9, step 4): from the namespace world, the /proc scan and the
system facts gathered once, the report for each target.

Copies are mounts with the target's device and fs root; process pins are mount ids among the
copies; a mount id on the device that no table lists is a detached copy. Submounts and copies
that umount propagation would skip come from the tables; swap files, loop backing files and
nfsd exports are matched by device (and inode where the kernel tells it).

Privilege: none beyond the gathering's; it reads a pinning process's name, user and
/proc/PID/status, and stats swap partitions and exported paths.
"""
from __future__ import annotations

import os
from collections import defaultdict

import psutil

from ..kernel.mountinfo import Mount, is_under
from ..kernel.procfs import parse_nspid, read_text
from .facts import Facts, block_holders, describe_device
from .report import HOST, HOW_ORDER, BusyReport, Copy, Pin
from .scan import ProcRecord, Scan
from .target import Target
from .world import Index, NsView, World, families, stat_key


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
            st = stat_key(path)
            if st is None or st[0] != dev or own.table is None:
                continue
            top = own.table.containing(path)
            if top is not None and any(m.mount_id == top.mount_id for _, m in copies):
                out.append(Pin("nfsd-export", None, None, None, None, HOST, path, own.label))
        return out


_HOW_NOUN = {"cwd": "working directory", "root": "root directory", "exe": "program",
             "fd": "open file", "mmap": "memory mapping"}

"""Guests: create, destroy, list, status, exec, mount and umount.

This is the library's public face; the CLI only parses arguments and renders what these
functions return. Mount-table changes in the host namespace happen here (through apply.py);
anything inside a guest happens in a forked child (nsexec.py / nursery.py).

Privilege: root for everything except reading records.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..kernel import mountinfo
from ..kernel import syscalls as sc
from .apply import Executor, Outcome, detach, remove_empty_dir
from ..errors import BusyError, OperationError, UsageError, describe
from .health import Health, assess
from ..kernel.mountinfo import MountTable
from ..kernel.mountquery import cheap as mounts_cheap
from ..kernel.mountquery import mounts_at
from .nsexec import in_namespaces, read_own_mountinfo
from .nursery import release_ns_file
from .model import Layout, validate_hostname, validate_name
from .plan import CreateRequest, HostFacts, Op, plan_create, render
from ..kernel.procfs import (alive, ns_id, ns_inode, parse_nspid, parse_status, pids_by_mnt_ns,
                     read_text, wait_gone)
from .state import GuestRecord, StateLock, guest_names, load

if TYPE_CHECKING:  # the finder itself is imported only when an unmount needs explaining
    from ..busy.finder import BusyReport
    from .recipe import RecipeMount

# Directories tried, in order, for pivot_root's put_old (see nursery._guest_child).
PUT_OLD_CANDIDATES = ("mnt", "tmp", "media", "srv", "opt", "home", "root", "var", "etc", "usr")


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise OperationError(f"{what} needs root (CAP_SYS_ADMIN); nothing was changed")


def choose_put_old(rootfs: str) -> str:
    for cand in PUT_OLD_CANDIDATES:
        p = os.path.join(rootfs, cand)
        if os.path.isdir(p) and not os.path.islink(p):
            return cand
    try:
        with os.scandir(rootfs) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    return e.name
    except OSError:
        pass
    raise UsageError(f"rootfs {rootfs} has no directory: pivot_root needs one to use as put_old")


@dataclass(frozen=True)
class GuestInfo:
    name: str
    mirror: str
    rootfs: str
    state: str                       # running | stopped | broken
    namespaces: dict[str, str]       # kind -> "mnt:[inode]"
    pids: list[int]
    propagation: str = "mirror"
    hostname: str | None = None
    guest_only: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"name": self.name, "mirror": self.mirror, "rootfs": self.rootfs,
                "state": self.state, "namespaces": self.namespaces, "pids": self.pids,
                "propagation": self.propagation, "hostname": self.hostname,
                "guest_only": self.guest_only, "problems": self.problems}


@dataclass(frozen=True)
class StatusReport:
    name: str
    mirror: str
    health: Health
    info: GuestInfo

    def to_json(self) -> dict:
        return {"name": self.name, "mirror": self.mirror,
                "mirror_intact": self.health.mirror_intact,
                "mounts_host": self.health.mounts_host, "mounts_guest": self.health.mounts_guest,
                "problems": list(self.health.problems), "state": self.info.state,
                "propagation": self.info.propagation, "guest_only": self.info.guest_only}


def host_table() -> MountTable:
    return MountTable.of(mountinfo.read())


class Guests:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    # ------------------------------------------------------------------ records and facts
    def record(self, name: str) -> GuestRecord:
        validate_name(name)
        rec = load(self.layout, name)
        if rec is None:
            if name in guest_names(self.layout):
                raise OperationError(f"guest {name} is broken: its record is missing; "
                                     f"hint: mirrormount destroy {name}")
            raise UsageError(f"no such guest: {name}")
        return rec

    def ns_files(self, rec: GuestRecord) -> dict[str, str]:
        return {k: self.layout.ns_file(rec.name, k) for k in rec.kinds}

    def facts(self, req: CreateRequest, table: MountTable | None = None) -> HostFacts:
        """What the planner needs, in O(1) of the mount table (mountquery), except for
        mirror+host, which must look at every host mount under the rootfs."""
        lay = self.layout
        if table is None:
            table = (host_table() if req.propagation == "mirror+host"
                     else mounts_at((lay.base, lay.state, lay.nursery_file)))
        nursery = table.at(lay.nursery_file)
        exists = any(os.path.lexists(p) for p in (lay.mirror(req.name), lay.guest_dir(req.name)))
        return HostFacts(table=table, existing=frozenset({req.name} if exists else ()),
                         nursery_ready=nursery is not None and nursery.fstype == "nsfs",
                         put_old=choose_put_old(req.rootfs))

    # ------------------------------------------------------------------ create
    def validate_create(self, req: CreateRequest) -> CreateRequest:
        validate_name(req.name)
        if not os.path.isdir(req.rootfs):
            raise UsageError(f"rootfs {req.rootfs} is not a directory")
        validate_hostname(req.hostname)
        return CreateRequest(req.name, os.path.realpath(req.rootfs), req.hostname, req.kinds,
                             req.propagation)

    def plan(self, req: CreateRequest) -> list[Op]:
        return plan_create(req, self.layout, self.facts(req))

    def dry_run(self, reqs: list[CreateRequest]) -> str:
        return "".join(render(self.plan(req)) for req in reqs)

    def create(self, req: CreateRequest) -> tuple[GuestInfo, Outcome]:
        require_root("create")
        with StateLock(self.layout.state) as lock:
            ops = self.plan(req)
            rec = GuestRecord(name=req.name, mirror=self.layout.mirror(req.name),
                              rootfs=req.rootfs, kinds=req.all_kinds,
                              propagation=req.propagation, hostname=req.hostname,
                              created=time.time())

            # The record is written last, with what only the run knows (the reaper's pid).
            outcome = Executor(lock=lock, record_factory=lambda o: replace(
                rec, reaper_pid=o.reaper_pid).to_json()).run(ops)
        # Described from what we just made, not from a scan of the (large) host table.
        rec = replace(rec, reaper_pid=outcome.reaper_pid)
        namespaces = {k: ns_id(p) or "?" for k, p in self.ns_files(rec).items()}
        pids = [outcome.reaper_pid] if outcome.reaper_pid else []
        return GuestInfo(rec.name, rec.mirror, rec.rootfs, "stopped", namespaces, pids,
                         rec.propagation, rec.hostname), outcome

    # ------------------------------------------------------------------ list / status
    def info(self, name: str, table: MountTable | None = None,
             by_ns: dict[int, list[int]] | None = None) -> GuestInfo:
        rec = load(self.layout, name)
        if rec is None:
            return GuestInfo(name, self.layout.mirror(name), "?", "broken", {}, [],
                             problems=["record missing"])
        namespaces, problems = self._held(rec, table)
        pids: list[int] = []
        mnt = namespaces.get("mnt")
        if mnt:
            if by_ns is None:
                by_ns = pids_by_mnt_ns()
            ino = int(mnt.split("[")[1].rstrip("]"))
            pids = sorted(by_ns.get(ino, []))
        others = [p for p in pids if p != rec.reaper_pid]
        state = "broken" if problems else ("running" if others else "stopped")
        return GuestInfo(rec.name, rec.mirror, rec.rootfs, state, namespaces, pids,
                         rec.propagation, rec.hostname, list(rec.guest_only), problems)

    def _held(self, rec: GuestRecord, table: MountTable | None = None
              ) -> tuple[dict[str, str], list[str]]:
        """The namespaces still held by nsfs binds ({kind: "mnt:[ino]"}) and what is broken."""
        if table is None:
            # Only this guest's mirror and nsfs files matter: O(1) lookups, not the table.
            table = mounts_at([rec.mirror, *self.ns_files(rec).values()])
        namespaces: dict[str, str] = {}
        problems: list[str] = []
        for kind, path in self.ns_files(rec).items():
            held = table.at(path)
            if held is None or held.fstype != "nsfs":
                problems.append(f"{kind} namespace is not held ({path})")
                continue
            namespaces[kind] = ns_id(path) or "?"
        if table.at(rec.mirror) is None:
            problems.append(f"mirror {rec.mirror} is not mounted")
        if rec.reaper_pid and not alive(rec.reaper_pid):
            problems.append(f"pid namespace init {rec.reaper_pid} is gone")
        return namespaces, problems

    def list_all(self) -> list[GuestInfo]:
        require_root("list")  # STATE is 0700: anyone else would just see no guests
        # Per-guest statmount lookups beat parsing tens of thousands of mountinfo lines;
        # without statmount, read the whole table once instead of once per guest.
        table = None if mounts_cheap() else host_table()
        by_ns = pids_by_mnt_ns()
        return [self.info(n, table, by_ns) for n in guest_names(self.layout)]

    def guest_table(self, rec: GuestRecord) -> MountTable | None:
        holder = self.layout.ns_file(rec.name, "mnt")
        if not os.path.exists(holder):
            return None
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            text = in_namespaces({"mnt": holder}, read_own_mountinfo, proc_fd)
        except OSError:
            return None
        finally:
            os.close(proc_fd)
        return MountTable.parse(text)

    def status(self, name: str) -> StatusReport:
        require_root("status")
        rec = self.record(name)
        table = host_table()
        info = self.info(name, table)
        guest = self.guest_table(rec) if "mnt" in info.namespaces else None
        health = assess(rec.mirror, rec.propagation, table, guest, self.layout.base,
                        rec.guest_only)
        return StatusReport(name, rec.mirror, health, info)

    # ------------------------------------------------------------------ exec
    def exec(self, name: str, argv: list[str]) -> int:
        from .nsexec import exec_in
        require_root("exec")
        rec = self.record(name)
        namespaces, problems = self._held(rec)   # no /proc scan: exec needs no pid list
        if "mnt" not in namespaces:
            raise OperationError(f"guest {name} is broken: {'; '.join(problems)}")
        return exec_in(self.ns_files(rec), argv)

    def shell_for(self, name: str) -> str:
        rec = self.record(name)
        shell = os.environ.get("SHELL") or "/bin/sh"
        if not os.path.exists(rec.mirror + shell):
            shell = "/bin/sh"
        return shell

    def add_mounts(self, name: str, mounts: Sequence[RecipeMount]) -> None:
        """A recipe's mounts, in order, each as `mirrormount mount` would make it."""
        from .guestonly import mount_guest_only
        for m in mounts:
            if m.guest_only:
                mount_guest_only(self, name, m.source, m.target, m.fstype, m.options, m.bind)
            else:
                self.mount(name, m.source, m.target, m.fstype, m.options, m.bind)

    # ------------------------------------------------------------------ mount / umount
    def open_guest_path(self, rec: GuestRecord, guest_path: str) -> int:
        """An O_PATH fd for guest_path, resolved with the mirror as root: a symlink the guest
        made (even an absolute one, or '..') cannot lead outside the guest."""
        root = os.open(rec.mirror, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return sc.openat2(root, guest_path.lstrip("/") or ".", sc.O_PATH,
                              sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            exc.filename, exc.filename2 = f"{guest_path} in {rec.name}", None
            raise OperationError(describe(exc, "resolve")) from exc
        finally:
            os.close(root)

    def mount(self, name: str, source: str, target: str, fstype: str | None = None,
              options: str | None = None, bind: bool = False) -> None:
        require_root("mount")
        rec = self.record(name)
        flags, data = mount_options(options)
        if bind:
            if not os.path.exists(source):
                raise UsageError(f"bind source {source} does not exist")
        with StateLock(self.layout.state):
            fd = self.open_guest_path(rec, target)
            try:
                if bind:
                    self._bind_at(source, fd, flags)
                else:
                    # Mount onto the resolved fd, never onto a path string that could be
                    # swapped for a symlink afterwards. The mirror is shared with the guest,
                    # so the mount appears there at `target`.
                    sc.mount(source, f"/proc/self/fd/{fd}", fstype, flags, data)
            except OSError as exc:
                exc.filename, exc.filename2 = source, f"{target} in {name}"
                raise OperationError(describe(exc, "mount")) from exc
            finally:
                os.close(fd)

    @staticmethod
    def _bind_at(source: str, target_fd: int, flags: int) -> None:
        """Bind source onto target_fd. Flags like ro go on the detached copy *before* it is
        attached: a later remount would change the host's copy only, since per-mount flags
        are not propagated to the guest's copy."""
        tree = sc.open_tree(source, sc.OPEN_TREE_CLONE)
        try:
            attrs = sc.mount_attrs(flags)
            if attrs:
                sc.mount_setattr("", 0, recursive=False, dirfd=tree, flags=sc.AT_EMPTY_PATH,
                                 attr_set=attrs)
            sc.move_mount(tree, "", target_fd, "",
                          sc.MOVE_MOUNT_F_EMPTY_PATH | sc.MOVE_MOUNT_T_EMPTY_PATH, source)
        finally:
            os.close(tree)

    def umount(self, name: str, target: str, lazy: bool = False,
               wait: float = 0.0) -> BusyReport | None:
        """Unmount a guest path (the mirror follows by propagation).

        EBUSY is explained by the finder, one sentence per holder (BusyError, exit 3).
        wait > 0 retries a plain umount until the mount is free or the time is up; with lazy,
        whatever is still busy then is detached (MNT_DETACH) and the finder's report of who
        still holds the detached filesystem is returned."""
        require_root("umount")
        rec = self.record(name)
        # The finder reads every namespace and /proc: import it only when asked to explain.
        from ..busy import finder
        spec = f"{name}:{target}"
        identity = None
        if lazy:
            # Resolved before the detach: afterwards the path names nothing in the guest, and
            # the device and fs root are what we follow to the leftovers.
            try:
                identity = finder.resolve_target(spec, self.layout)
            except UsageError:
                identity = None   # not a path in the guest: _umount_once says so below
        deadline = time.monotonic() + max(wait, 0.0)
        delay = 0.05
        while True:
            try:
                self._umount_once(name, target, 0 if (wait > 0 or not lazy) else sc.MNT_DETACH)
                break
            except BusyError:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.5)
                    continue
                if lazy:
                    self._umount_once(name, target, sc.MNT_DETACH)
                    break
                lead = f"cannot unmount {target} in {name}" + (
                    f" after waiting {wait:g}s" if wait > 0 else "")
                try:
                    report = finder.find_pins(spec, self.layout)
                except UsageError:
                    report = None     # it went away meanwhile: nothing left to explain
                text = finder.explain(report, name, target, lead) if report else ""
                if not text:
                    text = (f"{lead}: target is busy (EBUSY), but no holder was found"
                            + (f" ({report.uninspected} process(es) could not be inspected)"
                               if report and report.uninspected else ""))
                raise BusyError(text) from None
        if rec.guest_only:
            # A guest-only mount may leave the private self-bind it stood on, and its path
            # stays in the record until someone notices it is gone (guestonly.py).
            from .guestonly import forget_unmounted
            forget_unmounted(self, rec, target)
        if lazy and identity is not None:
            return finder.find_residue(identity, self.layout)
        return None

    def _pids_in(self, name: str) -> list[int]:
        """Processes in the guest's mount namespace (none if it is not held any more)."""
        holder = self.layout.ns_file(name, "mnt")
        held = mounts_at([holder]).at(holder)
        if held is None or held.fstype != "nsfs":
            return []
        ino = ns_inode(holder)
        return sorted(pids_by_mnt_ns().get(ino, [])) if ino else []

    def _umount_once(self, name: str, target: str, flags: int) -> None:
        try:
            in_namespaces({"mnt": self.layout.ns_file(name, "mnt")}, _umount_in_guest,
                          target, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise BusyError(f"cannot unmount {target} in {name}: target is busy "
                                "(EBUSY)") from exc
            if exc.errno == errno.EINVAL:
                raise OperationError(f"umount {target} in {name} failed: not a mount point "
                                     "(EINVAL)") from exc
            exc.filename = f"{target} in {name}"
            raise OperationError(describe(exc, "umount")) from exc

    # ------------------------------------------------------------------ destroy
    def destroy(self, name: str, force: bool = False, grace: float = 5.0) -> list[int]:
        """Tear a guest down; returns the pids that were signalled. Never removes a file
        through a mount: mirrors are detached first, then only empty directories go."""
        require_root("destroy")
        validate_name(name)
        if name not in guest_names(self.layout):
            raise UsageError(f"no such guest: {name}")
        with StateLock(self.layout.state):
            # Who is inside comes from the held mount namespace itself, not from the record:
            # a create killed before writing its record leaves a reaper nobody recorded.
            pids = self._pids_in(name)
            reapers = [p for p in pids if is_our_reaper(p)]
            inside = [p for p in pids if p not in reapers]
            if inside and not force:
                raise BusyError(f"guest {name} still has {len(inside)} process(es) inside "
                                f"(pids {' '.join(map(str, inside[:10]))}); "
                                "use --force to stop them")
            if inside:
                stop_processes(inside, grace)
            if reapers:
                stop_processes(reapers, 0)
            ns_dir = self.layout.ns_dir(name)
            for kind in ("mnt", "uts", "ipc", "net", "pid", "cgroup"):
                release_ns_file(f"{ns_dir}/{kind}")
            mirror = self.layout.mirror(name)
            if mounts_at([mirror]).at(mirror) is not None:
                # Private first: detaching a shared tree would propagate the unmount into
                # every peer (kernel-findings §3).
                detach(mirror)
            base_dev = os.stat(self.layout.base).st_dev
            if os.path.isdir(mirror) and os.stat(mirror).st_dev == base_dev \
                    and not os.path.ismount(mirror):
                remove_empty_dir(mirror)
            for leftover in (self.layout.record(name),):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass
            remove_empty_dir(ns_dir)
            remove_empty_dir(self.layout.guest_dir(name))
            return inside


def _umount_in_guest(target: str, flags: int) -> None:
    """Runs in a child that entered the guest's mount namespace, whose root is now the guest's
    root: any symlink in target resolves inside the guest, so a plain path is safe here.
    (Going through an O_PATH fd, as mount does, would itself pin the mount: EBUSY.)"""
    try:
        sc.umount2(target, flags)
    except OSError as exc:
        exc.filename = target
        raise


def is_our_reaper(pid: int) -> bool:
    """mirrormount's own PID 1 of a guest pid namespace (nursery._reaper): named mm-reaper
    and pid 1 in its innermost namespace. Killing it is part of destroying the guest."""
    status = read_text(f"/proc/{pid}/status") or ""
    fields = parse_status(status)
    return fields.get("Name") == "mm-reaper" and parse_nspid(status)[-1:] == (1,)


def stop_processes(pids: list[int], grace: float) -> None:
    """TERM, wait up to `grace` seconds, then KILL whatever is left and wait for it."""
    for sig in ((signal.SIGTERM, signal.SIGKILL) if grace > 0 else (signal.SIGKILL,)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        pids = wait_gone(pids, grace if sig == signal.SIGTERM else 5.0)
        if not pids:
            return


_FLAG_OPTS = {"ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV,
              "noexec": sc.MS_NOEXEC}


def mount_options(options: str | None) -> tuple[int, str | None]:
    """Split -o text into mount(2) flags and the filesystem's data string."""
    flags, data = 0, []
    for opt in (options or "").split(","):
        if not opt:
            continue
        if opt in _FLAG_OPTS:
            flags |= _FLAG_OPTS[opt]
        elif opt == "rw":
            continue
        else:
            data.append(opt)
    return flags, ",".join(data) or None

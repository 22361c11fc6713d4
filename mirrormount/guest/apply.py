"""The one executor: every change mirrormount makes to mounts and namespaces (create,
destroy, mount, mount --guest-only, umount, repair) is a plan from plan.py carried out here, step by
step. On a failure, or Ctrl-C, the completed steps are undone in reverse order.

Each operation type has one do-function here. A step that makes several kernel calls pushes
an undo action after each, so whatever point a failure hits, rollback finds exactly what
was made. The undo of a mirror or set-up mount is "make it private, then detach", so the
detach propagates into no peer (kernel-findings §3); the undo of a mount made *through* the
mirror is a plain detach, which must reach the guest's copy. Teardown steps (destroy,
umount) have no undo: they are idempotent, and planning them again completes them.

Fault points (faults.py) are checked before the first step, after each step and at each
point inside a step, so tests can fail or kill the run anywhere.

Signals (kernel/signals.py): a stop (Ctrl-C, SIGTERM, SIGHUP) never cuts a step in two, where
a kernel call could be made and its undo not yet recorded: each step is a deferred section,
and a stop lands at the next fault point (the same places a test may fail the run), then
the completed steps are undone. The rollback is shielded: a stop that arrives during it
waits until it is complete, and is then dropped if a stop started the rollback (that one is
being reported), or reported instead of the failure that started it.

Privilege: root.
"""
from __future__ import annotations

import errno
import os
import posixpath
import signal
import sys
import time
from collections.abc import Callable
from functools import partial

from ..record import field, record
from . import faults
from ..kernel import signals
from ..kernel import syscalls as sc
from ..errors import BusyError, OperationError, UsageError
from ..kernel.mountquery import mounts_at
from ..kernel.procfs import wait_gone
from . import detached
from .mountopts import parse as parse_options
from .nsexec import in_namespaces
from .nursery import kill_and_wait, release_ns_file, spawn_guest, start_nursery
from .ops import (Detach, MakeCgroup, MakeDir, MountTmpfs, Op, RBind, ReleaseNsFile,
                  RemoveCgroup, RemoveDir, RemoveFile, SetPropagation, SpawnGuest, StartNursery,
                  StopProcesses, Unmount, WriteRecord)
from .state import StateLock, write_atomic

# What only some plans need is imported where it is used: every create imports this module,
# and each of these costs start-up time (lifeplan imports the lifecycle's whole model).
# cgroup, guestonly, mkdirs and rejoin are imported by the branches below that call them.
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from .lifeplan import RunInGuest, SignalInit, StartInit, StopAll
    from .mountops import (CopyTree, JoinGroup, MountGuestOnly, MountInto, Propagate,
                           UmountIn)

PROPAGATION = {"private": sc.MS_PRIVATE, "shared": sc.MS_SHARED, "slave": sc.MS_SLAVE,
               "unbindable": sc.MS_UNBINDABLE}


def detach(path: str) -> None:
    """Unmount a tree without letting the unmount propagate anywhere."""
    sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)
    sc.umount2(path, sc.MNT_DETACH)


def unmount_ours(path: str, label: str) -> None:
    """Unmount BASE or STATE while the top mount there is still mirrormount's tmpfs."""
    m = mounts_at([path]).at(path)
    if m is None or m.fstype != "tmpfs" or m.source != label:
        return          # gone already, or not ours: never touched
    # MNT_DETACH: a shell left in BASE must not keep the last destroy from finishing.
    sc.umount2(path, sc.MNT_DETACH)


def mount_tmpfs(op: MountTmpfs, lock: StateLock | None) -> None:
    """BASE's or STATE's tmpfs, built detached (fsopen, fsmount) and then attached.

    Race fix: when this is STATE, the new tmpfs's root is locked before it is attached.
    mount(2) first and flock after left a window: a create arriving just then opened the
    new, unlocked directory, locked it, found it "current" and ran beside the first create,
    which held only the directory beneath. Both then built the same guest, or one's
    rollback detached BASE and STATE from under the other's finished guest. Detached, the
    tmpfs is reachable by no one until move_mount, and from then on it is locked."""
    tree = detached.make_tree(op.source, "tmpfs", parse_options(f"nosuid,nodev,{op.options}"),
                              bind=False)
    try:
        if lock is not None and op.path == lock.path:
            lock.hold(os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=tree))
        sc.move_mount(tree, "", sc.AT_FDCWD, op.path, sc.MOVE_MOUNT_F_EMPTY_PATH, op.source)
    finally:
        os.close(tree)


def remove_empty_dir(path: str) -> None:
    """rmdir, never rm -r: a directory that still holds files (or is a mount) stays."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise


def _point(name: str) -> None:
    """A point between (or inside) steps: where a test may fail the run, and where a stop
    held by the step's deferred section is raised."""
    faults.at(name)
    signals.safe_point()


def _sub_point(step: int, point: int) -> None:
    _point(f"{step}.{point}")


@record
class Outcome:
    """What a run did besides its steps: the reaper's pid, nsfs-bind attempts, seconds per
    operation kind."""

    reaper_pid: int | None = None
    attempts: int = 0
    warnings: list[str] = field(default_factory=list)   # one line each (stop's KILL)
    seconds: dict[str, float] = field(default_factory=dict)


@record
class Executor:
    """Runs a plan's operations in order, recording an undo for each (see the module
    docstring)."""

    lock: StateLock | None = None
    outcome: Outcome = field(default_factory=Outcome)
    undo: list[Callable[[], None]] = field(default_factory=list)

    def run(self, ops: list[Op]) -> Outcome:
        """Do each step; on any failure (or Ctrl-C) undo the completed ones in reverse.
        Fault points (faults.py): "0" before the first step, "N" after step N (numbered
        from 1, as --dry-run numbers them), "N.M" inside step N."""
        try:
            _point("0")
            for number, op in enumerate(ops, start=1):
                t0 = time.perf_counter()
                with signals.deferred():
                    self._do(op, partial(_sub_point, number))
                key = type(op).__name__
                self.outcome.seconds[key] = (self.outcome.seconds.get(key, 0.0)
                                             + time.perf_counter() - t0)
                _point(str(number))
        except BaseException:
            with signals.shielded():
                self.rollback()
                raise
        self.undo.clear()
        return self.outcome

    def rollback(self) -> None:
        done = 0
        while self.undo:
            step = self.undo.pop()
            try:
                step()
            except OSError:
                pass  # best effort; the remaining steps still run
            done += 1
            faults.at(f"undo{done}")

    def _do(self, op: Op, checkpoint: Callable[[int], None]) -> None:
        if isinstance(op, MakeDir):
            created = not os.path.isdir(op.path)
            os.makedirs(op.path, mode=0o700, exist_ok=True)
            if created:
                self.undo.append(partial(remove_empty_dir, op.path))
        elif isinstance(op, MountTmpfs):
            mount_tmpfs(op, self.lock)
            self.undo.append(partial(detach, op.path))
        elif isinstance(op, SetPropagation):
            flags = PROPAGATION[op.flag] | (sc.MS_REC if op.recursive else 0)
            sc.mount(None, op.path, None, flags)
            if op.undo_flag:
                self.undo.append(partial(sc.mount, None, op.path, None,
                                         PROPAGATION[op.undo_flag]))
        elif isinstance(op, RBind):
            sc.mount(op.source, op.target, None, sc.MS_BIND | sc.MS_REC)
            self.undo.append(partial(detach, op.target))
        elif isinstance(op, StartNursery):
            start_nursery(op, checkpoint)
            self.undo.append(partial(release_ns_file, op.holder))
        elif isinstance(op, SpawnGuest):
            spawned = spawn_guest(op, checkpoint)
            self.outcome.reaper_pid = spawned.reaper_pid
            self.outcome.attempts = spawned.attempts

            def undo_spawn(op: SpawnGuest = op, reaper: int | None = spawned.reaper_pid) -> None:
                if reaper:
                    kill_and_wait(reaper)
                for kind in op.kinds:
                    release_ns_file(f"{op.ns_dir}/{kind}")
            self.undo.append(undo_spawn)
        elif isinstance(op, WriteRecord):
            write_atomic(op.path, op.record)
            if op.previous is None:
                self.undo.append(partial(_unlink, op.path))
            else:
                self.undo.append(partial(write_atomic, op.path, op.previous))
        elif isinstance(op, MakeCgroup):
            from . import cgroup
            path = cgroup.make(op.state, op.name)
            if path is not None:
                self.undo.append(partial(cgroup.remove, path))
        elif isinstance(op, RemoveCgroup):
            from . import cgroup
            cgroup.remove(op.path)
        elif isinstance(op, StopProcesses):
            stop_processes(list(op.pids), op.grace)
        elif isinstance(op, ReleaseNsFile):
            release_ns_file(op.path)
        elif isinstance(op, Detach):
            detach(op.path)
        elif isinstance(op, Unmount):
            unmount_ours(op.path, op.label)
        elif isinstance(op, RemoveDir):
            remove_empty_dir(op.path)
        elif isinstance(op, RemoveFile):
            _unlink(op.path)
        elif type(op).__module__ == f"{__package__}.mountops":
            self._do_mount_op(op, checkpoint)
        elif _lifeplan_op(op):
            self._lifecycle(op, checkpoint)  # type: ignore[arg-type]
        else:  # pragma: no cover - a planner bug
            raise TypeError(f"no executor for {type(op).__name__}")

    def _do_mount_op(self, op: Op, checkpoint: Callable[[int], None]) -> None:
        """mountops.py's steps (mount, umount, repair, a net guest's sysfs). Such an op
        exists only once mountops is imported, so a create never imports it for this."""
        from . import mountops as m
        if isinstance(op, m.MakeTarget):
            from . import mkdirs
            where = f"{posixpath.join(op.parent, *op.names)} in {op.name}"
            if op.holder:
                made = mkdirs.make_in_guest(op.holder, op.parent, op.names, where)
                self.undo.append(partial(mkdirs.remove_in_guest, op.holder, made))
            else:
                made = mkdirs.make_in_mirror(op.mirror, op.parent, op.names, where)
                self.undo.append(partial(mkdirs.remove_in_mirror, op.mirror, made))
        elif isinstance(op, m.MountInto):
            self._mount_into(op, checkpoint)
        elif isinstance(op, m.MountGuestOnly):
            self._mount_guest_only(op, checkpoint)
        elif isinstance(op, m.UmountIn):
            umount_in(op)
        elif isinstance(op, m.RecoverGuestOnly):
            from . import guestonly
            guestonly.recover(op.holder, op.mirror, op.pending)
        elif isinstance(op, m.DropSelfBind):
            from . import guestonly
            guestonly.drop_self_bind(op.holder, op.target)
        elif isinstance(op, (m.Propagate, m.JoinGroup, m.CopyTree)):
            self._mend(op)
        else:  # pragma: no cover - a planner bug
            raise TypeError(f"no executor for {type(op).__name__}")

    def _lifecycle(self, op: StartInit | RunInGuest | SignalInit | StopAll,
                   checkpoint: Callable[[int], None]) -> None:
        """start and stop (lifeplan.py, lifework.py). A fresh init is undone by killing it
        (its pin then holds an ended pid namespace: the guest is stopped, as before); the
        rest ends processes or runs commands, and is done again by planning again."""
        from . import lifework
        from .lifeplan import RunInGuest, SignalInit, StartInit
        if isinstance(op, StartInit):
            pid = lifework.start_init(op, checkpoint)
            self.outcome.reaper_pid = pid
            self.undo.append(partial(kill_and_wait, pid))
            return
        warning = (lifework.run_in_guest(op) if isinstance(op, RunInGuest) else
                   lifework.signal_init(op) if isinstance(op, SignalInit) else
                   lifework.stop_all(op))
        if warning:
            self.outcome.warnings.append(warning)

    def _mend(self, op: Propagate | JoinGroup | CopyTree) -> None:
        """repair's steps (rejoin.py does the kernel work). The host side's mount is opened
        inside the mirror, here, for the step and again for its undo: never a path string."""
        from . import rejoin
        from .mountops import JoinGroup, Propagate

        def host_fd_then(fn: Callable[..., None], *args: object) -> None:
            # a guest-side propagation change needs no host fd (the host may lack the path)
            on_host = not (fn is rejoin.propagate and args[0] == "guest") and not (
                fn is rejoin.detach_copy and args[0] == "guest")
            fd = open_in_root(op.mirror, op.path) if on_host else -1
            try:
                fn(*args[:1], fd, *args[1:])
            except OSError as exc:
                exc.filename = exc.filename or f"{op.path} (mirror of {op.mirror})"
                raise
            finally:
                if fd >= 0:
                    os.close(fd)

        if isinstance(op, Propagate):
            host_fd_then(rejoin.propagate, op.side, op.holder, op.path, op.flag)
            if op.undo_flag:
                self.undo.append(partial(host_fd_then, rejoin.propagate, op.side, op.holder,
                                         op.path, op.undo_flag))
        elif isinstance(op, JoinGroup):
            host_fd_then(rejoin.join_group, op.to, op.holder, op.path)
            # leaving the group again: the target's Propagate undo then restores its kind
            self.undo.append(partial(host_fd_then, rejoin.propagate, op.to, op.holder,
                                     op.path, "private"))
        else:
            host_fd_then(rejoin.copy_tree, op.to, op.holder, op.path)
            self.undo.append(partial(host_fd_then, rejoin.detach_copy, op.to, op.holder,
                                     op.path))

    def _mount_into(self, op: MountInto, checkpoint: Callable[[int], None]) -> None:
        where = f"{op.target} in {op.name}"
        if op.netns:
            # Made and attached by a child in the guest's net namespace (its mount
            # namespace stays the host's: the mirror's paths are ours).
            in_namespaces({"net": op.netns}, make_and_attach, op, where, None)
            self.undo.append(partial(unmount_through_mirror, op.mirror, op.target))
            checkpoint(1)
            return
        make_and_attach(op, where, checkpoint)
        self.undo.append(partial(unmount_through_mirror, op.mirror, op.target))

    def _mount_guest_only(self, op: MountGuestOnly, checkpoint: Callable[[int], None]) -> None:
        from . import guestonly
        try:
            tree = guestonly.detached_tree(op.source, op.fstype, op.opts, op.bind)
        except OSError as exc:
            exc.filename = exc.filename or op.source
            exc.filename2 = f"{op.target} in {op.name} (guest-only)"
            raise
        try:
            checkpoint(1)
            before = guestonly.host_mount_ids()
            placed = guestonly.attach_in_guest(op.holder, tree, op.target)
        finally:
            os.close(tree)
        self.undo.append(partial(guestonly.undo_in_guest, op.holder, placed))
        if placed.guest_path != op.target:
            raise OperationError(f"mount --guest-only: {op.target} now resolves to "
                                 f"{placed.guest_path} in {op.name}; nothing was mounted")
        checkpoint(2)
        guestonly.detach_host_copy(op.mirror, placed.guest_path, before)


def _lifeplan_op(op: Op) -> bool:
    """Is op one of lifeplan's (start, stop)? Such an op exists only once lifeplan.py has been
    imported by whoever planned it, so a plan without one never imports it."""
    lifeplan = sys.modules.get(f"{__package__}.lifeplan")
    return lifeplan is not None and isinstance(
        op, (lifeplan.StartInit, lifeplan.RunInGuest, lifeplan.SignalInit, lifeplan.StopAll))


def make_and_attach(op: MountInto, where: str,
                    checkpoint: Callable[[int], None] | None) -> None:
    """Build the mount whole (detached.py: options judged and set before anything is
    attached), then attach it through the mirror."""
    try:
        tree = detached.make_tree(op.source, op.fstype, op.opts, op.bind)
    except OSError as exc:
        exc.filename, exc.filename2 = exc.filename or op.source, where
        raise
    try:
        if checkpoint is not None:
            checkpoint(1)
        attach_through_mirror(tree, op, where)
    finally:
        os.close(tree)


def attach_through_mirror(tree: int, op: MountInto, where: str) -> None:
    """move_mount the detached tree onto TARGET, resolved inside the mirror now (an fd, never
    a path string the guest could swap for a symlink afterwards). Refuses, with nothing
    attached, when TARGET now resolves elsewhere than when planned (the guest changed a
    symlink meanwhile) or is of the other kind (file vs directory)."""
    fd = open_in_root(op.mirror, op.target)
    try:
        now = guest_path_of(fd, op.mirror)
        if op.resolved and now != op.resolved:
            raise OperationError(f"mount: {op.target} now resolves to {now} in {op.name}; "
                                 "nothing was mounted")
        wrong = detached.kind_mismatch(detached.is_dir_fd(tree), detached.is_dir_fd(fd),
                                       where)
        if wrong is not None:
            raise wrong
        try:
            sc.move_mount(tree, "", fd, "", sc.MOVE_MOUNT_F_EMPTY_PATH |
                          sc.MOVE_MOUNT_T_EMPTY_PATH, op.source)
        except OSError as exc:
            exc.filename, exc.filename2 = op.source, where
            raise
    finally:
        os.close(fd)


def guest_path_of(fd: int, mirror: str) -> str:
    """The guest path an fd opened inside the mirror stands for (its host path, less the
    mirror's prefix)."""
    host = os.readlink(f"/proc/self/fd/{fd}")
    top = mirror.rstrip("/")
    if host == top:
        return "/"
    return host[len(top):] if host.startswith(top + "/") else host


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def open_in_root(root_dir: str, path: str) -> int:
    """An O_PATH fd for `path` resolved with `root_dir` as / (openat2 RESOLVE_IN_ROOT): a
    symlink the guest made, even an absolute one or '..', cannot lead outside it."""
    root = os.open(root_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return sc.openat2(root, path.lstrip("/") or ".", sc.O_PATH,
                          sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)


def unmount_through_mirror(mirror: str, target: str) -> None:
    """Undo of MountInto: detach the top mount at target. Not made private first: the
    unmount must propagate to the guest's copy, its peer."""
    fd = open_in_root(mirror, target)
    try:
        sc.umount2(f"/proc/self/fd/{fd}", sc.MNT_DETACH)
    finally:
        os.close(fd)


def _umount_in_guest(target: str, flags: int) -> None:
    """Runs in a child that entered the guest's mount namespace, whose root is now the guest's
    root: any symlink in target resolves inside the guest, so a plain path is safe here.
    (Going through an O_PATH fd, as mount does, would itself pin the mount: EBUSY.)"""
    try:
        sc.umount2(target, flags)
    except OSError as exc:
        exc.filename = target
        raise


def umount_in(op: UmountIn) -> None:
    try:
        in_namespaces({"mnt": op.holder}, _umount_in_guest, op.target,
                      sc.MNT_DETACH if op.lazy else 0)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise BusyError(f"cannot unmount {op.target} in {op.name}: target is busy "
                            "(EBUSY)") from exc
        # The unmount is always a plan's first step: when it fails, nothing has changed,
        # so a path that is no mount point, or not there at all, is bad input (exit 2).
        if exc.errno == errno.EINVAL:
            if op.gone_ok:
                return
            raise UsageError(f"umount: {op.target} in {op.name} is not a mount point "
                             "(EINVAL); nothing was changed") from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"umount: {op.target} in {op.name} does not exist "
                             f"({os.strerror(exc.errno)}); nothing was changed") from exc
        exc.filename = f"{op.target} in {op.name}"
        raise


def stop_processes(pids: list[int], grace: float) -> None:
    """TERM, wait up to `grace` seconds, then KILL whatever is left and wait for it.

    The waits are safe points (a teardown step is idempotent, and has no undo): a Ctrl-C
    during a long --grace ends the wait, not only the step."""
    for sig in ((signal.SIGTERM, signal.SIGKILL) if grace > 0 else (signal.SIGKILL,)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while True:
            pids = wait_gone(pids, min(0.1, max(0.0, deadline - time.monotonic())))
            if not pids or time.monotonic() >= deadline:
                break
            signals.safe_point()
        if not pids:
            return

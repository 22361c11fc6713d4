"""mount and umount through the mirror: the verbs Guests (guest/guests.py) takes from
MountVerbs. Planning resolves TARGET inside the guest's root (openat2 RESOLVE_IN_ROOT)
and raises UsageError before any change; the change itself is a plan run by the one
executor (guest/apply.py).

Privilege: root (require_root) for mount and umount; planning reads only.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time

from ..errors import BusyError, OperationError, UsageError
from ..kernel.mountinfo import is_under
from . import mkdirs
from .model import Layout, validate_guest_path
from .reports import MountResult
from .state import GuestRecord, StateLock

if TYPE_CHECKING:
    from .mountopts import MountOptions
    from .ops import Op
    from .recipe import RecipeMount


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise OperationError(f"{what} needs root (CAP_SYS_ADMIN); nothing was changed")



def check_source(source: str, fstype: str | None, options: str | None,
                 bind: bool) -> MountOptions:
    """What a mount's source, type and options say before anything else is looked at:
    the options parsed (mountopts.py refuses propagation and the like), a bind's source
    exists and takes no -t, a new filesystem names exactly one type. UsageError (exit 2)."""
    from .mountopts import parse
    opts = parse(options, bind=bind)
    if bind:
        if fstype not in (None, "none"):
            raise UsageError(f"mount --bind takes no -t (a bind keeps its source's "
                             f"filesystem); -t {fstype} given")
        if not os.path.exists(source):
            raise UsageError(f"bind source {source} does not exist")
    elif not fstype or fstype == "auto" or "," in fstype:
        raise UsageError("mount: give the filesystem type with -t TYPE (one type; "
                         "mirrormount does not probe), or --bind")
    return opts


def check_new_filesystem(fstype: str, source: str, opts: MountOptions, where: str) -> None:
    """The kernel judges the type and every option (fsopen/fsconfig), creating nothing
    (detached.check_filesystem): UsageError for a refused option, an OSError naming
    ``where`` otherwise (ENODEV: no such filesystem type)."""
    from . import detached
    try:
        detached.check_filesystem(fstype, source, opts)
    except OSError as exc:
        exc.filename2 = where
        raise


class MountVerbs:
    """mount and umount, for a class with a ``layout`` and a ``record(name)`` (Guests)."""

    layout: Layout

    def record(self, name: str) -> GuestRecord:  # pragma: no cover - Guests' own
        raise NotImplementedError

    def check_recipe_mounts(self, rootfs: str, mounts: Sequence[RecipeMount]) -> None:
        """A recipe's mounts judged before the guest is made, so that a bad one changes
        nothing (exit 2) instead of a guest made and removed again: a bind's source exists,
        a new filesystem's type and every option pass the kernel (fsopen/fsconfig, creating
        nothing: detached.check_filesystem), and each target exists in ROOTFS, resolved as
        the guest will (RESOLVE_IN_ROOT), unless the mount has ``mkdir`` or an earlier mount
        of the recipe lies over it. Raises UsageError naming the recipe's [[mount]]."""
        earlier: list[str] = []
        for m in mounts:
            where = m.where or f"recipe mount {m.target}"
            try:
                opts = check_source(m.source, m.fstype, m.options, m.bind)
                if not m.bind:
                    assert m.fstype
                    try:
                        check_new_filesystem(m.fstype, m.source, opts, where)
                    except PermissionError:
                        pass        # not root: create itself says that it needs root
                if not any(is_under(m.target, top) for top in earlier):
                    self._target(m.target, f"{m.target} in the rootfs {rootfs}",
                                 lambda p: self._target_in_root(rootfs, p), m.mkdir,
                                 hint="add mkdir = true to make it")
            except UsageError as exc:
                said = str(exc)
                if "nothing was changed" not in said:
                    said += "; nothing was changed"
                raise UsageError(f"{where}: {said}") from None
            earlier.append(m.target)

    def plan_mount(self, name: str, source: str, target: str, fstype: str | None = None,
                   options: str | None = None, bind: bool = False,
                   guest_only: bool = False, mkdir: bool = False) -> list[Op]:
        """The plan of `mirrormount mount`. Bad input raises UsageError (exit 2) here, before
        any change: a refused option (mountopts.py; for a new filesystem the kernel itself
        judges each option, detached.check_filesystem), a missing source or target (unless
        ``mkdir``: then the plan starts with a MakeTarget step, guest/mkdirs.py), a file
        onto a directory or the reverse."""
        from . import detached, guestonly
        from .mountops import MakeTarget
        from .plan import plan_mount
        validate_guest_path(target, "mount: target")
        rec = self.record(name)
        opts = check_source(source, fstype, options, bind)
        where = f"{target} in {name}"
        under = (0, 0)
        holder = ""
        if guest_only:
            holder = self.layout.ns_file(name, "mnt")
            if not os.path.exists(holder):
                raise OperationError(f"guest {name} is broken: its mount namespace is not "
                                     f"held ({holder})")
            (parent, is_dir, guest_under), names = self._target(
                target, where, lambda p: guestonly.target_in_guest(holder, p), mkdir)
            resolved = mkdirs.join(parent, names)
            if resolved == "/":
                raise UsageError("mount --guest-only: not on the guest's / (it would cut "
                                 "the mirror)")
            try:
                # A directory still to make stands on the mount its parent is on.
                under = (guest_under, guestonly.host_top(rec.mirror, parent))
            except OSError:
                under = (guest_under, 0)    # not in the mirror: nothing can be left there
        else:
            (parent, is_dir), names = self._target(
                target, where, lambda p: self._target_in_mirror(rec, p), mkdir)
            resolved = mkdirs.join(parent, names)
        if names:
            is_dir = True
        # A new filesystem's root is a directory; a bind is what its source is.
        wrong = detached.kind_mismatch(os.path.isdir(source) if bind else True, is_dir, where)
        if wrong is not None:
            raise wrong
        if not bind:
            assert fstype
            check_new_filesystem(fstype, source, opts,
                                 where + (" (guest-only)" if guest_only else ""))
        ops = plan_mount(rec, self.layout, source, target, fstype, opts, bind, guest_only,
                         resolved, under)
        if not names:
            return ops
        return [MakeTarget("--mkdir: TARGET's missing directories, made inside the guest's "
                           "root like the mount itself; removed again if the mount fails",
                           name, rec.mirror, holder, parent, names), *ops]

    @staticmethod
    def _target(target: str, where: str, resolve: Callable[[str], tuple],
                mkdir: bool = False, hint: str = "use --mkdir to create it"
                ) -> tuple[tuple, tuple[str, ...]]:
        """Resolve TARGET in the guest: what ``resolve`` says of it, and () as nothing is to
        be made. A target that is not there is bad input (exit 2), with ``hint`` (--mkdir);
        with ``mkdir``, what ``resolve`` says of its longest existing prefix instead, and
        the names to create below it (guest/mkdirs.py)."""
        parts = mkdirs.components(target)
        cut = len(parts)
        while True:
            try:
                found = resolve(target if cut == len(parts) else "/" + "/".join(parts[:cut]))
                break
            except OSError as exc:
                if mkdir and exc.errno == errno.ENOENT and cut > 0:
                    cut -= 1        # a missing directory: look one level up
                    continue
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    said = (f"; {hint}" if exc.errno == errno.ENOENT and not mkdir else "")
                    raise UsageError(f"mount: target {where} does not exist "
                                     f"({os.strerror(exc.errno)}); nothing was changed"
                                     f"{said}") from None
                if exc.errno == errno.ELOOP:
                    raise UsageError(f"mount: target {where} cannot be reached (a loop of "
                                     "symlinks in the guest); nothing was changed") from None
                exc.filename, exc.filename2 = where, None
                raise
        names = mkdirs.missing_names(parts[cut:], where)
        if names and not found[1]:
            raise UsageError(f"mount --mkdir: target {where}: {found[0]} is not a "
                             "directory; nothing was changed")
        return found, names

    @staticmethod
    def _target_in_mirror(rec: GuestRecord, target: str) -> tuple[str, bool]:
        """TARGET resolved inside the guest's root through the mirror (RESOLVE_IN_ROOT, as
        the executor will), and whether it is a directory."""
        return MountVerbs._target_in_root(rec.mirror, target)

    @staticmethod
    def _target_in_root(root: str, target: str) -> tuple[str, bool]:
        """TARGET resolved with ``root`` as / (RESOLVE_IN_ROOT), as a path under it, and
        whether it is a directory. The mirror, or (before a guest exists) its rootfs."""
        from . import detached
        from .apply import guest_path_of, open_in_root
        fd = open_in_root(root, target)
        try:
            return guest_path_of(fd, root), detached.is_dir_fd(fd)
        finally:
            os.close(fd)

    def mount(self, name: str, source: str, target: str, fstype: str | None = None,
              options: str | None = None, bind: bool = False,
              guest_only: bool = False, mkdir: bool = False) -> MountResult:
        require_root("mount")
        from .apply import Executor
        from .mountops import MountGuestOnly, MountInto
        self.record(name)       # no such guest: said before STATE is opened
        with StateLock(self.layout.state) as lock:
            ops = self.plan_mount(name, source, target, fstype, options, bind, guest_only,
                                  mkdir)
            Executor(lock=lock).run(ops)
        op = next(o for o in ops if isinstance(o, (MountInto, MountGuestOnly)))
        resolved = op.resolved if isinstance(op, MountInto) else op.target
        return MountResult(name, source, target, resolved or target, guest_only,
                           options or "")

    def plan_umount(self, name: str, target: str, lazy: bool = False) -> list[Op]:
        from . import guestonly
        from .plan import plan_umount
        validate_guest_path(target, "umount: target")
        rec = self.record(name)
        resolved = None
        if rec.guest_only:
            try:
                resolved = guestonly.resolve_in_guest(self.layout.ns_file(name, "mnt"),
                                                      target)
            except OSError:
                resolved = None      # gone already: the umount step says so
        return plan_umount(rec, self.layout, target, lazy, resolved)

    def umount(self, name: str, target: str, lazy: bool = False, wait: float = 0.0) -> None:
        """Unmount a guest path (the mirror follows by propagation).

        Raises UmountBusy (exit 3) on EBUSY; the CLI asks the busy finder who holds it.
        wait > 0 retries a plain umount until the mount is free or the time is up; with
        lazy, whatever is still busy then is detached (MNT_DETACH)."""
        require_root("umount")
        from .apply import Executor
        validate_guest_path(target, "umount: target")
        self.record(name)       # no such guest: said before STATE is opened
        deadline = time.monotonic() + max(wait, 0.0)
        delay = 0.05
        while True:
            try:
                with StateLock(self.layout.state) as lock:
                    Executor(lock=lock).run(self.plan_umount(name, target,
                                                             lazy and wait <= 0))
                return
            except BusyError:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    time.sleep(min(delay, remaining))
                    delay = min(delay * 2, 0.5)
                    continue
                if lazy:
                    with StateLock(self.layout.state) as lock:
                        Executor(lock=lock).run(self.plan_umount(name, target, True))
                    return
                raise UmountBusy(name, target, wait) from None


class UmountBusy(BusyError):
    """umount met EBUSY (exit 3). Carries what the CLI needs to ask who holds the mount."""

    def __init__(self, name: str, target: str, waited: float) -> None:
        self.name, self.target, self.waited = name, target, waited
        super().__init__(f"{self.lead}: target is busy (EBUSY)")

    @property
    def lead(self) -> str:
        return f"cannot unmount {self.target} in {self.name}" + (
            f" after waiting {self.waited:g}s" if self.waited > 0 else "")

"""Domain errors, the kernel's errors, and the one place that turns either into a line of text.

Exit codes are a contract (see README): 0 ok, 1 operation failed, 2 bad input/usage (nothing
changed), 3 busy.

A kernel error is raised as ``KernelError`` (an OSError): ``errno``, ``op`` (the syscall:
"mount", "umount", "pivot_root", "move_mount", ...), ``filename``/``filename2`` (the paths) and
``where`` (context a caller may add, e.g. "in guest c1"). ``strerror`` is the plain
os.strerror text. Nothing is encoded in strings, so the error keeps its meaning across a
pickle (a forked child's exception, kernel/child.py) and is formatted only once, by
``describe()``, which only the CLI's error handler calls.
"""
from __future__ import annotations

import errno as E
import os
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BUSY = 3


class MirrormountError(Exception):
    """An error the CLI reports as one line on stderr with ``exit_code``."""

    exit_code = EXIT_FAILED


class UsageError(MirrormountError):
    exit_code = EXIT_USAGE


class BusyError(MirrormountError):
    exit_code = EXIT_BUSY


class OperationError(MirrormountError):
    exit_code = EXIT_FAILED


class PartlyDone(MirrormountError):
    """A batch (``create A B C``, ``destroy A B``) failed after some names were done. Every
    name was validated before the first change, so this is never a usage error: exit 1,
    with ``cause`` (the error of the failing name), ``done`` and ``not_done`` (names)."""

    exit_code = EXIT_FAILED

    def __init__(self, verb: str, cause: BaseException, done: list[str],
                 not_done: list[str]) -> None:
        self.verb, self.cause, self.done, self.not_done = verb, cause, done, not_done
        super().__init__(verb, done, not_done)

    @property
    def tail(self) -> str:
        past = {"create": "created", "destroy": "destroyed"}.get(self.verb, "done")
        if not self.not_done:       # a stop that came once every name was done
            return f"{past}: {' '.join(self.done)}"
        return (f"{past}: {' '.join(self.done)}; not {past}: {' '.join(self.not_done)}")



class KernelError(OSError):
    """A syscall failed: ``KernelError(errno, op, path[, path2], where=...)``.

    ``op`` names the operation ("mount", "umount", "pivot_root", "move_mount", "open_tree",
    "setns", "unshare", "mount_setattr", "fsopen", "fsconfig", "fsmount", "openat2", "statx",
    "statmount", ...); ``where`` is optional context a caller adds (``exc.where = "in guest
    c1"``); ``detail`` is what the kernel itself said beyond the errno, when it says more (the
    fs-context log of fsconfig(2): "tmpfs: Bad value for 'size'"). ``strerror`` is
    os.strerror(errno); the paths are ``filename`` and ``filename2``, as for any OSError.

    Like ``OSError(errno, ...)`` itself, the instance is also of the errno's builtin subclass
    (``KernelError(ENOENT, ...)`` is a FileNotFoundError too), so ``except FileNotFoundError``
    around a syscall wrapper keeps working.
    """

    op: str
    where: str | None
    detail: str | None

    def __new__(cls, errno: int, op: str, filename: str | None = None,
                filename2: str | None = None, *, where: str | None = None) -> KernelError:
        if cls is KernelError:
            cls = _BY_ERRNO.get(errno, KernelError)
        # OSError.__new__ sets errno, strerror, filename and filename2 from these.
        self: KernelError = OSError.__new__(cls, errno, os.strerror(errno), filename, None,
                                            filename2)
        return self

    def __init__(self, errno: int, op: str, filename: str | None = None,
                 filename2: str | None = None, *, where: str | None = None) -> None:
        # (OSError.__init__ does nothing when __new__ is overridden: __new__ set it all.)
        self.op = op
        self.where = where
        self.detail = None

    def __reduce__(self) -> tuple[Any, ...]:
        # OSError's own reduce would pass (errno, strerror, filename, None, filename2), which
        # is not this constructor's signature. Rebuild from the attributes; pickle restores
        # __dict__ (op, where, anything a caller added) afterwards.
        return (type(self), (self.errno, self.op, self.filename, self.filename2),
                dict(self.__dict__))

    def __repr__(self) -> str:
        paths = "".join(f", {p!r}" for p in (self.filename, self.filename2) if p is not None)
        where = f", where={self.where!r}" if self.where else ""
        return f"{type(self).__name__}({self.errno}, {self.op!r}{paths}{where})"

    def __str__(self) -> str:
        # Tracebacks and logs: the operation too, not just "[Errno 22] Invalid argument".
        return f"{self.op}: {super().__str__()}"


def _errno_subclasses() -> dict[int, type[KernelError]]:
    """KernelError x each builtin OSError subclass (as OSError maps errnos), defined at module
    level under a stable name so that pickle finds them (KernelFileNotFoundError, ...)."""
    builtin: dict[int, type[OSError]] = {
        E.EAGAIN: BlockingIOError, E.EALREADY: BlockingIOError,
        E.EINPROGRESS: BlockingIOError, E.ECHILD: ChildProcessError,
        E.EPIPE: BrokenPipeError, E.ESHUTDOWN: BrokenPipeError,
        E.ECONNABORTED: ConnectionAbortedError, E.ECONNREFUSED: ConnectionRefusedError,
        E.ECONNRESET: ConnectionResetError, E.EEXIST: FileExistsError,
        E.ENOENT: FileNotFoundError, E.EINTR: InterruptedError, E.EISDIR: IsADirectoryError,
        E.ENOTDIR: NotADirectoryError, E.EACCES: PermissionError, E.EPERM: PermissionError,
        E.ESRCH: ProcessLookupError, E.ETIMEDOUT: TimeoutError,
    }
    made: dict[type[OSError], type[KernelError]] = {}
    out: dict[int, type[KernelError]] = {}
    for number, base in builtin.items():
        if base not in made:
            name = f"Kernel{base.__name__}"
            made[base] = type(name, (KernelError, base), {"__module__": __name__,
                                                          "__qualname__": name})
            globals()[name] = made[base]
        out[number] = made[base]
    return out


_BY_ERRNO = _errno_subclasses()


# Hints for errnos whose plain strerror misleads an admin, keyed on (errno, op); an op of
# None matches any operation. Looked up as (errno, op) first, then (errno, None).
_PROPAGATION = ("often a propagation problem: pivot_root and move_mount refuse shared "
                "parents/put_old (make the parent mount private first)")
_TABLE_FULL = ("this mount namespace is at fs.mount-max (/proc/sys/fs/mount-max): raise it, "
               "or destroy guests; nothing of this step was kept")
_NSFS_LOOP = "an nsfs file is inside the tree: the state dir must be unbindable"
_HINTS: dict[tuple[int, str | None], str] = {
    (E.EINVAL, "pivot_root"): _PROPAGATION,
    (E.EINVAL, "move_mount"): _PROPAGATION,
    (E.EINVAL, "mount"): ("check the type and options, and that a bind's source and target "
                          "are both files or both directories"),
    # The new mount API: EINVAL here is about the filesystem or its options, never about
    # propagation (fsconfig/fsmount build a detached mount that has no parent yet).
    (E.EINVAL, "fsconfig"): "the filesystem refused its source or an option (its own words "
                            "are above)",
    (E.EINVAL, "fsmount"): "the kernel refused a mount attribute of the new filesystem",
    (E.EINVAL, "mount_setattr"): ("the kernel refused a mount attribute (nosymfollow needs "
                                  "Linux 5.14+)"),
    (E.ENODEV, "fsopen"): ("the kernel knows no such filesystem type: see /proc/filesystems "
                           "(its module may not be loaded)"),
    (E.ENOSPC, "mount"): _TABLE_FULL,
    (E.ENOSPC, "open_tree"): _TABLE_FULL,
    (E.ENOSPC, "move_mount"): _TABLE_FULL,
    (E.ENOSPC, "unshare"): "a namespace limit was reached: check /proc/sys/user/max_*_namespaces",
    (E.ELOOP, "mount"): _NSFS_LOOP,
    (E.ELOOP, "open_tree"): _NSFS_LOOP,
    (E.ELOOP, "move_mount"): _NSFS_LOOP,
    (E.ENOSYS, None): "this kernel lacks the syscall (open_tree/move_mount need Linux 5.2+, "
                      "mount_setattr 5.12+, statmount 6.8+)",
    (E.EPERM, None): "needs root (CAP_SYS_ADMIN in the initial user namespace)",
    (E.EBUSY, "umount"): "something still uses it: try `mirrormount busy`",
}

GENERIC_OP = "operation"


def hint(err: int | None, op: str | None) -> str | None:
    """The hint for this errno from this operation, if the plain strerror misleads."""
    return _HINTS.get((err or 0, op)) or _HINTS.get((err or 0, None))


# What a write to a full, failing or over-quota file says (write(2)).
WRITE_ERRNOS = frozenset({E.ENOSPC, E.EFBIG, E.EDQUOT})   # not EIO: any read can fail so


def is_write_error(exc: BaseException) -> bool:
    """An OSError of Python's own write (to stdout: `list > /dev/full`): a write(2) errno,
    no path and no syscall of ours. describe() says it as util-linux's close_stdout does."""
    return (isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and not exc.filename
            and not getattr(exc, "op", None))


def describe(exc: OSError, op: str | None = None) -> str:
    """'OP PATH[ on PATH2][ WHERE] failed: STRERROR (ENAME)[; hint: ...]': one line for any
    OSError. Only the CLI's error handler should call it; everything else raises.

    The operation is ``op`` when given (a caller's wording, e.g. "resolve"), else the
    exception's own ``op`` (KernelError), else a generic word for an OSError from Python
    itself. Hints are keyed on the kernel's operation (the exception's ``op``) when known."""
    own_op = getattr(exc, "op", None)
    own_op = own_op if isinstance(own_op, str) and own_op else None
    if op is None and is_write_error(exc):
        return f"write error: {exc.strerror or os.strerror(exc.errno or 0)}"
    what = op or own_op or GENERIC_OP
    words = [what]
    if exc.filename:
        words.append(str(exc.filename))
    if exc.filename2:
        words += ["on", str(exc.filename2)]
    where = getattr(exc, "where", None)
    if where:
        words.append(str(where))
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc) or
                              type(exc).__name__)
    text = f"{' '.join(words)} failed: {reason}"
    name = E.errorcode.get(exc.errno or 0)
    if name:
        text += f" ({name})"
    detail = getattr(exc, "detail", None)
    if detail:
        text += f": the kernel says: {detail}"
    extra = hint(exc.errno, own_op or op)
    if extra:
        text += f"; hint: {extra}"
    return text.replace("\n", "\\n")

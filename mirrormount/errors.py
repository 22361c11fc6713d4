"""Domain errors and the one place that turns a kernel error into a one-line message.

Exit codes are a contract (see README): 0 ok, 1 operation failed, 2 bad input/usage (nothing
changed), 3 busy.
"""
from __future__ import annotations

import errno as E

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


# errnos whose plain strerror misleads an admin, with what they usually mean for mounts.
_HINTS = {
    E.ENOSPC: "the mount table is full: check /proc/sys/fs/mount-max",
    E.EINVAL: "often a propagation problem: pivot_root and move_mount refuse shared parents",
    E.EPERM: "needs root (CAP_SYS_ADMIN in the initial user namespace)",
    E.ELOOP: "an nsfs file is inside the tree: the state dir must be unbindable",
    E.ENOSYS: "this kernel lacks the syscall (open_tree/move_mount need Linux 5.2+)",
    E.EBUSY: "something still uses it: try `mirrormount busy`",
}


def describe(exc: OSError, op: str | None = None) -> str:
    """'OP PATH[ on PATH2] failed: REASON (hint)' — the message every kernel failure gets."""
    what = op or (exc.strerror or "operation").split(":")[0]
    paths = " ".join(p for p in (exc.filename, exc.filename2) if p)
    if exc.filename and exc.filename2:
        paths = f"{exc.filename} on {exc.filename2}"
    reason = E.errorcode.get(exc.errno or 0, "")
    text = f"{what} {paths} failed: {(exc.strerror or '').split(': ')[-1]}".replace("  ", " ")
    if reason:
        text += f" ({reason})"
    hint = _HINTS.get(exc.errno or 0)
    if hint and exc.errno != E.EBUSY:
        text += f"; hint: {hint}"
    return text

"""Fault injection, for tests: fail or die at a chosen point of a planned change.

``MIRRORMOUNT_FAULT`` holds one or more points, comma-separated, each optionally ``:kill``
or ``:stop``:

- ``N``      after step N of the plan (numbered as ``--dry-run`` numbers them, from 1;
             ``0`` is before the first step);
- ``N.M``    at point M inside step N, for steps that make several kernel calls (spawning a
             guest: after its namespaces are built, after each nsfs bind, after the commit);
- ``undoK``  after the K-th undo action of a rollback;
- ``reported`` once a batch verb (create, destroy) has finished a name and printed its
             line, while a stop is still held: the moment a Ctrl-C comes too late to undo.

Without a suffix the point raises ``InjectedFault`` (exit 1), so the executor rolls back;
with ``:kill`` the process sends itself SIGKILL, as a crash or the OOM killer would, and
nothing is rolled back. With ``:stop`` it sends itself SIGSTOP and, once continued
(SIGCONT), goes on as if nothing happened: a test sends a signal meanwhile (a Ctrl-C at
exactly that point), which arrives as the process continues. Example:
``MIRRORMOUNT_FAULT=5,undo2:kill`` fails after step 5 and dies after the second undo action
of the rollback that follows; ``MIRRORMOUNT_FAULT=5:stop,undo2:stop`` pauses after step 5
and again inside the rollback that a Ctrl-C sent there starts.

``MIRRORMOUNT_FORCE_NSFS_EINVAL=K`` makes the first K binds of a new mount namespace's nsfs
file fail with EINVAL, as the kernel's loop check sometimes does (kernel-findings §6), so
tests can prove that the retry path runs.

An unset variable costs one dictionary lookup per point.
"""
from __future__ import annotations

import errno
import os
import signal

from ..errors import KernelError, OperationError

FAULT_ENV = "MIRRORMOUNT_FAULT"
NSFS_EINVAL_ENV = "MIRRORMOUNT_FORCE_NSFS_EINVAL"


class InjectedFault(OperationError):
    """Raised at a point named in MIRRORMOUNT_FAULT (without :kill)."""


def _points() -> dict[str, str]:
    """{point: "" | "kill" | "stop"} from the environment, read at each call so tests may
    change it."""
    spec = os.environ.get(FAULT_ENV) or ""
    out: dict[str, str] = {}
    for item in spec.split(","):
        point, _, how = item.strip().partition(":")
        if point:
            out[point] = how.strip()
    return out


def at(point: str) -> None:
    """Fail, die or pause here if MIRRORMOUNT_FAULT names this point."""
    points = _points()
    if point not in points:
        return
    if points[point] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if points[point] == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)    # returns once continued
        return
    raise InjectedFault(f"injected fault at {point} [{FAULT_ENV}]")


_nsfs_forced = 0


def nsfs_bind_fault() -> None:
    """Raise EINVAL for the first K mount-namespace nsfs binds (K from the environment)."""
    global _nsfs_forced
    try:
        limit = int(os.environ.get(NSFS_EINVAL_ENV) or 0)
    except ValueError:
        limit = 0
    if _nsfs_forced < limit:
        _nsfs_forced += 1
        # The same error the kernel's loop check gives: KernelError from mount(2).
        raise KernelError(errno.EINVAL, "mount", where=f"(forced by {NSFS_EINVAL_ENV})")

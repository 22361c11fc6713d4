"""`mirrormount mount --mkdir`: TARGET's missing directories, made inside the guest's root.

Planning (Guests.plan_mount) finds the longest prefix of TARGET that exists, resolved the way
the mount itself resolves TARGET: through the mirror with the mirror as root, or, for
--guest-only, inside the guest's mount namespace with its / as root (openat2 RESOLVE_IN_ROOT
either way: '..' and a guest's symlinks, absolute ones included, stay inside the guest). The
rest of TARGET must be plain names: they are what ``make`` creates, like `mkdir -p` with mode
0755, one mkdirat(2) at a time, each relative to an fd for its parent. No path string is
walked again after planning: the parent is reopened with RESOLVE_NO_SYMLINKS, each new
directory is entered with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so a symlink put in the way
meanwhile is refused (ELOOP), never followed.

A name that exists as a symlink leading nowhere inside the guest (``esc -> /etc/x`` where the
guest has no /etc/x) is refused, exit 2: `mkdir -p` would fail on it too, and following it
out of the guest's root is what RESOLVE_IN_ROOT exists to prevent.

Nothing is left on failure: ``make`` removes what it made when it fails midway, and the
executor's undo of the step (``remove``) takes the directories away again, deepest first,
when a later step of the mount fails or a stop signal arrives. rmdir only removes an empty
directory: one that the guest filled meanwhile stays.

Privilege: whatever the guest's filesystem asks to create a directory (root here).
"""
from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import Sequence

from ..errors import UsageError
from ..kernel import syscalls as sc

MODE = 0o755
_DIR = sc.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_FIXED = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS
_STEP = sc.RESOLVE_BENEATH | sc.RESOLVE_NO_SYMLINKS | sc.RESOLVE_NO_MAGICLINKS


def components(target: str) -> list[str]:
    """TARGET's components as the kernel walks them ('.' and '..' kept, empty ones not)."""
    return [p for p in target.split("/") if p]


def missing_names(parts: Sequence[str], where: str) -> tuple[str, ...]:
    """The components to create. '.' or '..' after a missing directory: refused (exit 2),
    since what they name depends on directories that do not exist yet."""
    for p in parts:
        if p in (".", ".."):
            raise UsageError(f"mount --mkdir: target {where}: '{p}' after a directory that "
                             "does not exist; nothing was changed")
    return tuple(parts)


def join(parent: str, names: Sequence[str]) -> str:
    """The guest path of parent/names (parent resolved, names plain)."""
    return posixpath.join(parent, *names) if names else parent


def make(root: int, parent: str, names: Sequence[str], where: str) -> list[str]:
    """Create ``names`` one below the other under ``parent`` (a guest path resolved when
    planning), with ``root`` (an fd) as the guest's /. Returns the guest paths made, in
    order; a directory that appeared meanwhile is used, not counted as made. On any failure,
    what was made is removed before the exception goes on."""
    made: list[str] = []
    try:
        fd = sc.openat2(root, parent.lstrip("/") or ".", _DIR, _FIXED)
        old = os.umask(0o022)            # mode 0755 exactly, as mkdir -p gives by default
        try:
            path = parent
            for name in names:
                path = posixpath.join(path, name)
                try:
                    os.mkdir(name, MODE, dir_fd=fd)
                    made.append(path)
                except FileExistsError:
                    pass                   # a directory is fine; a symlink is refused below
                try:
                    nxt = sc.openat2(fd, name, _DIR, _STEP)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise UsageError(f"mount --mkdir: target {where}: {path} is a symlink "
                                         "that leads to no directory inside the guest; "
                                         "nothing was changed") from None
                    if exc.errno == errno.ENOTDIR:
                        raise UsageError(f"mount --mkdir: target {where}: {path} is not a "
                                         "directory; nothing was changed") from None
                    raise
                os.close(fd)
                fd = nxt
        finally:
            os.umask(old)
            os.close(fd)
    except BaseException:
        remove(root, made)
        raise
    return made


def remove(root: int, made: Sequence[str]) -> None:
    """Undo of ``make``: rmdir each path, deepest first, each through an fd for its parent
    opened without following any symlink. Best effort: a directory that is gone, no longer
    empty, or no longer reachable without a symlink is left as it is."""
    for path in reversed(made):
        parent, name = posixpath.split(path)
        try:
            fd = sc.openat2(root, parent.lstrip("/") or ".", _DIR, _FIXED)
        except OSError:
            continue
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            pass
        finally:
            os.close(fd)


# ----------------------------------------------------------------------------- both sides
def _open_root(path: str) -> int:
    return os.open(path, _DIR)


def make_in_mirror(mirror: str, parent: str, names: Sequence[str], where: str) -> list[str]:
    """``make`` with the host's mirror BASE/NAME as the guest's root."""
    root = _open_root(mirror)
    try:
        return make(root, parent, names, where)
    finally:
        os.close(root)


def remove_in_mirror(mirror: str, made: Sequence[str]) -> None:
    root = _open_root(mirror)
    try:
        remove(root, made)
    finally:
        os.close(root)


def _make_here(parent: str, names: Sequence[str], where: str) -> list[str]:
    return make_in_mirror("/", parent, names, where)


def _remove_here(made: Sequence[str]) -> None:
    remove_in_mirror("/", made)


def make_in_guest(holder: str, parent: str, names: Sequence[str], where: str) -> list[str]:
    """``make`` in a child inside the guest's mount namespace (held at ``holder``), its / as
    root: for --guest-only, whose TARGET is what the guest sees, not the mirror."""
    from .nsexec import in_namespaces
    return in_namespaces({"mnt": holder}, _make_here, parent, names, where)


def remove_in_guest(holder: str, made: Sequence[str]) -> None:
    from .nsexec import in_namespaces
    in_namespaces({"mnt": holder}, _remove_here, made)

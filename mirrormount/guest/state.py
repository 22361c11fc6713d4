"""Guest records under STATE/NAME/guest.json and the lock that serializes changes.

A record is written atomically (temp file in the same directory, fsync, rename), so a reader
never sees half a record. The lock is an flock on the STATE directory itself: no lock file is
left anywhere a guest could see it.

Privilege: root for writing; reading needs read access to STATE.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..kernel import signals
from .model import Layout

RECORD_VERSION = 1


@dataclass(frozen=True)
class GuestRecord:
    name: str
    mirror: str
    rootfs: str
    kinds: tuple[str, ...]             # namespaces held under STATE/NAME/ns
    propagation: str = "mirror"
    hostname: str | None = None
    created: float = 0.0
    guest_only: tuple[str, ...] = field(default_factory=tuple)  # guest paths (busy issue)
    version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        d["guest_only"] = list(self.guest_only)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GuestRecord:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["kinds"] = tuple(known.get("kinds", ("mnt",)))
        known["guest_only"] = tuple(known.get("guest_only", ()))
        return cls(**known)


def write_atomic(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load(layout: Layout, name: str) -> GuestRecord | None:
    try:
        with open(layout.record(name), encoding="utf-8") as f:
            return GuestRecord.from_json(json.load(f))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def guest_names(layout: Layout) -> list[str]:
    """Every guest that has any trace: a state directory or a mirror directory."""
    names: set[str] = set()
    for top in (layout.state, layout.base):
        try:
            with os.scandir(top) as it:
                names.update(e.name for e in it if e.is_dir(follow_symlinks=False)
                             and not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass
    return sorted(names)


class StateLock:
    """Exclusive flock on STATE. STATE may become a tmpfs while we hold the lock on the
    directory beneath it, so after locking we re-open the path and, if it now names another
    inode, lock that too (the first creator holds both until done)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fds: list[int] = []

    def __enter__(self) -> StateLock:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock_current()
        return self

    def _lock_current(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # Another create may hold it for a while: Ctrl-C may end the wait even inside
                # a deferred section (nothing is changed before we hold the lock).
                with signals.interruptible():
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            st, now = os.fstat(fd), os.stat(self.path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                self.fds.append(fd)
                return
            os.close(fd)  # STATE was mounted over while we waited: lock the new one

    def refresh(self) -> None:
        """Call after mounting over STATE: lock the new directory as well."""
        st = os.stat(self.path)
        if self.fds:
            held = os.fstat(self.fds[-1])
            if (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino):
                return
        self._lock_current()

    def __exit__(self, *exc: object) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds.clear()

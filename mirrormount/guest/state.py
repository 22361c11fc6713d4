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
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

from ..record import asdict, field, fields, record
from ..kernel import signals
from .model import Layout

RECORD_VERSION = 1


@record(frozen=True)
class GuestRecord:
    """A guest's record under STATE/NAME (atomic JSON): what create made, for the calls
    after it."""

    name: str
    mirror: str
    rootfs: str
    kinds: tuple[str, ...]             # namespaces held under STATE/NAME/ns
    propagation: str = "mirror"
    hostname: str | None = None
    created: float = 0.0
    guest_only: tuple[str, ...] = field(default_factory=tuple)  # guest paths (busy issue)
    # A guest-only mount in progress (plan.plan_mount writes it before mounting): its guest
    # path and the mount ids found there before, in the guest and in the mirror. A kill
    # midway leaves it behind; the next `mount --guest-only` then detaches exactly what was
    # stacked above those mounts (guestonly.recover) before mounting again.
    pending: dict[str, Any] | None = None
    version: int = RECORD_VERSION
    # What every process mirrormount starts in the guest runs under (model.CONFINE_MODES,
    # kernel/confine.py) and the capabilities dropped from their bounding set. A record
    # written before confinement existed has neither: its guest's init runs unconfined, so
    # it reads as "none", which is the truth.
    confine: str = "none"
    drop_caps: tuple[str, ...] = field(default_factory=tuple)
    # The lifecycle (guest/lifecycle.py). init: argv of the guest's PID 1 (empty: init-less,
    # with mirrormount's reaper as PID 1 when it has a pid namespace); stop_signal: what
    # `stop` sends it (None: SIGTERM); start/shutdown: shell commands an init-less guest's
    # `start`/`stop` run inside it; joins: {kind: guest} whose namespace this one shares
    # (its pin under ns/ is a bind of the same namespace, so it outlives that guest's).
    init: tuple[str, ...] = field(default_factory=tuple)
    stop_signal: str | None = None
    start: tuple[str, ...] = field(default_factory=tuple)
    shutdown: tuple[str, ...] = field(default_factory=tuple)
    joins: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"] = list(self.kinds)
        d["guest_only"] = list(self.guest_only)
        d["drop_caps"] = list(self.drop_caps)
        for key in ("init", "start", "shutdown"):
            d[key] = list(getattr(self, key))
        d["joins"] = dict(self.joins)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GuestRecord:
        known = {k: d[k] for k in (f.name for f in fields(cls)) if k in d}
        known["kinds"] = tuple(known.get("kinds", ("mnt",)))
        known["guest_only"] = tuple(known.get("guest_only", ()))
        known["drop_caps"] = tuple(known.get("drop_caps", ()))
        for key in ("init", "start", "shutdown"):
            known[key] = tuple(known.get(key) or ())
        known["joins"] = dict(known.get("joins") or {})
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
    """Every guest of this STATE: a directory in STATE (with a record, or a create under way
    or killed). A mirror in BASE alone is not a guest of this STATE (owner.py)."""
    try:
        with os.scandir(layout.state) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False)
                          and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def joins_index(layout: Layout) -> dict[str, list[tuple[str, str]]]:
    """{guest: [(joiner, kind)]} for every guest whose namespaces others joined (create
    --join KIND=guest), sorted; each record of this STATE is read once."""
    out: dict[str, list[tuple[str, str]]] = {}
    for other in guest_names(layout):
        rec = load(layout, other)
        if rec is not None:
            for kind, g in rec.joins.items():
                out.setdefault(g, []).append((other, kind))
    return {g: sorted(v) for g, v in out.items()}


def joined_by(layout: Layout, name: str) -> list[tuple[str, str]]:
    """The guests that share a namespace of `name`: [(guest, kind)], sorted."""
    return joins_index(layout).get(name, [])


class StateLock:
    """flock on STATE: exclusive to change anything, shared for a look that must see no
    change half made. STATE may become a tmpfs while we hold the lock on the
    directory beneath it (the first create, which locks the tmpfs's root before attaching
    it: hold()), and may go away while we wait (the last destroy unmounts it), so after
    locking we re-open the path and, if it now names another inode, lock that instead."""

    def __init__(self, path: str, create: bool = False, shared: bool = False) -> None:
        self.path = path
        self.create = create     # only create makes STATE: a mistyped --state stays absent
        # shared: for a look that changes nothing but must not see a change half made
        self.mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.fds: list[int] = []

    def __enter__(self) -> StateLock:
        if self.create:
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
                    fcntl.flock(fd, self.mode)
            except BaseException:
                os.close(fd)
                raise
            st, now = os.fstat(fd), os.stat(self.path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                self.fds.append(fd)
                return
            os.close(fd)  # STATE was mounted over, or unmounted, while we waited

    def hold(self, fd: int) -> None:
        """Lock, and keep until exit, the root of a tmpfs that is about to be mounted over
        STATE and is reachable by no one yet (apply.mount_tmpfs): a caller arriving once it
        is attached finds it locked. Takes ownership of fd."""
        try:
            # Nobody else can reach the directory: waiting here would be a bug, not a race.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        self.fds.append(fd)

    def refresh(self) -> None:
        """After STATE was mounted over by other means than hold(): lock the new directory
        as well. Not race-free (someone may lock it first); the executor uses hold()."""
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

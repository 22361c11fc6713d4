"""start, stop and ps: the guest lifecycle's public face (beside guests.Guests).

Facts come from /proc and STATE (gather), plans from lifeplan.py, and every change is run by
the one executor (apply.py) under the StateLock, so start and stop have --dry-run, rollback
(start) and fault points like every other verb; a stop cut short is completed by the next.

Privilege: root.
"""
from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING

from ..record import field, record
from ..errors import OperationError
from ..kernel.procfs import ns_inode, parse_nspid, parse_status, read_text
from .guests import Guests, require_root
from .lifeplan import LifeFacts, plan_start, plan_stop
from .lifework import guest_pids, is_reaper
from .state import StateLock

if TYPE_CHECKING:
    from .ops import Op


def gather(g: Guests, name: str) -> LifeFacts:
    """The guest's record, which pins hold a namespace, its live PID 1 (its init or the
    reaper: pid 1 in its innermost pid namespace, that namespace being the pinned one) and
    the other processes in its mount namespace."""
    rec = g.record(name)
    namespaces, _ = g._held(rec)
    held = frozenset(namespaces)
    pids = guest_pids(g.layout.ns_file(name, "mnt")) if "mnt" in held else []
    pid_ino = ns_inode(g.layout.ns_file(name, "pid")) if "pid" in held else None
    pid1 = 0
    for pid in pids:
        status = read_text(f"/proc/{pid}/status") or ""
        if pid_ino and parse_nspid(status)[-1:] == (1,) and \
                ns_inode(f"/proc/{pid}/ns/pid") == pid_ino and \
                parse_status(status).get("State", "").split()[:1] != ["Z"]:
            pid1 = pid
            break
    reaper = bool(pid1) and is_reaper(pid1)
    inside = tuple(p for p in pids if p != pid1 and not is_reaper(p))
    procs = g.cgroup_procs(rec)          # the guest's own cgroup, when it has one
    return LifeFacts(rec, held, pid1, reaper, inside,
                     cgroup=procs.rsplit("/", 1)[0] if procs else "")


def plan(g: Guests, verb: str, name: str, timeout: float | None = None,
         sig: str | None = None) -> list[Op]:
    f = gather(g, name)
    if verb == "start":
        return plan_start(f, g.layout)
    return plan_stop(f, g.layout, timeout, sig)


@record(frozen=True)
class LifeResult:
    name: str
    verb: str
    steps: int                       # 0: nothing to do (running already, stopped already)
    warnings: list[str] = field(default_factory=list)
    pid1: int | None = None          # start: PID 1's host pid

    def to_json(self) -> dict:
        return {"name": self.name, "verb": self.verb, "steps": self.steps,
                "warnings": self.warnings, "pid1": self.pid1}


def run(g: Guests, verb: str, name: str, timeout: float | None = None,
        sig: str | None = None) -> LifeResult:
    """Plan and carry out start or stop under the StateLock. UsageError (exit 2) for bad
    input or a guest that cannot do it, OperationError (1) when a step fails."""
    require_root(verb)
    from .apply import Executor
    g.record(name)                 # no such guest: said before STATE is opened
    with StateLock(g.layout.state) as lock:
        ops = plan(g, verb, name, timeout, sig)
        outcome = Executor(lock=lock).run(ops)
    rec = g.record(name)
    if verb == "start" and rec.init and outcome.reaper_pid and \
            ended_within(outcome.reaper_pid, INIT_GRACE):
        # Started, and gone at once (`--init 'sh -c "exit 3"'`, a missing library): the
        # guest is stopped, so `start` did not do what it says. Its status is not ours to
        # read (PID 1 of a pid namespace is reaped outside it).
        raise OperationError(f"start {name}: its init ({shlex.join(rec.init)}) ended at "
                             f"once; the guest is stopped")
    return LifeResult(name, verb, len(ops), list(outcome.warnings), outcome.reaper_pid)


# How long start watches a fresh init before it says "started" (seconds).
INIT_GRACE = 0.2


def ended_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` ends within `seconds` (a pidfd polled, pidfd_open(2): no race
    with pid reuse). True when it is gone already."""
    import select
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(int(seconds * 1000)))
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ ps
@record(frozen=True)
class ProcessRow:
    pid: int                         # in the host's pid namespace
    guest_pid: int                   # in the guest's innermost pid namespace
    nspid: tuple[int, ...]           # one per level, outermost first (NSpid, proc(5))
    user: str
    cmd: str
    cgroup: str

    def to_json(self) -> dict:
        return {"pid": self.pid, "guest_pid": self.guest_pid, "nspid": list(self.nspid),
                "user": self.user, "cmd": self.cmd, "cgroup": self.cgroup}

    def columns(self) -> dict[str, str]:
        """The table's row, by upper-case column name."""
        return {"PID": str(self.pid), "GUEST_PID": str(self.guest_pid), "USER": self.user,
                "CMD": self.cmd, "CGROUP": self.cgroup}


def _cgroup(pid: int) -> str:
    """The v2 path ("0::/PATH") from /proc/PID/cgroup, else every line joined (v1)."""
    text = read_text(f"/proc/{pid}/cgroup") or ""
    lines = [ln for ln in text.splitlines() if ln]
    for ln in lines:
        if ln.startswith("0::"):
            return ln[3:]
    return ";".join(lines)


def ps(g: Guests, name: str) -> list[ProcessRow]:
    """Every process in the guest's mount namespace: host pid, NSpid (/proc/PID/status),
    user (psutil: the name from the host's passwd, else the uid) and command (psutil),
    cgroup (/proc/PID/cgroup). A process that ends while it is read is left out."""
    require_root("ps")
    import psutil
    rec = g.record(name)
    pin = g.layout.ns_file(rec.name, "mnt")
    rows = []
    for pid in guest_pids(pin) if os.path.exists(pin) else []:
        status = read_text(f"/proc/{pid}/status")
        if status is None:
            continue
        nspid = parse_nspid(status) or (pid,)
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                argv = p.cmdline()
                user = p.username()
                cmd = " ".join(argv) if argv else f"[{p.name()}]"
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:     # not as root (ps needs root: require_root)
            user, cmd = "?", "?"
        rows.append(ProcessRow(pid, nspid[-1], nspid, user, cmd.rstrip(), _cgroup(pid)))
    return rows

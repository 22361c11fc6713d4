"""The kernel work of `start` and `stop` (lifeplan.py's operations), called by the one
executor (apply.py): a fresh pid namespace with its init, commands run inside a guest, and
the two ways of ending a guest's processes.

Privilege: root.
"""
from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable

from ..errors import OperationError
from ..kernel import child, confine, signals
from ..kernel import syscalls as sc
from ..kernel.child import Child
from ..kernel.procfs import ns_inode, parse_nspid, parse_status, pids_by_mnt_ns, read_text
from ..kernel.procfs import wait_gone
from .lifeplan import RunInGuest, SignalInit, StartInit, StopAll
from .model import cap_numbers
from .nsexec import enter, exec_in, open_ns_files
from .nursery import (REAPER_COMM, _reaper, bind_ns_file, build_and_hold, init_env,
                      kill_and_wait, preload, release_ns_file)

F_SETPIPE_SZ = 1031          # fcntl(2): a command's output waits in the pipe until it ends
PIPE_SIZE = 1 << 20


def is_reaper(pid: int) -> bool:
    """mirrormount's own PID 1 of a guest pid namespace (nursery._reaper)."""
    status = read_text(f"/proc/{pid}/status") or ""
    return parse_status(status).get("Name") == REAPER_COMM and \
        parse_nspid(status)[-1:] == (1,)


def guest_pids(mnt_pin: str) -> list[int]:
    """Every process in the guest's mount namespace (one pass over /proc)."""
    ino = ns_inode(mnt_pin)
    return sorted(pids_by_mnt_ns().get(ino, [])) if ino else []


# ------------------------------------------------------------------------------ start
def _start_child(op: StartInit, commit_r: int, prepared: confine.Prepared | None) -> None:
    """In a forked child: enter every namespace of the guest but pid (mnt last), unshare a
    pid namespace and fork its PID 1 (nursery._reaper), which mounts the guest's own /proc
    and, once committed, execs the init."""
    fds = open_ns_files(dict(op.pins))         # the pins, in the host's view
    # The host's /proc, for PID 1 to read its mount table through: the guest's /proc
    # belongs to the pid namespace that ended (nursery.own_proc_only).
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    preload(False, bool(op.init))      # imports, before the guest's root is ours
    if op.cgroup:
        # While we still see the host's hierarchy: PID 1 and all it starts belong there.
        from . import cgroup
        cgroup.join(op.cgroup)
    enter(fds)
    sc.unshare(sc.CLONE_NEWPID)
    pid1 = Child.start(_reaper, commit_r, prepared, op.name, op.init, proc_fd)
    os.close(proc_fd)
    pid1.ready()        # /proc is in place, or PID 1's exception, raised here
    pid1.release()
    child.report_ready([str(pid1.pid)])


def start_init(op: StartInit, checkpoint: Callable[[int], None]) -> int:
    """Carry out StartInit; returns PID 1's host pid. checkpoint(1): PID 1 exists, the pin
    is the old one; checkpoint(2): the pin holds the new namespace, PID 1 not yet told to go
    on; checkpoint(3): committed."""
    prepared = confine.prepare(op.confine == "mirror", cap_numbers(op.drop_caps))
    commit_r, commit_w = os.pipe2(os.O_CLOEXEC)
    pid1 = [0]

    def body() -> None:
        os.close(commit_w)
        _start_child(op, commit_r, prepared)

    def hold(pid: int, words: list[str]) -> int:
        pid1[0] = int(words[0])
        checkpoint(1)
        # The old namespace (its init gone) is let go; the pin then holds the new one.
        release_ns_file(op.pid_pin)
        bind_ns_file(f"/proc/{pid1[0]}/ns/pid", op.pid_pin)
        checkpoint(2)
        return pid1[0]

    def undo() -> None:
        if pid1[0]:
            kill_and_wait(pid1[0])    # the pin then holds an ended namespace: "stopped"
            pid1[0] = 0

    try:
        pid, _ = build_and_hold(body, hold, undo)
        os.write(commit_w, b"c")
        checkpoint(3)
    except BaseException:
        undo()
        raise
    finally:
        os.close(commit_r)
        os.close(commit_w)
    return pid


# ------------------------------------------------------------------------------ commands
def run_in_guest(op: RunInGuest) -> str | None:
    """`/bin/sh -c COMMAND` in the guest, waited for; stdin is /dev/null and its output
    comes back through a pipe (1 MiB) that is read once the shell has exited, so a daemon
    it leaves behind holds nothing of ours. Returns a warning for a failure the plan goes
    on from (op.must False); raises OperationError otherwise."""
    prepared = confine.prepare(op.confine == "mirror", cap_numbers(op.drop_caps))
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass                     # the default 64 KiB then
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    try:
        for fd, src in ((0, null), (1, w), (2, w)):
            os.dup2(src, fd)       # inherited by the command (dup2 clears close-on-exec)
        env = {**init_env(op.name), "TERM": os.environ.get("TERM", "dumb")}
        # The executor's step holds the stop signals; the command (and any daemon it
        # leaves) must not inherit them blocked, and a Ctrl-C meanwhile is passed on to it.
        with confine.armed(prepared), signals.interruptible():
            status = exec_in(dict(op.pins), ["/bin/sh", "-c", op.command], env=env,
                             cgroup_procs=f"{op.cgroup}/cgroup.procs" if op.cgroup else None)
    finally:
        for fd, old in zip((0, 1, 2), saved):
            os.dup2(old, fd)
            os.close(old)
        os.close(null)
        os.close(w)
    os.set_blocking(r, False)
    out = b""
    try:
        while chunk := os.read(r, 1 << 16):
            out += chunk
    except BlockingIOError:
        pass                     # a daemon still holds the write end: what is there is all
    finally:
        os.close(r)
    if out:
        os.write(2, out)
    if status == 0:
        return None
    what = f"{op.name}: `{op.command}` exited with status {status}"
    if op.must:
        raise OperationError(what)
    return what + "; going on"


# ------------------------------------------------------------------------------ stop
def _alive(pids: list[int]) -> list[int]:
    return wait_gone(pids, 0.0)


def end_processes(mnt_pin: str, timeout: float, first: int | None = None,
                  sig: int = signal.SIGTERM, spare_reaper: bool = True) -> list[int]:
    """Send `sig` (to `first` only, when given: the init; else to every process of the
    guest but the reaper), wait up to `timeout` seconds for them all to go, then KILL what
    is left (more rounds while new ones appear). Returns the pids that had to be killed.
    The waits are safe points: a Ctrl-C ends the wait (a stop is idempotent)."""
    def targets() -> list[int]:
        return [p for p in guest_pids(mnt_pin) if not (spare_reaper and is_reaper(p))]

    pids = [first] if first else targets()
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        left = _alive(targets())
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        signals.safe_point()
    killed: list[int] = []
    for _ in range(20):
        left = _alive(targets())
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if pid not in killed:
                killed.append(pid)
        wait_gone(left, 5.0)
    if _alive(targets()):
        raise OperationError(f"stop: processes of the guest are still there after KILL "
                             f"({' '.join(map(str, _alive(targets())[:10]))})")
    return killed


def signal_init(op: SignalInit) -> str | None:
    from .model import signal_name
    killed = end_processes(op.mnt_pin, op.timeout, first=op.init_pid, sig=op.signal,
                           spare_reaper=False)
    if killed:
        return (f"{op.name}: init did not end the guest within {op.timeout:g}s of "
                f"{signal_name(op.signal)}; killed {len(killed)} process(es) (pids "
                f"{' '.join(map(str, killed[:10]))})")
    return None


def stop_all(op: StopAll) -> str | None:
    killed = end_processes(op.mnt_pin, op.timeout)
    if killed:
        return (f"{op.name}: {len(killed)} process(es) still there {op.timeout:g}s after "
                f"TERM were killed (pids {' '.join(map(str, killed[:10]))})")
    return None

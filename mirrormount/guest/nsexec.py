"""Running code in a guest's namespaces: in a forked, single-threaded child (kernel/child.py).

The CLI process never calls setns/unshare itself: setns(CLONE_NEWNS) needs a single-threaded
caller with an unshared fs_struct, and a process that moved would see the wrong /proc and paths
afterwards. A child does the work and its result, or its exception (a KernelError keeps its
errno, op and paths), comes back through kernel.child.

Privilege: root.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from ..kernel import child, confine, signals
from ..kernel import syscalls as sc
from ..kernel.child import ChildFailed
from .model import KIND, SETNS_ORDER

T = TypeVar("T")

__all__ = ["ChildFailed", "enter", "exec_in", "in_namespaces", "open_ns_files",
           "read_own_mountinfo"]


def read_own_mountinfo(proc_fd: int) -> str:
    """Our mountinfo, from a child that setns()'d into another mount namespace.

    /proc there may belong to another pid namespace, where we have no "self": read through
    the host's /proc, opened (as proc_fd) before any setns. "self" is still us, and mountinfo
    shows our namespace (now the guest's) relative to our root (now the guest's)."""
    fd = os.open("self/mountinfo", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def open_ns_files(ns_files: Mapping[str, str]) -> dict[str, int]:
    return {kind: os.open(path, os.O_RDONLY | os.O_CLOEXEC) for kind, path in ns_files.items()}


def enter(ns_fds: Mapping[str, int]) -> None:
    """setns into each namespace (mnt last). For pid, only children made after this are in it."""
    for kind in SETNS_ORDER:
        if kind in ns_fds:
            sc.setns(ns_fds[kind], KIND[kind].clone_flag, kind)
            os.close(ns_fds[kind])


def in_namespaces(ns_files: Mapping[str, str], fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) in a child that entered the given namespaces (no fork for pid)."""

    def body() -> T:
        enter(open_ns_files(ns_files))
        return fn(*args)

    return child.run(body)


def _exec_child(fds: dict[str, int], argv: list[str], env: Mapping[str, str] | None,
                cwd: str, mask: Collection[int], parent: int) -> None:
    """In the child of exec_in: enter the namespaces and exec argv. Returns only by raising
    (the exception reaches the parent); a successful exec closes the channel (close-on-exec),
    which the parent sees as an outcome of None.

    Signals: the forwarded ones and SIGCHLD arrive here blocked (exec_in blocked them before
    the fork); the command gets default dispositions and `mask`, the CLI's own, as it
    execs. The process that waits for the command (the CLI, or our own waiting parent below)
    forwards what it receives, and the command dies with it (signals.die_with_parent)."""
    signals.die_with_parent(parent)
    if "pid" in fds:
        # setns(pid) only applies to children. Enter it alone, fork, and let only the
        # command enter the rest: this waiting parent never shows up in the guest. The
        # command (or its failure, through the inherited channel) reports; we only wait,
        # passing on what the CLI forwards to us, and exit with the command's status.
        sc.setns(fds.pop("pid"), KIND["pid"].clone_flag, "pid")
        sys.stdout.flush()
        sys.stderr.flush()
        inner = os.fork()
        if inner:
            child.close_channel()
            # Ctrl-Z stops the command and the CLI (the terminal's whole group); we need not.
            signal.signal(signal.SIGTSTP, signal.SIG_IGN)
            os._exit(signals.exit_status(signals.forward_until_exit(inner)))
        # Our parent lives outside the pid namespace we are now in: getppid() says 0.
        signals.die_with_parent(0)
    enter(fds)
    os.chdir(cwd)
    signals.reset_for_exec(mask)
    confine.enforce_armed()     # the guest's seccomp filter and dropped capabilities, if any
    os.execvpe(argv[0], argv, dict(env if env is not None else os.environ))


def exec_in(ns_files: Mapping[str, str], argv: list[str], env: Mapping[str, str] | None = None,
            cwd: str = "/") -> int:
    """Run argv in the namespaces and return its exit status (128+N when killed by signal N;
    127 when the command, or anything on the way to it, was not found; 126 for any other
    failure before the exec, reported on stderr).

    Signals (kernel/signals.py): SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
    the CLI are passed on to the command, and the CLI goes on waiting for it, so it exits with
    the command's status. They are blocked from before the fork, so none is lost while the
    child starts. Ctrl-C at a terminal already reaches the command (it is in our process
    group): that one is not passed on a second time. If the CLI is killed (SIGKILL), the
    command is killed too.
    """
    fds = open_ns_files(ns_files)  # open in the host's view, before anything moves
    with signals.held((*signals.FORWARDED, signal.SIGCHLD)) as mask:
        try:
            proc = child.Child.start(_exec_child, fds, argv, env, cwd, mask, os.getpid(),
                                     execs=True)
        finally:
            for fd in fds.values():
                os.close(fd)
        try:
            # None: the exec happened (the channel closed on exec); ("err", exc): it did not.
            outcome = proc.outcome(reap=False)
            status = proc.wait(forward=signals.FORWARDED)
        finally:
            proc.close()      # only if something failed here: kill and reap the command
        # One that came after the command ended had nobody to go to; we exit with its
        # status now, not by a late SIGUSR1's default action or a "terminated".
        signals.drop_pending((*signals.FORWARDED, signal.SIGCHLD))
    if outcome is None:
        return signals.exit_status(status)
    kind, value = outcome
    if kind == "err":
        print(f"mirrormount: exec {argv[0]}: {_reason(value)}", file=sys.stderr)
        return 127 if isinstance(value, OSError) and value.errno == errno.ENOENT else 126
    return 126  # pragma: no cover - _exec_child never returns normally


def _reason(exc: BaseException) -> str:
    """Why the command could not be started, in a few words (exec prints it like a shell)."""
    if isinstance(exc, OSError):
        op = getattr(exc, "op", None)
        text = exc.strerror or str(exc)
        return f"{op} {exc.filename or ''}: {text}".replace(" :", ":") if op else text
    return f"{type(exc).__name__}: {exc}"

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
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..kernel import child, confine
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
                cwd: str) -> None:
    """In the child of exec_in: enter the namespaces and exec argv. Returns only by raising
    (the exception reaches the parent); a successful exec closes the channel (close-on-exec),
    which the parent sees as an outcome of None."""
    if "pid" in fds:
        # setns(pid) only applies to children. Enter it alone, fork, and let only the
        # command enter the rest: this waiting parent never shows up in the guest. The
        # command (or its failure, through the inherited channel) reports; we only wait.
        sc.setns(fds.pop("pid"), KIND["pid"].clone_flag, "pid")
        sys.stdout.flush()
        sys.stderr.flush()
        inner = os.fork()
        if inner:
            child.close_channel()
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
                signal.signal(sig, signal.SIG_IGN)
            _, st = os.waitpid(inner, 0)
            os._exit(_exit_code(st))
    enter(fds)
    os.chdir(cwd)
    confine.enforce_armed()     # the guest's seccomp filter and dropped capabilities, if any
    os.execvpe(argv[0], argv, dict(env if env is not None else os.environ))


def exec_in(ns_files: Mapping[str, str], argv: list[str], env: Mapping[str, str] | None = None,
            cwd: str = "/") -> int:
    """Run argv in the namespaces and return its exit status (128+N when killed by signal N;
    127 when the command, or anything on the way to it, was not found; 126 for any other
    failure before the exec, reported on stderr).

    The CLI waits; Ctrl-C and friends go to the foreground process group, which the command is
    part of, so the waiting parent ignores them rather than dying before the command does.
    """
    fds = open_ns_files(ns_files)  # open in the host's view, before anything moves
    try:
        proc = child.Child.start(_exec_child, fds, argv, env, cwd)
    finally:
        for fd in fds.values():
            os.close(fd)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        # None: the exec happened (the channel closed on exec); ("err", exc): it did not.
        outcome = proc.outcome()
    finally:
        proc.close()
        for sig, handler in old.items():
            signal.signal(sig, handler)
    if outcome is None:
        return _exit_code(proc.wait())
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


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code

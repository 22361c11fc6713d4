"""Forked, single-threaded children that change namespaces and report back.

The CLI process never calls setns/unshare itself: setns(CLONE_NEWNS) needs a single-threaded
caller with an unshared fs_struct, and a process that moved would see the wrong /proc and paths
afterwards. A child does the work and sends its result, or its exception, through a pipe
(the pyroute2 netns pattern).

Privilege: root.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..kernel import syscalls as sc
from .model import KIND, SETNS_ORDER

T = TypeVar("T")



class ChildFailed(RuntimeError):
    """The child died without reporting (killed, or crashed before it could pickle)."""


def _send(fd: int, payload: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(payload)
    except Exception:  # noqa: BLE001 - an unpicklable result/exception still gets reported
        data = pickle.dumps(("err", RuntimeError(repr(payload[1]))))
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _recv(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def run_in_child(fn: Callable[..., T], *args: Any) -> T:
    """Run fn(*args) in a forked child; return its result or re-raise its exception here."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            result: tuple[str, Any] = ("ok", fn(*args))
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
            result = ("err", exc)
        try:
            _send(w, result)
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = _recv(r)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    if not data:
        raise ChildFailed("namespace helper died without reporting")
    status, value = pickle.loads(data)
    if status == "err":
        raise value
    return value


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

    return run_in_child(body)


def exec_in(ns_files: Mapping[str, str], argv: list[str], env: Mapping[str, str] | None = None,
            cwd: str = "/") -> int:
    """Run argv in the namespaces and return its exit status (128+N when killed by signal N).

    The CLI waits; Ctrl-C and friends go to the foreground process group, which the command is
    part of, so the waiting parent ignores them rather than dying before the command does.
    """
    fds = open_ns_files(ns_files)  # open in the host's view, before anything moves
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            if "pid" in fds:
                # setns(pid) only applies to children. Enter it alone, fork, and let only the
                # command enter the rest: this waiting parent never shows up in the guest.
                sc.setns(fds.pop("pid"), KIND["pid"].clone_flag, "pid")
                inner = os.fork()
                if inner:
                    os.close(w)
                    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
                        signal.signal(sig, signal.SIG_IGN)
                    _, st = os.waitpid(inner, 0)
                    os._exit(_exit_code(st))
            enter(fds)
            os.chdir(cwd)
            os.execvpe(argv[0], argv, dict(env if env is not None else os.environ))
        except OSError as exc:
            os.write(w, f"{argv[0]}: {exc.strerror}".encode())
            os._exit(127 if exc.errno == 2 else 126)
        except BaseException:  # noqa: BLE001
            os.write(w, traceback.format_exc().encode())
            os._exit(126)
    os.close(w)
    for fd in fds.values():
        os.close(fd)
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        _, st = os.waitpid(pid, 0)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    msg = _recv(r).decode(errors="replace")
    os.close(r)
    if msg:
        print(f"mirrormount: exec {msg}", file=sys.stderr)
    return _exit_code(st)


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code

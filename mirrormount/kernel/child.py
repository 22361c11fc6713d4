"""The one way mirrormount runs code in another process: fork a single-threaded child, run a
function there, and get its result, or its exception with errno and paths intact, back
through a pipe (the pyroute2 netns pattern).

Why a child at all: setns(CLONE_NEWNS) needs a single-threaded caller with an unshared
fs_struct, unshare(CLONE_NEWPID) applies to children only, and a process that moved into a
guest would see the wrong /proc and paths afterwards. The CLI process itself never moves.

Four uses, one mechanism:
- ``run(fn, *args, timeout=S)``: run and return the result (namespace queries, mounts inside
  a guest);
- ``Child.start(fn, *args)`` then ``ready()`` / ``release()`` / ``result()``: a child that
  builds namespaces, reports with ``report_ready(value)`` and waits there while the parent
  binds its /proc/PID/ns files, then exits when released (the nursery, guests);
- several ``Child.start`` at once, then ``result()`` each: parallel workers (the /proc scan);
- ``Child.start(fn, execs=True)`` where fn execs: the pipe is close-on-exec, so
  ``outcome(reap=False)`` is None after a successful exec, or the exception that stopped it;
  ``wait(forward=...)`` then waits, passing signals on (exec and enter).

Signals (kernel/signals.py): the fork happens with the stop signals held, and a helper child
ignores them before it runs anything: Ctrl-C reaches the CLI's whole process group, and it is
the CLI that decides (rolls back, kills or releases its children). A child started with
``execs=True`` keeps what its parent blocked for the command instead.

Messages are length-prefixed pickles. An exception that cannot be pickled (or unpickled: it
is round-tripped in the child before it is sent) arrives as a RuntimeError carrying its repr;
so does a result that cannot be.
A child that dies without reporting raises ChildFailed.

A child holds only its own channel: the parent's ends of other children's pipes, and the
channel of the process it was forked from (when a child starts a child), are closed in it, so
that no process keeps another's pipe open (a release would not reach the child it was meant
for, and a parent would never see EOF from a child that died). A child that forks a process
which must not hold the channel, such as a waiting parent whose own child reports or execs,
calls ``close_channel()`` there.

Privilege: none of its own; it runs whatever it is given.
"""
from __future__ import annotations

import errno
import os
import pickle
import select
import signal
import struct
import sys
import time
from collections.abc import Callable, Collection
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

from ..errors import OperationError
from . import signals


_HEADER = struct.Struct("!Q")

# In a child started by Child.start: (message fd, release fd). None in every other process.
_channel: tuple[int, int] | None = None
# This process's ends of the pipes of the children it started and has not closed yet.
_parent_fds: set[int] = set()


class ChildFailed(OperationError, RuntimeError):
    """The child died (killed, or crashed) without reporting a result. (An OperationError:
    the CLI reports it as a failed operation, exit 1.)"""


class ChildTimeout(TimeoutError):
    """The child did not answer in time; it was killed. errno ETIMEDOUT."""

    op = "helper process"   # for errors.describe


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _send(fd: int, kind: str, value: Any) -> None:
    try:
        data = pickle.dumps((kind, value))
        if kind == "err":
            # An exception whose __init__ takes other arguments than it passes to
            # Exception.__init__ pickles, but fails to unpickle: find out here.
            # (Results, plain data that may be large, are not checked twice.)
            pickle.loads(data)
    except Exception:  # noqa: BLE001 - an unpicklable result/exception is still reported
        data = pickle.dumps(("err", RuntimeError(f"{type(value).__name__} from a child "
                                                 f"process, not picklable: {value!r}")))
    _write_all(fd, _HEADER.pack(len(data)) + data)


def report_ready(value: Any = None) -> None:
    """In a child: tell the parent we are ready (with a value), and wait until released.
    Returns when the parent calls release() or dies."""
    if _channel is None:
        raise RuntimeError("report_ready called outside a child started by Child.start")
    msg_w, go_r = _channel
    _send(msg_w, "ready", value)
    os.read(go_r, 1)


def close_channel() -> None:
    """In a child: close this process's copy of the channel to the parent without reporting.

    For a process that forked and stays around while its own child reports or execs (a
    parent waiting on a command in a pid namespace): the parent then sees that child's
    message, or EOF once it has exec'd, instead of waiting for this process too. This
    process then reports nothing (neither report_ready nor fn's result)."""
    global _channel
    if _channel is not None:
        for fd in _channel:
            _close_quietly(fd)
        _channel = None


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class Child:
    """A forked child running fn(*args). See the module docstring for the protocols."""

    def __init__(self, pid: int, msg_r: int, go_w: int) -> None:
        self.pid = pid
        self._msg_r = msg_r
        self._go_w = go_w
        self._buf = b""
        self.status: int | None = None

    @classmethod
    def start(cls, fn: Callable[..., Any], *args: Any, cpu: int | None = None,
              execs: bool = False) -> Child:
        """Fork; the child (pinned to `cpu` when given) runs fn(*args) and reports.

        execs: fn will exec a command; the caller has blocked the signals meant for it, and
        they stay blocked (not ignored) in the child until fn hands them to the command."""
        global _channel
        msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        mask = signals.fork_guard()
        try:
            pid = os.fork()
        except BaseException:
            signals.restore(mask)
            raise
        if pid == 0:                                 # the child
            if execs:
                signals.restore(mask)
            else:
                signals.ignore_stops(mask)
            # Only our own channel: not the parent's ends (ours or other children's), not the
            # channel of the process we were forked from.
            for fd in (msg_r, go_w, *_parent_fds, *(_channel or ())):
                _close_quietly(fd)
            _parent_fds.clear()
            _channel = (msg_w, go_r)
            try:
                if cpu is not None:
                    os.sched_setaffinity(0, {cpu})
                result: tuple[str, Any] = ("ok", fn(*args))
            except BaseException as exc:  # noqa: BLE001 - everything goes to the parent
                result = ("err", exc)
            try:
                if _channel is not None:     # unless close_channel() gave it up
                    _send(msg_w, *result)
            finally:
                os._exit(0)
        os.close(msg_w)
        os.close(go_r)
        _parent_fds.update((msg_r, go_w))
        child = cls(pid, msg_r, go_w)
        try:
            signals.restore(mask)    # a stop held since before the fork is raised here
        except BaseException:
            # The caller never sees this child: it must not outlive us. (Inside an executor
            # step, stops stay held here: only read-only helpers can be cut off this way.)
            child.close()
            raise
        return child

    # ------------------------------------------------------------------ messages
    def _read_message(self, deadline: float | None) -> tuple[str, Any] | None:
        """The next message, or None at EOF (the child exited or exec'd without one)."""
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if len(self._buf) >= _HEADER.size + size:
                    data = self._buf[_HEADER.size:_HEADER.size + size]
                    self._buf = self._buf[_HEADER.size + size:]
                    try:
                        kind, value = pickle.loads(data)
                    except Exception as exc:  # noqa: BLE001 - say where it came from
                        raise RuntimeError(f"child {self.pid} sent a message that cannot be "
                                           f"unpickled here: {exc!r}") from exc
                    return kind, value
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._msg_r], [], [], left)[0]:
                    self.kill()
                    raise ChildTimeout(errno.ETIMEDOUT,
                                       f"child {self.pid} did not answer in time")
            chunk = os.read(self._msg_r, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def ready(self, timeout: float | None = None) -> Any:
        """Wait for report_ready(value) and return value; re-raise the child's exception."""
        msg = self._read_message(self._deadline(timeout))
        if msg is None:
            self.wait()
            raise ChildFailed(f"child {self.pid} died before it was ready")
        kind, value = msg
        if kind == "err":
            self.wait()
            raise value
        if kind != "ready":
            raise ChildFailed(f"child {self.pid} finished without reporting ready")
        return value

    def release(self) -> None:
        """Let a child waiting in report_ready() go on."""
        if self._go_w >= 0:
            _parent_fds.discard(self._go_w)
            os.close(self._go_w)
            self._go_w = -1

    def outcome(self, timeout: float | None = None, reap: bool = True
                ) -> tuple[str, Any] | None:
        """The child's final message (("ok", result) or ("err", exception)), or None when it
        exec'd or died without one. Releases it first, and reaps it unless `reap` is False
        (a child that exec'd a command: the caller waits for it with wait(forward=...))."""
        self.release()
        try:
            msg = self._read_message(self._deadline(timeout))
        finally:
            self._close_messages()
        if reap:
            self.wait()
        return msg

    def result(self, timeout: float | None = None) -> Any:
        """fn's return value; its exception is re-raised here unchanged."""
        msg = self.outcome(timeout)
        if msg is None:
            raise ChildFailed(f"child {self.pid} died without reporting "
                              f"(wait status {self.status})")
        kind, value = msg
        if kind == "err":
            raise value
        return value

    def wait(self, forward: Collection[int] = ()) -> int:
        """Reap the child; returns its wait status (see os.waitstatus_to_exitcode).

        forward: signals to pass on to it meanwhile; the caller has blocked them, and
        SIGCHLD, since before the fork (signals.forward_until_exit)."""
        if self.status is None:
            if forward:
                self.status = signals.forward_until_exit(self.pid, forward)
            else:
                _, self.status = os.waitpid(self.pid, 0)
        return self.status

    def kill(self) -> None:
        """SIGKILL and reap: nothing is left behind, not even a zombie."""
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    def close(self) -> None:
        """Release, kill if still running, and close the pipes (for error paths)."""
        self.release()
        self.kill()
        self._close_messages()

    def _close_messages(self) -> None:
        if self._msg_r >= 0:
            _parent_fds.discard(self._msg_r)
            os.close(self._msg_r)
            self._msg_r = -1


def run(fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
    """Run fn(*args) in a forked child and return its result, or re-raise its exception
    (an OSError keeps its errno, filename and filename2). With a timeout (seconds), a child
    that has not answered by then is killed and ChildTimeout (ETIMEDOUT) is raised."""
    child = Child.start(fn, *args)
    try:
        result: T = child.result(timeout)
        return result
    finally:
        child.close()

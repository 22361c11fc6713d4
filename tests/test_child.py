"""kernel/child.py: the one way mirrormount runs code in another process.

Unprivileged: the children only compute, sleep, exit, exec /bin/true, or make a read-only
statx. Every child is reaped by the end of its test (the session's leak check fails any
process left behind).
"""
from __future__ import annotations

import errno
import os
import pickle
import signal
import time

import pytest

from mirrormount.errors import KernelError, OperationError
from mirrormount.kernel import child
from mirrormount.kernel import syscalls as sc
from mirrormount.kernel.child import Child, ChildFailed, ChildTimeout


def _gone(pid: int) -> bool:
    """Reaped: not our child any more, and no /proc entry (not even a zombie)."""
    try:
        os.waitpid(pid, os.WNOHANG)
        return False
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")


# ------------------------------------------------------------------ run
def _add(a: int, b: int) -> tuple[int, int]:
    return a + b, os.getpid()


def test_run_returns_the_result_computed_in_a_child():
    total, pid = child.run(_add, 2, 3)
    assert total == 5 and pid != os.getpid()
    assert _gone(pid)


def _raise_kernel_error() -> None:
    raise KernelError(errno.EINVAL, "pivot_root", ".", "old", where="in guest c1")


def test_run_reraises_a_kernel_error_intact():
    with pytest.raises(KernelError) as info:
        child.run(_raise_kernel_error)
    exc = info.value
    assert (exc.errno, exc.op, exc.filename, exc.filename2, exc.where) == \
        (errno.EINVAL, "pivot_root", ".", "old", "in guest c1")
    assert exc.strerror == os.strerror(errno.EINVAL)


def _real_statx_error() -> None:
    sc.statx("/nonexistent/mirrormount-test")


def test_run_reraises_a_real_syscall_error_intact():
    with pytest.raises(FileNotFoundError) as info:
        child.run(_real_statx_error)
    exc = info.value
    assert isinstance(exc, KernelError)
    assert (exc.errno, exc.op, exc.filename, exc.filename2) == \
        (errno.ENOENT, "statx", "/nonexistent/mirrormount-test", None)


def _raise_plain_oserror() -> None:
    os.rmdir("/nonexistent/mirrormount-test")


def test_run_reraises_a_plain_oserror_intact():
    with pytest.raises(FileNotFoundError) as info:
        child.run(_raise_plain_oserror)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == "/nonexistent/mirrormount-test"


class Unpicklable(Exception):
    def __init__(self) -> None:
        super().__init__("has a lambda")
        self.fn = lambda: None


class NeedsTwoArgs(Exception):
    """Pickles fine, but cannot be rebuilt: pickle calls NeedsTwoArgs(*args) with one arg."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def _raise(exc_type):
    def fn():
        raise exc_type("x", "y") if exc_type is NeedsTwoArgs else exc_type()
    return fn


@pytest.mark.parametrize("exc_type", [Unpicklable, NeedsTwoArgs])
def test_an_exception_that_cannot_travel_arrives_as_runtime_error(exc_type):
    with pytest.raises(RuntimeError) as info:
        child.run(_raise(exc_type))
    assert exc_type.__name__ in str(info.value)


def _unpicklable_result():
    return lambda: None


def test_an_unpicklable_result_arrives_as_runtime_error():
    with pytest.raises(RuntimeError, match="not picklable"):
        child.run(_unpicklable_result)


def test_a_child_that_exits_without_reporting_raises_child_failed():
    with pytest.raises(ChildFailed) as info:
        child.run(os._exit, 7)
    assert isinstance(info.value, OperationError)   # the CLI reports it: exit 1
    assert "died without reporting" in str(info.value)


def _sleep_after_telling(path: str) -> None:
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)


def test_timeout_kills_and_reaps_the_child(tmp_path):
    where = str(tmp_path / "pid")
    t0 = time.monotonic()
    with pytest.raises(ChildTimeout) as info:
        child.run(_sleep_after_telling, where, timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert info.value.errno == errno.ETIMEDOUT
    assert isinstance(info.value, TimeoutError)
    pid = int(open(where).read())
    assert _gone(pid), "the timed-out child is still there (or a zombie)"


def test_child_timeout_survives_pickle():
    exc = pickle.loads(pickle.dumps(ChildTimeout(errno.ETIMEDOUT, "child 1 did not answer")))
    assert exc.errno == errno.ETIMEDOUT


def test_report_ready_outside_a_child_is_refused():
    with pytest.raises(RuntimeError):
        child.report_ready(1)


# ------------------------------------------------------------------ the ready protocol
def _ready_then_read(path: str) -> str:
    child.report_ready(("ready", os.getpid()))
    # runs only after release(): by then the parent has written the file
    with open(path) as f:
        return f.read()


def test_start_ready_release_result(tmp_path):
    path = tmp_path / "written-while-held"
    proc = Child.start(_ready_then_read, str(path))
    try:
        assert proc.ready(timeout=10) == ("ready", proc.pid)
        path.write_text("held")          # the child is waiting in report_ready
        proc.release()
        assert proc.result(timeout=10) == "held"
    finally:
        proc.close()
    assert _gone(proc.pid)


def _fail_before_ready() -> None:
    raise KernelError(errno.EPERM, "unshare")


def test_ready_reraises_the_childs_exception():
    proc = Child.start(_fail_before_ready)
    try:
        with pytest.raises(PermissionError) as info:
            proc.ready(timeout=10)
        assert isinstance(info.value, KernelError) and info.value.op == "unshare"
    finally:
        proc.close()
    assert _gone(proc.pid)


def test_ready_when_the_child_dies_first_raises_child_failed():
    proc = Child.start(os._exit, 1)
    try:
        with pytest.raises(ChildFailed):
            proc.ready(timeout=10)
    finally:
        proc.close()
    assert _gone(proc.pid)


def _pinned_cpu() -> set[int]:
    return os.sched_getaffinity(0)


def test_start_pins_the_child_to_a_cpu():
    cpu = max(os.sched_getaffinity(0))
    proc = Child.start(_pinned_cpu, cpu=cpu)
    try:
        assert proc.result(timeout=10) == {cpu}
    finally:
        proc.close()


def _ready_with(value: int) -> int:
    child.report_ready(value)
    return value * 10


def test_several_children_in_parallel_released_in_any_order():
    procs = [Child.start(_ready_with, i) for i in range(4)]
    try:
        assert [p.ready(timeout=10) for p in procs] == [0, 1, 2, 3]
        # Release one while the others still wait: it must go on at once. (A sibling that
        # held a copy of its release pipe would keep it waiting: result() would time out.)
        procs[2].release()
        assert procs[2].result(timeout=10) == 20
        assert [p.result(timeout=10) for p in reversed(procs) if p is not procs[2]] == \
            [30, 10, 0]
    finally:
        for p in procs:
            p.close()
    assert all(_gone(p.pid) for p in procs)


def _square(x: int) -> int:
    return x * x


def test_parallel_workers():
    procs = [Child.start(_square, i) for i in range(6)]
    try:
        assert [p.result(timeout=10) for p in procs] == [0, 1, 4, 9, 16, 25]
    finally:
        for p in procs:
            p.close()


# ------------------------------------------------------------------ nesting and exec
def _linger(path: str) -> None:
    child.report_ready()
    time.sleep(60)


def _start_grandchild_then_die(path: str) -> None:
    grand = Child.start(_linger, path)
    grand.ready()
    with open(path, "w") as f:
        f.write(str(grand.pid))
    os._exit(1)     # no report; the grandchild lives on


def test_a_grandchild_does_not_hold_its_grandparents_channel(tmp_path):
    """A child that dies without reporting is seen at once, even though the process it
    started lives on: a grandchild closes the channel it inherited."""
    where = str(tmp_path / "grandchild")
    proc = Child.start(_start_grandchild_then_die, where)
    try:
        with pytest.raises(ChildFailed):
            proc.result(timeout=10)      # without the fix: ChildTimeout after 10 s
    finally:
        proc.close()
        try:
            os.kill(int(open(where).read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _fork_and_let_the_inner_report() -> str:
    inner = os.fork()
    if inner:
        child.close_channel()            # the waiting parent gives up its copy
        _, status = os.waitpid(inner, 0)
        os._exit(os.waitstatus_to_exitcode(status))
    return f"from {os.getpid()}"        # the inner process reports through the channel


def test_close_channel_leaves_the_report_to_a_forked_process():
    proc = Child.start(_fork_and_let_the_inner_report)
    try:
        text = proc.result(timeout=10)
    finally:
        proc.close()
    assert text.startswith("from ") and text != f"from {proc.pid}"


def _exec(argv: list[str]) -> None:
    os.execv(argv[0], argv)


def test_exec_closes_the_channel_outcome_none():
    proc = Child.start(_exec, ["/bin/sh", "-c", "exit 5"])
    try:
        assert proc.outcome(timeout=10) is None
    finally:
        proc.close()
    assert os.waitstatus_to_exitcode(proc.wait()) == 5


def test_exec_failure_is_the_outcome():
    proc = Child.start(_exec, ["/nonexistent/mirrormount-test"])
    try:
        kind, exc = proc.outcome(timeout=10)
    finally:
        proc.close()
    assert kind == "err" and isinstance(exc, FileNotFoundError)


class Odd:
    """Pickles fine, but fails to unpickle (its reduce calls a function with a bad argument)."""

    def __reduce__(self):
        return (int, ("not a number",))


def _odd_result() -> Odd:
    return Odd()


def test_a_result_that_cannot_be_unpickled_arrives_as_runtime_error():
    with pytest.raises(RuntimeError, match="cannot be unpickled"):
        child.run(_odd_result)

"""kernel/signals.py and its users, unprivileged: the exit status of a stop, the one error
handler's answer to a stop or a closed stdout, critical sections, helper children's signal
state, passing signals on, and the entry point.

Real signals are sent only to small scripts run as separate processes (as nobody when the
tests run as root), or to a child forked here, never to pytest itself. The privileged half
(exec and enter in real guests, Ctrl-C inside create, EPIPE) is vm-tests/test_signals.py.
"""
from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.guest.guests import Guests
from mirrormount.kernel import child, signals
from mirrormount.kernel.removal import remove_tree

REPO = Path(__file__).resolve().parents[1]
AS_NOBODY = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "--inh-caps=-all", "--"] if os.geteuid() == 0 else [])


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize("status, code", [
    (0, 0), (7 << 8, 7), (127 << 8, 127),                       # exited
    (signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, 137),   # killed
    (signal.SIGQUIT | 0x80, 131),                               # killed, core dumped
])
def test_exit_status_is_what_a_shell_reports(status, code):
    assert signals.exit_status(status) == code


@pytest.mark.parametrize("sig, word, code", [(signal.SIGINT, "interrupted", 130),
                                             (signal.SIGTERM, "terminated", 143),
                                             (signal.SIGHUP, "hung up", 129)])
def test_stopped_says_one_word_and_exits_128_plus_n(sig, word, code):
    stop = signals.Stopped(sig)
    assert (str(stop), stop.exit_code) == (word, code)
    again = pickle.loads(pickle.dumps(stop))              # it may cross a child's channel
    assert (type(again), again.signum) == (signals.Stopped, sig)


def test_stopped_gets_past_except_exception_and_click():
    # Not an Exception: `except Exception` must not swallow a Ctrl-C. Not a
    # KeyboardInterrupt: typer would turn that into a silent exit 130 outside our handler.
    assert not issubclass(signals.Stopped, Exception)
    assert not issubclass(signals.Stopped, KeyboardInterrupt)


def test_only_the_first_stop_raises(monkeypatch):
    monkeypatch.setattr(signals, "_stopping", False)
    with pytest.raises(signals.Stopped):
        signals._on_stop(signal.SIGINT, None)
    signals._on_stop(signal.SIGINT, None)                 # a second Ctrl-C: ignored
    signals._on_stop(signal.SIGTERM, None)


# ------------------------------------------------------------------ the one error handler
@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setattr(signals, "_stopping", False)      # reports_errors sets it
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--base", str(tmp_path / "b"), "--state",
                                   str(tmp_path / "s"), *args])
    return invoke


def _raise(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


@pytest.mark.parametrize("exc, code, line", [
    (signals.Stopped(signal.SIGINT), 130, "mirrormount: interrupted\n"),
    (signals.Stopped(signal.SIGTERM), 143, "mirrormount: terminated\n"),
    (signals.Stopped(signal.SIGHUP), 129, "mirrormount: hung up\n"),
    (KeyboardInterrupt(), 130, "mirrormount: interrupted\n"),   # no handlers installed
])
def test_a_stop_is_one_line_and_128_plus_n(cli, monkeypatch, exc, code, line):
    monkeypatch.setattr(Guests, "list_all", _raise(exc))
    r = cli("list")
    assert (r.exit_code, r.stderr, r.stdout) == (code, line, "")


def test_after_the_command_a_stop_changes_nothing(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all", lambda self: [])
    assert cli("list").exit_code == 0
    assert signals._stopping            # what follows is reporting and exiting


def test_epipe_on_stdout_is_silent_and_141(cli, monkeypatch):
    silenced = []
    monkeypatch.setattr(Guests, "list_all", _raise(BrokenPipeError(errno.EPIPE, "x")))
    monkeypatch.setattr(signals, "stdout_gone", lambda: True)
    monkeypatch.setattr(signals, "silence_stdout", lambda: silenced.append(1))
    r = cli("list")
    assert (r.exit_code, r.stderr, silenced) == (141, "", [1])


def test_epipe_elsewhere_is_a_failure(cli, monkeypatch):
    # A helper's pipe, say: stdout is fine, so this is an operation that failed.
    monkeypatch.setattr(Guests, "list_all", _raise(BrokenPipeError(errno.EPIPE, "x")))
    monkeypatch.setattr(signals, "stdout_gone", lambda: False)
    r = cli("list")
    assert r.exit_code == 1 and "(EPIPE)" in r.stderr and r.stderr.count("\n") == 1


def test_stdout_gone_is_poll_err_on_a_pipe_without_reader(monkeypatch):
    r, w = os.pipe()
    try:
        with os.fdopen(os.dup(w), "w") as out:
            monkeypatch.setattr(sys, "stdout", out)
            assert not signals.stdout_gone()
            os.close(r)
            r = -1
            assert signals.stdout_gone()
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


# ------------------------------------------------------------------ critical sections
@pytest.fixture
def scratch():
    """A directory nobody may write in, for the scripts below (removed afterwards)."""
    d = tempfile.mkdtemp(prefix="mirrormount-sig-", dir="/tmp")
    os.chmod(d, 0o777)
    yield Path(d)
    remove_tree(d)


def script(code: str, scratch: Path, *args: str, env: dict[str, str] | None = None,
           **kw) -> subprocess.Popen:
    """A small Python program using mirrormount, as nobody, in its own process."""
    return subprocess.Popen(
        AS_NOBODY + [sys.executable, "-c", textwrap.dedent(code), *args], cwd=scratch,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
             "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def output(p: subprocess.Popen) -> list[str]:
    out, err = p.communicate(timeout=60)
    assert err == "", err
    return out.split()


SECTIONS = """
import os, signal
from mirrormount.kernel import signals
signals.install()
me = os.getpid()

def attempt(name, fn):
    try:
        fn()
        print(name, "ran-through")
    except signals.Stopped as stop:
        print(name, "stopped:" + str(stop.signum))
    signals._stopping = False            # each attempt starts afresh

def deferred():
    with signals.deferred():
        os.kill(me, signal.SIGTERM)
        print("inside-deferred")
attempt("deferred", deferred)

def safe_point():
    with signals.deferred():
        os.kill(me, signal.SIGINT)
        signals.safe_point()
        print("after-safe-point")
attempt("safe_point", safe_point)

def shield():
    with signals.shielded():
        os.kill(me, signal.SIGHUP)
        signals.safe_point()
        with signals.interruptible():
            print("inside-shield")
attempt("shield", shield)

def interruptible():
    with signals.deferred():
        os.kill(me, signal.SIGINT)
        with signals.interruptible():
            print("inside-interruptible")
attempt("interruptible", interruptible)

def twice():
    with signals.deferred():
        os.kill(me, signal.SIGINT)
    print("not-here")
try:
    twice()
except signals.Stopped:
    with signals.deferred():
        os.kill(me, signal.SIGINT)       # a second Ctrl-C while the first is handled
    print("second-ignored")
"""


def test_sections_hold_a_stop_until_it_is_harmless(scratch):
    assert output(script(SECTIONS, scratch)) == [
        "inside-deferred", "deferred", "stopped:15",          # delivered as the section ends
        "safe_point", "stopped:2",                              # at the safe point
        "inside-shield", "shield", "stopped:1",                 # not even at safe points
        "interruptible", "stopped:2",                           # at the wait's start
        "second-ignored"]


def test_a_stop_that_python_drops_is_sent_again(scratch):
    # Python drops an exception raised in a weakref callback (or a __del__): a Ctrl-C
    # handled there must not be lost.
    p = script("""
        import os, signal, weakref
        from mirrormount.kernel import signals
        signals.install()
        class X: pass
        def callback(ref):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000): pass           # the handler runs here, inside the callback
        x = X(); r = weakref.ref(x, callback)
        try:
            del x
            for _ in range(10 ** 8): pass
            print("lost")
        except signals.Stopped as stop:
            print("stopped:" + str(stop.signum))
        """, scratch)
    assert output(p) == ["stopped:2"]


def test_a_stop_ignored_at_start_stays_ignored(scratch):
    # A shell starts background jobs with SIGINT ignored; nohup ignores SIGHUP.
    p = script("""
        import os, signal, time
        from mirrormount.kernel import signals
        signals.install()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.1)
        print("still-here")
        """, scratch, preexec_fn=lambda: [signal.signal(s, signal.SIG_IGN)
                                          for s in (signal.SIGINT, signal.SIGHUP)])
    assert output(p) == ["still-here"]


EXECUTOR = """
import contextlib, os, sys
from mirrormount.kernel import signals
from mirrormount.guest.apply import Executor
from mirrormount.guest.plan import MakeDir
signals.install()
ops = [MakeDir(f"step {i}", path=f"d{i}") for i in range(1, 5)]
# `create` runs the executor inside a section of its own: the stop must still land at the
# next step boundary, and roll back, not wait for the outer section to end.
outer = signals.deferred() if sys.argv[1] == "nested" else contextlib.nullcontext()
try:
    with outer:
        Executor().run(ops)
    print("done")
except signals.Stopped as stop:
    print("stopped:" + str(stop.signum))
print("left:" + ",".join(sorted(os.listdir("."))))
"""


def _stopped(p: subprocess.Popen) -> bool:
    try:
        with open(f"/proc/{p.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _at_each_stop(p: subprocess.Popen, sigs: list[int]) -> None:
    """At each MIRRORMOUNT_FAULT=...:stop point the script reaches, send the next signal.
    SIGCONT clears the stopped state before kill() returns: the next stop seen is the next
    point (waiting to see it run in between could miss a short run, and wait forever)."""
    for sig in sigs:
        deadline = time.monotonic() + 30
        while not _stopped(p):
            assert time.monotonic() < deadline and p.poll() is None, "no stop point reached"
            time.sleep(0.005)
        os.kill(p.pid, sig)
        os.kill(p.pid, signal.SIGCONT)


@pytest.mark.parametrize("where", ["alone", "nested"])
def test_ctrl_c_between_steps_and_again_in_the_rollback(scratch, where):
    p = script(EXECUTOR, scratch, where, env={"MIRRORMOUNT_FAULT": "3:stop,undo1:stop"})
    _at_each_stop(p, [signal.SIGINT, signal.SIGINT])
    assert output(p) == ["stopped:2", "left:"]        # all three steps undone


def test_each_step_and_the_rollback_hold_stop_signals(tmp_path, monkeypatch):
    """No signal needed: look at the mask while a step, and an undo action, run."""
    from mirrormount.guest import apply
    from mirrormount.guest.plan import MakeDir
    monkeypatch.delenv("MIRRORMOUNT_FAULT", raising=False)
    seen: list[tuple[str, bool]] = []

    def held() -> bool:
        return set(signals.STOPS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])

    real_do = apply.Executor._do

    def do(self, op, checkpoint):
        seen.append((op.why, held()))
        real_do(self, op, checkpoint)
        self.undo.append(lambda: seen.append(("undo", held())))
        if op.why == "3":
            raise OSError(errno.EIO, "step 3 fails")
    monkeypatch.setattr(apply.Executor, "_do", do)
    with pytest.raises(OSError):
        apply.Executor().run([MakeDir(str(i), path=str(tmp_path / str(i))) for i in (1, 2, 3)])
    assert seen == [("1", True), ("2", True), ("3", True)] + [("undo", True)] * 3
    assert not held()                                   # and given back afterwards


# ------------------------------------------------------------------ children
def _signal_state() -> tuple[int, int]:
    """(SigBlk, SigIgn) of this process, as bit masks."""
    with open("/proc/self/status") as f:
        fields = dict(ln.split(":", 1) for ln in f if ln.startswith(("SigBlk", "SigIgn")))
    return int(fields["SigBlk"], 16), int(fields["SigIgn"], 16)


def _bits(*sigs: int) -> int:
    return sum(1 << (s - 1) for s in sigs)


def test_a_helper_child_ignores_stop_signals_and_blocks_none():
    blocked, ignored = child.run(_signal_state)
    stops = _bits(*signals.STOPS)
    assert ignored & stops == stops and blocked & stops == 0


def test_a_helper_started_inside_a_section_still_drops_stops():
    # Held pending in it, a Ctrl-C would wait for whoever unblocks or sigwaits it later.
    with signals.deferred():
        blocked, ignored = child.run(_signal_state)
    assert blocked & _bits(*signals.STOPS) == 0


def test_a_child_that_execs_keeps_what_its_parent_blocked_for_the_command():
    with signals.held((signal.SIGUSR1, signal.SIGTERM)):
        proc = child.Child.start(_signal_state, execs=True)
        try:
            blocked, ignored = proc.result()
        finally:
            proc.close()
    assert blocked & _bits(signal.SIGUSR1, signal.SIGTERM) == _bits(signal.SIGUSR1,
                                                                    signal.SIGTERM)
    assert ignored & _bits(signal.SIGTERM) == 0       # kept pending, not dropped


def _child_waiting_for(sig: int, mask: set[int], how: str) -> None:
    """In a forked child: exit 42 on `sig` ("trap"), or die of it ("die")."""
    try:
        if how == "trap":
            signal.signal(sig, lambda *a: os._exit(42))
        else:
            signal.signal(sig, signal.SIG_DFL)
        signals.restore(mask)         # a signal already forwarded is delivered here
        time.sleep(30)
    finally:
        os._exit(1)


@pytest.mark.parametrize("how, code", [("trap", 42), ("die", 128 + signal.SIGUSR1)])
def test_forward_until_exit_passes_a_signal_on_and_returns_the_status(how, code):
    sig = signal.SIGUSR1
    with signals.held((sig, signal.SIGCHLD)) as mask:
        pid = os.fork()
        if pid == 0:
            _child_waiting_for(sig, mask, how)
        os.kill(os.getpid(), sig)          # to us: held, then passed on by the loop
        status = signals.forward_until_exit(pid, (sig,))
    assert signals.exit_status(status) == code


class _SigInfo:
    """What signal.sigtimedwait returns, as far as the forwarding loop looks at it."""

    def __init__(self, signo: int, code: int) -> None:
        self.si_signo, self.si_code = signo, code


@pytest.mark.parametrize("own_group, passed_on", [
    (False, [signal.SIGTERM]),                  # the terminal's Ctrl-C reached it already
    (True, [signal.SIGINT, signal.SIGTERM]),    # it left our group: only we got it
])
def test_forward_passes_a_terminal_signal_on_only_to_a_command_outside_our_group(
        monkeypatch, own_group, passed_on):
    real_wait, real_kill = signal.sigtimedwait, os.kill
    with signals.held((signal.SIGCHLD,)) as mask:
        pid = os.fork()
        if pid == 0:
            try:
                signals.restore(mask)
                time.sleep(30)
            finally:
                os._exit(1)
        if own_group:
            os.setpgid(pid, pid)
        queue = [_SigInfo(signal.SIGINT, signals.SI_KERNEL),     # typed at the terminal
                 _SigInfo(signal.SIGTERM, 0)]                     # kill(1): SI_USER
        sent: list[int] = []
        monkeypatch.setattr(signal, "sigtimedwait",
                            lambda sigs, t: queue.pop(0) if queue else real_wait(sigs, t))
        monkeypatch.setattr(os, "kill", lambda p, s: (sent.append(s), real_kill(p, s)))
        signals.forward_until_exit(pid)
    assert sent == passed_on


def test_reset_for_exec_gives_the_command_default_dispositions():
    def reset_and_look(mask: set[int]) -> tuple[int, int]:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)    # as Python itself does
        signals.reset_for_exec(mask)
        return _signal_state()
    with signals.held(signals.FORWARDED) as mask:
        blocked, ignored = child.run(reset_and_look, mask)
    assert blocked & _bits(*signals.FORWARDED) == 0
    assert ignored & _bits(*signals.RESET_FOR_EXEC) == 0


# ------------------------------------------------------------------ the entry point
def _cli(args: list[str], scratch: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        AS_NOBODY + [sys.executable, "-m", "mirrormount", *args], cwd=scratch,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
             "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"},
        stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["list", "--help"]])
def test_entry_point_a_closed_stdout_is_silent_and_141(scratch, args):
    r, w = os.pipe()
    os.close(r)
    try:
        p = _cli(args, scratch, stdout=w)
    finally:
        os.close(w)
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (141, "")


def _installed(pid: int) -> bool:
    """entry.main ran signals.install(): SIGTERM is caught (Python alone does not)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            cgt = next(ln for ln in f if ln.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(cgt.split()[1], 16) & _bits(signal.SIGTERM))


@pytest.mark.parametrize("sig, line", [(signal.SIGINT, "mirrormount: interrupted\n"),
                                       (signal.SIGTERM, "mirrormount: terminated\n")])
def test_entry_point_a_stop_while_importing_is_one_line(scratch, sig, line):
    """From the moment the handlers are in (before typer is imported) to the end: one line
    and 128+N, or (too late: the command was done) its own result. Never a traceback."""
    seen = set()
    for delay in (0, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08):
        p = _cli(["--help"], scratch, stdout=subprocess.DEVNULL)   # typer: the long import
        while not _installed(p.pid) and p.poll() is None:
            time.sleep(0.0005)
        time.sleep(delay)
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        _, err = p.communicate(timeout=60)
        assert (p.returncode, err) in ((0, ""), (128 + sig, line)), (delay, p.returncode, err)
        seen.add(p.returncode)
    assert 128 + sig in seen


@pytest.mark.parametrize("raised, code, err", [(None, 0, ""), (3, 3, ""),
                                               ("a message", 1, "a message\n")])
def test_entry_point_exits_as_python_would(monkeypatch, capsys, raised, code, err):
    import mirrormount.cli
    from mirrormount import entry

    def app() -> None:
        raise SystemExit(raised)
    monkeypatch.setattr(signals, "install", lambda: None)       # not in pytest's process
    monkeypatch.setattr(signals, "before_exit", lambda: None)
    monkeypatch.setattr(mirrormount.cli, "app", app)
    with pytest.raises(SystemExit) as done:
        entry.main()
    assert (done.value.code, capsys.readouterr().err) == (code, err)


# ------------------------------------------------------------------ batches (PartlyDone)
def _batch(monkeypatch, cause: BaseException) -> None:
    """`create c1 c2 c3` where c1 is made and c2 meets `cause`."""
    from mirrormount.guest.guests import GuestInfo
    made: list[str] = []

    def create(self, req):
        if made:
            raise cause
        made.append(req.name)
        return GuestInfo(req.name, f"/x/{req.name}", "/", "stopped", {}, []), None
    monkeypatch.setattr(Guests, "plan", lambda self, req: [])
    monkeypatch.setattr(Guests, "create", create)
    monkeypatch.setattr("mirrormount.cli.guests.require_root", lambda what: None,
                        raising=False)


@pytest.mark.parametrize("cause, code, word", [
    (signals.Stopped(signal.SIGTERM), 143, "terminated"),
    (KeyboardInterrupt(), 130, "interrupted"),
    (OSError(errno.EIO, "Input/output error"), 1, "operation failed: Input/output error (EIO)"),
])
def test_a_batch_stopped_midway_says_what_was_done_in_one_line(cli, monkeypatch, cause, code,
                                                               word):
    _batch(monkeypatch, cause)
    r = cli("create", "c1", "c2", "c3")
    assert (r.exit_code, r.stderr) == (
        code, f"mirrormount: {word}; created: c1; not created: c2 c3\n"), r.output


def test_a_batch_whose_stdout_reader_left_says_nothing(cli, monkeypatch):
    # `create c1 c2 c3 | head -0`: the first "created" line meets EPIPE, and the batch ends
    # there. Nobody is left to read what was done: silent, 141, as for a single name.
    _batch(monkeypatch, BrokenPipeError(errno.EPIPE, "Broken pipe"))
    monkeypatch.setattr(signals, "stdout_gone", lambda: True)
    monkeypatch.setattr(signals, "silence_stdout", lambda: None)
    r = cli("create", "c1", "c2", "c3")
    assert (r.exit_code, r.stderr) == (141, "")

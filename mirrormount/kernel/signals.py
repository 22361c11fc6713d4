"""How mirrormount's processes treat signals, and SIGPIPE's heir, a stdout whose reader left.

The CLI stops cleanly. SIGINT (Ctrl-C), SIGTERM and SIGHUP raise ``Stopped``, which the CLI
reports like any error: one line on stderr, exit 128+N (130, 143, 129). ``install()`` does
this first thing at the entry point, before the heavy imports. Only the first stop counts:
later ones are ignored while it is handled, so a rollback runs to its end. SIGQUIT (Ctrl-\\)
keeps its default action, the last resort that kills at once like SIGKILL; the next create
or destroy recovers from that (vm-tests/test_faults.py kills at every step).

Critical sections. A stop must never land between a kernel call and the recording of its
undo. ``deferred()`` blocks the stop signals (the kernel keeps them pending) and delivers
them when the section ends, or where the section says a stop is harmless (``safe_point()``,
``interruptible()``, e.g. between two executor steps or while waiting for the lock).
``shielded()`` holds them through a rollback, safe points included. Masks are per thread;
mirrormount is single-threaded (setns(CLONE_NEWNS) requires it), so the main thread's mask
is the process's.

Helper children (kernel/child.py) ignore the stop signals: their parent gets the same ones
(a terminal signals its whole foreground process group) and decides, then releases or kills
them. A child that will exec a command keeps what its parent blocked for that command.

exec and enter: the CLI waits for the command and passes signals on (``forward_until_exit``).
The command dies with its waiting parent (``die_with_parent``) and starts with default
signal dispositions and the caller's mask (``reset_for_exec``).

EPIPE: Python ignores SIGPIPE, so writing to a pipe whose reader has gone raises
BrokenPipeError. When stdout is that pipe (``mirrormount list | head -0``) there is nobody
left to tell: the CLI says nothing and exits 141, the 128+SIGPIPE a shell reports for any C
tool killed by that write (util-linux's close_stdout is silent about EPIPE as well).
``silence_stdout()`` points fd 1 at /dev/null, so the flush at exit has nowhere to fail.

Privilege: none.
"""
from __future__ import annotations

import os
import select
import signal
import sys
from contextlib import contextmanager

# Annotations only: this module is imported before the signal handlers are in, and typing
# (even for its TYPE_CHECKING), collections.abc and types would lengthen the moment when a
# Ctrl-C is still Python's own. Type checkers take any name TYPE_CHECKING as typing's.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection, Iterator
    from types import FrameType
    from typing import Any

# The signals that stop the CLI, and the word that says so.
STOPS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated",
                         signal.SIGHUP: "hung up"}
# What exec and enter pass on to the command they wait for.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
# Dispositions Python changes at start-up (SIG_IGN survives exec) or that we do: a command
# starts with all of them at their defaults.
RESET_FOR_EXEC = (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ)
# si_code of a signal the kernel generated itself: the terminal's Ctrl-C, Ctrl-\ and
# hang-up (sent to a whole process group), an orphaned group's SIGHUP. (asm-generic/siginfo.h)
SI_KERNEL = 0x80
EXIT_EPIPE = 128 + signal.SIGPIPE

_stopping = False    # a stop was raised (or the command ended): later ones are ignored
_shields = 0         # rollbacks in progress: nothing interrupts them, safe points included


class Stopped(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM, SIGHUP). A BaseException, as KeyboardInterrupt
    is: ``except Exception`` lets it through, the executor rolls back on it, and click does
    not mistake it for its own Ctrl-C handling (which would exit 130 without a word)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return STOPS.get(self.signum, f"stopped by signal {self.signum}")


def _on_stop(signum: int, frame: FrameType | None) -> None:
    global _stopping
    if _stopping:
        return
    _stopping = True
    raise Stopped(signum)


def _unraisable(info: Any) -> None:
    """sys.unraisablehook. Python runs a signal handler wherever the main thread happens to
    be, and an exception raised inside a weakref callback or a __del__ (the import system's
    module locks have one) is dropped with "Exception ignored in ...". A Stopped dropped
    there would be lost, and the command would go on. Send the signal again in a moment:
    not from here, where the handler would run at once and be dropped again, but from a
    timer, so that it arrives in ordinary code (and waits, like any, while a deferred section
    holds the stop signals)."""
    global _stopping, _resend
    if isinstance(info.exc_value, Stopped):
        _stopping = False
        _resend = info.exc_value.signum
        signal.signal(signal.SIGALRM, _resend_stop)
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    _previous_unraisable(info)


def _resend_stop(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    if _resend is not None:
        os.kill(os.getpid(), _resend)


_previous_unraisable = sys.unraisablehook
_resend: int | None = None


def install() -> None:
    """At the entry point, before anything else: stop signals raise Stopped from now on.

    A stop signal that was ignored when we started stays ignored: a shell starts background
    jobs with SIGINT ignored so that Ctrl-C spares them, and nohup ignores SIGHUP."""
    global _stopping
    _stopping = False
    # An inherited SIG_IGN for SIGCHLD would make the kernel reap our children itself:
    # their exit status (a command's, a helper's report) would be lost.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sys.unraisablehook = _unraisable
    for sig in STOPS:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, _on_stop)


def before_exit() -> None:
    """The last thing before sys.exit: hold the stop signals for good. The process has said
    all it will say; Python's finalization resets handlers to SIG_DFL, and a Ctrl-C then
    would kill it silently instead of letting it exit with its status."""
    ending()
    _mask(signal.SIG_BLOCK, STOPS)


def ending() -> None:
    """The command is over (done, or failing with its message): from here the process only
    reports and exits, and a stop signal would only add a second line. Ignore them."""
    global _stopping
    _stopping = True


def cut_short(verb: str, exc: BaseException, done: list[str],
              not_done: list[str]) -> BaseException:
    """What ends a batch (``create A B``, ``destroy A B``) that ``exc`` ended after ``done``:
    ``exc`` itself when nothing was done, for SystemExit, and for an error of the last name
    (its own message says it all); else errors.PartlyDone naming what was done. A stop
    held until the last name was complete is a PartlyDone too, so its line says what is
    done ("interrupted; created: c1") instead of suggesting it was undone."""
    from ..errors import PartlyDone          # only on this path: not needed to start
    stop = isinstance(exc, (Stopped, KeyboardInterrupt))
    if not done or isinstance(exc, SystemExit) or (not not_done and not stop):
        return exc
    return PartlyDone(verb, exc, done, not_done)


def end_batch(verb: str, exc: BaseException, done: list[str], not_done: list[str]) -> None:
    """Raise what ends the batch (cut_short): ``exc`` as it is, or the PartlyDone it caused.
    Called in the batch's ``except`` clause; never returns."""
    ended = cut_short(verb, exc, done, not_done)
    if ended is exc:
        raise exc
    raise ended from exc


def exit_status(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N if killed by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


# ------------------------------------------------------------------ critical sections
def _mask(how: int, sigs: Collection[int]) -> set[int]:
    return signal.pthread_sigmask(how, sigs)


@contextmanager
def deferred() -> Iterator[None]:
    """A stretch that a stop must not cut: stop signals wait (pending in the kernel) until
    it ends, then arrive there; or at a safe point inside it."""
    old = _mask(signal.SIG_BLOCK, STOPS)
    try:
        yield
    finally:
        _mask(signal.SIG_SETMASK, old)   # a stop held meanwhile is raised here


@contextmanager
def shielded() -> Iterator[None]:
    """A rollback: stop signals wait until it ends, safe points inside it included."""
    global _shields
    old = _mask(signal.SIG_BLOCK, STOPS)
    _shields += 1
    try:
        yield
    finally:
        _shields -= 1
        _mask(signal.SIG_SETMASK, old)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside a deferred section, a wait that a stop may end at once, because nothing is
    half-done during it (waiting for the state lock). Not inside a shield."""
    if _shields:
        yield
        return
    old = _mask(signal.SIG_UNBLOCK, STOPS)   # a stop already held is raised right here
    try:
        yield
    finally:
        _mask(signal.SIG_SETMASK, old)


def safe_point() -> None:
    """A point where a stop held by a deferred section may be raised (between two executor
    steps, at a step's inner checkpoints). Nothing is held outside a section: no-op there."""
    if _shields or not (signal.sigpending() & set(STOPS)):
        return
    with interruptible():
        pass


# ------------------------------------------------------------------ children and exec
def fork_guard() -> set[int]:
    """Before os.fork(): hold the stop signals, so that neither process meets one before it
    has set itself up (the child: ignore them; the parent: nothing). Returns the mask to
    give back to restore() in both."""
    return _mask(signal.SIG_BLOCK, STOPS)


def restore(mask: Collection[int]) -> None:
    _mask(signal.SIG_SETMASK, mask)


def ignore_stops(mask: Collection[int]) -> None:
    """In a helper child, instead of restore(mask): the parent decides when to stop, not us.
    Ignored and unblocked, a stop signal is dropped as it comes (one held since the fork is
    dropped too), even inside a section the parent had open: otherwise it would wait, pending,
    for whoever unblocks or sigwaits it later (a guest's reaper does). A helper never execs,
    so nothing inherits the SIG_IGN."""
    for sig in STOPS:
        signal.signal(sig, signal.SIG_IGN)
    restore(set(mask) - set(STOPS))


def die_with_parent(expected_parent: int) -> None:
    """In a child that will exec a command: be killed when the process that waits for it
    dies. That process forwards every signal it can catch and waits, so it dies first only by
    SIGKILL (or a crash); the command then gets SIGKILL as well, which, unlike SIGTERM or
    SIGHUP, it cannot trap or ignore: nothing is left running in the guest that would keep
    `destroy` refusing, with nobody to wait for it.

    expected_parent: what getppid() says here while that parent lives; 0 when the parent is
    outside our pid namespace. If it already differs, the parent died before the prctl and
    no signal will come: we go the same way now."""
    from . import syscalls as sc
    sc.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), signal.SIGKILL)


def reset_for_exec(mask: Collection[int]) -> None:
    """Just before exec: the command starts with default dispositions and the mask the CLI
    was started with. Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays
    ignored across exec (`yes | head -1` in the guest would never end by SIGPIPE). A
    forwarded signal already pending is delivered as the mask opens: the command was
    signalled before it started, and dies of it as it would have."""
    for sig in RESET_FOR_EXEC:
        signal.signal(sig, signal.SIG_DFL)
    restore(mask)


def _in_our_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == os.getpgrp()
    except ProcessLookupError:
        return False


def forward_until_exit(pid: int, forward: Collection[int] = FORWARDED) -> int:
    """Wait for our child `pid` and return its wait status, passing on each signal of
    `forward` this process receives meanwhile, and following it when it stops.

    The caller has blocked `forward` and SIGCHLD since before the fork, so nothing sent in
    between is lost: it waits, pending, for this loop (sigtimedwait takes pending signals
    lowest number first, so a signal that killed the child is seen before its SIGCHLD).

    A signal the kernel generated (si_code SI_KERNEL) went to a whole process group: Ctrl-C
    and Ctrl-\\ from the terminal reach its whole foreground group, which the command is part
    of unless it left it (an interactive shell takes a group of its own and the terminal with
    it, and then we get nothing). Such a signal is passed on only if the command is not in
    our group, so it is never delivered twice. One that a process sent (kill(1), a
    supervisor, our own parent forwarding) was meant for us and is always passed on.

    Job control, as nsenter(1) does it: the wait includes stopped children (WUNTRACED).
    When the command stops (`kill -STOP $$`, `suspend`, Ctrl-Z), this process stops itself
    with SIGSTOP, so the shell that started us sees its job stopped and gets its terminal
    back; when we are continued (`fg`, `bg`, SIGCONT), we continue the command (follow_stop).
    """
    wanted = {*forward, signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if done and os.WIFSTOPPED(status):
            follow_stop(pid)
            continue
        if done:
            return status
        # The timeout only guards against a lost wake-up; SIGCHLD normally ends the wait.
        info = signal.sigtimedwait(wanted, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        if info.si_code == SI_KERNEL and _in_our_group(pid):
            continue
        try:
            os.kill(pid, info.si_signo)
        except ProcessLookupError:
            pass     # exited meanwhile; waitpid reports it next


def _stopped(pid: int) -> bool:
    """Is `pid` stopped right now (state T in /proc/PID/stat, proc(5))?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"T"
    except (OSError, IndexError):
        return False


def follow_stop(pid: int) -> None:
    """Our child `pid` has stopped: stop ourselves, and continue it once we are continued.

    A terminal's Ctrl-Z reaches the whole foreground group, us included, and `fg` continues
    the whole group: by the time we read the child's stop, it may be running again; then
    there is nothing to follow (stopping now would leave the job stopped after `fg`).
    Otherwise SIGSTOP (it cannot be caught, and unlike SIGTSTP it is not discarded in an
    orphaned process group): our parent, a job-control shell, sees its job stopped. The
    SIGCONT that resumes us may have been sent to us alone (`kill -CONT`): we pass it on."""
    if not _stopped(pid):
        return
    os.kill(os.getpid(), signal.SIGSTOP)      # stops here, on the way out of kill(2)
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


# Signals whose default action writes a core (signal(7), "Core"). A CLI that dies of one
# only to tell its parent how the command died must not leave a core of the interpreter.
_CORE = frozenset(getattr(signal, n) for n in (
    "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGSEGV", "SIGXCPU",
    "SIGXFSZ", "SIGSYS") if hasattr(signal, n))


def die_like(wait_status: int) -> int:
    """End this process as the command ended: if it died of signal N, die of N too (default
    action, unblocked, raised at ourselves), so that a shell sees "killed by SIGINT" and
    stops its loop at one Ctrl-C (bash's wait_sigint_handler), and `timeout` or a supervisor
    sees what happened. Returns the shell-style status (exit code, or 128+N) only where
    dying cannot work (SIGSTOP-like signals cannot end a process; defaults to ignore).

    For a signal whose default writes a core, the process is made non-dumpable first
    (prctl PR_SET_DUMPABLE 0): the command dumped its own core, if any; ours would be of the
    interpreter. Buffered output is flushed before, since nothing runs after."""
    code = exit_status(wait_status)
    if not os.WIFSIGNALED(wait_status):
        return code
    sig = os.WTERMSIG(wait_status)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        if sig in _CORE:
            from . import syscalls as sc
            sc.set_dumpable(False)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        _mask(signal.SIG_UNBLOCK, {sig})
        os.kill(os.getpid(), sig)            # delivered on the way out of kill(2)
    except (OSError, ValueError):
        pass
    return code


def drop_pending(sigs: Collection[int]) -> None:
    """Take whatever of the blocked `sigs` is pending, and drop it."""
    while signal.sigtimedwait(sigs, 0) is not None:
        pass


@contextmanager
def held(sigs: Collection[int]) -> Iterator[set[int]]:
    """Block `sigs` for the block's duration; yields the mask from before (for the child to
    restore before it execs)."""
    old = _mask(signal.SIG_BLOCK, sigs)
    try:
        yield old
    finally:
        _mask(signal.SIG_SETMASK, old)


# ------------------------------------------------------------------ closed standard fds
def hold_closed_std_fds() -> frozenset[int]:
    """At the entry point: which of fds 0, 1 and 2 we were started without (`>&-`, `2>&-`,
    `<&-`), each now held by /dev/null opened close-on-exec. Returns their numbers.

    Held, so that no file or pipe the CLI opens later takes the number and is mistaken for
    stdout or stderr (a child's result pipe as fd 2 got the CLI's error line and the child
    a stray write); close-on-exec, so that a command exec'd in a guest starts with that fd
    closed, as the caller asked (nsenter(1) passes a closed fd on as closed). Python sets
    sys.stdout (etc.) to None for a closed fd; they get a stream on the placeholder, so what
    the CLI says there is dropped, as a C tool's write(2) to a closed fd is."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    for fd in closed:
        try:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue
        if null != fd:
            os.dup2(null, fd, inheritable=False)
            os.close(null)
        name = ("stdin", "stdout", "stderr")[fd]
        if getattr(sys, name) is None:
            stream = open(fd, "r" if fd == 0 else "w", closefd=False,  # noqa: SIM115
                          encoding="utf-8", errors="backslashreplace")
            setattr(sys, name, stream)
            setattr(sys, f"__{name}__", stream)
    return frozenset(closed)


# ------------------------------------------------------------------ a closed stdout
def stdout_gone() -> bool:
    """Has the reader of our stdout gone away? poll() reports POLLERR for the write end of a
    pipe with no reader left (and for a broken socket), never for a file or a terminal."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False         # not a real file (a test's captured output)
    p = select.poll()
    p.register(fd, select.POLLOUT)
    return any(ev & select.POLLERR for _, ev in p.poll(0))


def silence_stdout() -> None:
    """Point fd 1 at /dev/null: what is still buffered, and the flush at exit, go nowhere
    instead of failing again (Python would print "Exception ignored ... BrokenPipeError")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def close_stdout(code: int) -> int:
    """At exit: flush stdout. If its reader has gone, say nothing and return 141. If the
    write fails otherwise (a full disk: ENOSPC), say so and fail (1), as util-linux's
    close_stdout does; a status that already says failure is kept."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
        return EXIT_EPIPE
    except OSError as exc:
        silence_stdout()
        if code:
            return code       # a failure said already (the same write error, by the handler)
        from ..errors import describe          # only on this path: not needed to start
        try:
            sys.stderr.write(f"mirrormount: {describe(exc)}\n")
        except (OSError, ValueError):
            pass
        return 1
    except ValueError:
        pass                  # closed already: keep the status
    return code

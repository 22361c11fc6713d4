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
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

from ..record import record
from ..errors import MirrormountError, OperationError, UsageError
from ..kernel import child, confine, signals
from ..kernel import syscalls as sc
from ..kernel.child import ChildFailed
from . import execenv
from .model import KIND, SETNS_ORDER


__all__ = ["ChildFailed", "ExecSpec", "Finished", "enter", "exec_in", "in_namespaces",
           "open_ns_files", "read_own_mountinfo", "run_command"]


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


@record(frozen=True)
class ExecSpec:
    """What exec and enter run in a guest, and how (guest/execenv.py has the rules).

    argvs: tried in order while the program is not found (enter: the shells); env: the
    caller's environment, the base of the command's; extra_env: --env pairs; keep_env: the
    caller's environment as it is; user: --user (None: root); wd: --wd, inside the guest;
    set_shell: enter, SHELL becomes the shell that runs; cgroup_procs: the host path of the
    guest's cgroup.procs, which the command joins before it enters (None: none)."""

    guest: str
    argvs: tuple[tuple[str, ...], ...]
    env: Mapping[str, str]
    extra_env: tuple[tuple[str, str], ...] = ()
    keep_env: bool = False
    user: str | None = None
    wd: str = "/"
    set_shell: bool = False
    cgroup_procs: str | None = None


@record(frozen=True)
class Finished:
    """How the command ended: `status` its wait status (os.waitpid), `code` as a shell
    reports it (exit code, or 128+N when killed by signal N)."""

    status: int

    @property
    def code(self) -> int:
        return signals.exit_status(self.status)

    @property
    def signal(self) -> int | None:
        return os.WTERMSIG(self.status) if os.WIFSIGNALED(self.status) else None


def _pid_init_gone(guest: str) -> OperationError:
    return OperationError(
        f"guest {guest} is broken: the init of its pid namespace (PID 1, the guest's init "
        "or mirrormount's reaper) is gone, and no process can join that namespace any more "
        f"(fork: ENOMEM); nothing was run; hint: mirrormount start {guest} (a fresh pid "
        "namespace; the others are kept), as list and status say")


def _exec_child(fds: dict[str, int], spec: ExecSpec, mask: Collection[int], parent: int,
                cgroup_fd: int | None) -> None:
    """In the child of run_command: enter the namespaces and exec. Returns only by raising
    (the exception reaches the parent); a successful exec closes the channel (close-on-exec),
    which the parent sees as an outcome of None.

    Signals: the forwarded ones and SIGCHLD arrive here blocked (run_command blocked them
    before the fork); the command gets default dispositions and `mask`, the CLI's own, as it
    execs. The process that waits for the command (the CLI, or our own waiting parent below)
    forwards what it receives, follows its stops, dies of the signal it dies of, and the
    command dies with it (signals.die_with_parent)."""
    signals.die_with_parent(parent)
    if cgroup_fd is not None:
        # Into the guest's cgroup while we still see the host's hierarchy, as nsenter -C
        # and systemd-run -M place a command: "0" is the writer (cgroup-v2.rst).
        os.write(cgroup_fd, b"0")
        os.close(cgroup_fd)
    if "pid" in fds:
        # setns(pid) only applies to children. Enter it alone, fork, and let only the
        # command enter the rest: this waiting parent never shows up in the guest. The
        # command (or its failure, through the inherited channel) reports; we only wait,
        # passing on what the CLI forwards to us, and end as the command did.
        sc.setns(fds.pop("pid"), KIND["pid"].clone_flag, "pid")
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            inner = os.fork()
        except OSError as exc:
            # alloc_pid() refuses a namespace whose init has exited (kernel/pid.c: no
            # PIDNS_ADDING): ENOMEM, which would read as "out of memory".
            if exc.errno == errno.ENOMEM:
                raise _pid_init_gone(spec.guest) from None
            raise
        if inner:
            child.close_channel()
            # Ctrl-Z stops the command and the CLI (the terminal's whole group); we follow
            # the command's stops in forward_until_exit, never stop on our own.
            signal.signal(signal.SIGTSTP, signal.SIG_IGN)
            os._exit(signals.die_like(signals.forward_until_exit(inner)))
        # Our parent lives outside the pid namespace we are now in: getppid() says 0.
        signals.die_with_parent(0)
    enter(fds)
    # From here every path is the guest's: / is its root.
    try:
        os.chdir(spec.wd)
    except OSError as exc:
        raise UsageError(f"--wd {spec.wd}: {exc.strerror} in guest {spec.guest}; nothing "
                         "was run") from None
    user = execenv.resolve_user(spec.user, execenv.read_guest_file("/etc/passwd"),
                                execenv.read_guest_file("/etc/group"), spec.guest)
    argvs = list(spec.argvs)
    if spec.set_shell:
        argvs = [(sh,) for sh in execenv.shell_candidates(spec.env, user.shell)]
    signals.reset_for_exec(mask)
    confine.enforce_armed()     # the guest's seccomp filter and dropped capabilities, if any
    if spec.user is not None:
        # Groups before ids, the uid last: after setuid we could change neither.
        os.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)
    error: OSError | None = None
    for argv in argvs:
        env = execenv.command_env(spec.env, user, spec.guest, spec.extra_env, spec.keep_env,
                                  argv[0] if spec.set_shell else None)
        try:
            os.execvpe(argv[0], list(argv), env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            error = error or exc       # the next shell; report the first that was asked
    assert error is not None
    raise error


def run_command(ns_files: Mapping[str, str], spec: ExecSpec) -> Finished:
    """Run spec's command in the namespaces and return how it ended.

    A failure before the exec: a MirrormountError from the child (bad --user or --wd: exit
    2; a guest whose pid namespace lost its init: exit 1) is raised here; any other is
    reported on stderr as a shell would, and the status is 127 when the command, or
    anything on the way to it, was not found, 126 otherwise.

    Signals (kernel/signals.py): SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to
    the CLI are passed on to the command, and the CLI goes on waiting for it. They are
    blocked from before the fork, so none is lost while the child starts. Ctrl-C at a
    terminal already reaches the command (it is in our process group): that one is not
    passed on a second time. If the CLI is killed (SIGKILL), the command is killed too. When
    the command stops, the CLI stops itself, and continues it when continued (job control).
    """
    fds = open_ns_files(ns_files)  # open in the host's view, before anything moves
    cgroup_fd = None
    try:
        if spec.cgroup_procs is not None:
            cgroup_fd = os.open(spec.cgroup_procs, os.O_WRONLY | os.O_CLOEXEC)
        with signals.held((*signals.FORWARDED, signal.SIGCHLD)) as mask:
            try:
                proc = child.Child.start(_exec_child, fds, spec, mask, os.getpid(), cgroup_fd,
                                         execs=True)
            finally:
                for fd in (*fds.values(), *([cgroup_fd] if cgroup_fd is not None else [])):
                    os.close(fd)
                fds, cgroup_fd = {}, None
            try:
                # None: the exec happened (the channel closed on exec); ("err", exc): not.
                outcome = proc.outcome(reap=False)
                status = proc.wait(forward=signals.FORWARDED)
            finally:
                proc.close()      # only if something failed here: kill and reap the command
            # One that came after the command ended had nobody to go to; we exit with its
            # status now, not by a late SIGUSR1's default action or a "terminated".
            signals.drop_pending((*signals.FORWARDED, signal.SIGCHLD))
    finally:
        for fd in fds.values():
            os.close(fd)
    if outcome is None:
        return Finished(status)
    kind, value = outcome
    if isinstance(value, MirrormountError):
        raise value
    name = spec.argvs[0][0] if spec.argvs and not spec.set_shell else "shell"
    print(f"mirrormount: exec {name}: {_reason(value)}", file=sys.stderr)
    code = 127 if isinstance(value, OSError) and value.errno in (errno.ENOENT,
                                                                 errno.ENOTDIR) else 126
    return Finished(code << 8)


def exec_in(ns_files: Mapping[str, str], argv: list[str], env: Mapping[str, str] | None = None,
            cwd: str = "/", guest: str = "?", cgroup_procs: str | None = None) -> int:
    """Run argv in the namespaces with `env` as it is (the caller's environment when None)
    and return its status as a shell reports it (128+N when killed by signal N; 127 not
    found; 126 any other failure before the exec). cgroup_procs: the guest's own cgroup,
    joined first, as exec does. run_command is the whole interface."""
    spec = ExecSpec(guest, (tuple(argv),),
                    dict(env) if env is not None else execenv.caller_environ(), wd=cwd,
                    keep_env=True, cgroup_procs=cgroup_procs)
    return run_command(ns_files, spec).code


def _reason(exc: BaseException) -> str:
    """Why the command could not be started, in a few words (exec prints it like a shell)."""
    if isinstance(exc, OSError):
        op = getattr(exc, "op", None)
        text = exc.strerror or str(exc)
        return f"{op} {exc.filename or ''}: {text}".replace(" :", ":") if op else text
    return f"{type(exc).__name__}: {exc}"

"""Building namespaces: the nursery, and each guest's namespaces cloned from it.

Why a nursery (kernel-findings §4): unshare(CLONE_NEWNS) copies every mount of the caller's
namespace. From the host, that includes every existing mirror, so each create would cost more
than the last. The nursery is a namespace whose only mount is a tiny tmpfs; a guest's namespace
is unshared from it (one mount copied) and the guest's tree is brought in as a detached copy of
its mirror made with open_tree(OPEN_TREE_CLONE|AT_RECURSIVE), then attached with move_mount.

Everything that unshares or setns()es runs in a forked child (kernel.child.Child): it builds
the namespaces, reports ready and waits; the parent (in the host's mount namespace) binds the
child's /proc/PID/ns/* files under STATE, which keeps the namespaces alive after the child
exits, then releases it.

Privilege: root.
"""
from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

from ..record import record
from . import faults
from ..kernel import child, confine
from ..kernel import mountinfo
from ..kernel import syscalls as sc
from ..kernel.child import Child
from .model import cap_numbers, clone_flags
from .ops import SpawnGuest, StartNursery
from ..kernel.procfs import wait_gone

NEWROOT = "/newroot"


def bind_ns_file(source: str, holder: str) -> None:
    """Keep a namespace alive: bind its nsfs file onto a regular file (created empty)."""
    fd = os.open(holder, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    sc.mount(source, holder, None, sc.MS_BIND)


def release_ns_file(holder: str) -> None:
    """Undo bind_ns_file: detach every bind stacked on the holder, then remove the file."""
    for _ in range(16):
        try:
            sc.umount2(holder, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                break  # not a mountpoint (any more)
            raise
    try:
        os.unlink(holder)
    except FileNotFoundError:
        pass


def cpu_hint(nursery_holder: str) -> str:
    """Where build_and_hold remembers the CPU whose namespace ids pass the loop check."""
    return os.path.join(os.path.dirname(nursery_holder), "cpu")


# ------------------------------------------------------------------------------ nursery
def _nursery_child(root: str) -> None:
    sc.unshare(sc.CLONE_NEWNS)
    # Private first: the tmpfs below, and everything we detach, must never reach the host.
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    os.makedirs(root, exist_ok=True)
    sc.mount("mirrormount-nursery", root, "tmpfs", 0, "mode=0700,size=64k")
    os.mkdir(f"{root}{NEWROOT}")
    os.mkdir(f"{root}/old")
    os.chdir(root)
    # All mounts are private here, so pivot_root's "no shared parent" rules are met.
    sc.pivot_root(".", "old")
    os.chdir("/")
    sc.umount2("/old", sc.MNT_DETACH)  # already private: the detach propagates nowhere
    os.rmdir("/old")
    child.report_ready([])  # and stay until the parent has bound our namespace


def start_nursery(op: StartNursery, checkpoint: Callable[[int], None] = lambda m: None
                  ) -> None:
    """Create the nursery namespace and bind it at op.holder (in the host's table).
    checkpoint(1): the namespace is built, nothing bound yet."""

    def body() -> None:
        _nursery_child(op.root)

    def hold(pid: int, _: list[str]) -> None:
        checkpoint(1)
        faults.nsfs_bind_fault()
        bind_ns_file(f"/proc/{pid}/ns/mnt", op.holder)

    build_and_hold(body, hold, lambda: None, cpu_hint(op.holder))
    try:
        os.rmdir(op.root)  # the directory only served the child's private copy
    except OSError:
        pass


# ------------------------------------------------------------------------------ guests
@record(frozen=True)
class Spawned:
    """A guest's namespaces are held: its reaper's pid (pid namespace only) and the
    nsfs-bind attempts it took."""

    reaper_pid: int | None
    attempts: int


def own_proc_only(proc_fd: int = -1) -> None:
    """Put the guest's own /proc in place of every proc mount it inherited from the rootfs.

    The mirror copies the host's /proc, which shows the host's pid namespace: its processes'
    ns/* and root links lead into other guests. A proc mounted on top would hide it only
    until a guest process unmounts the top one. So every inherited proc mount is detached
    first (its copy in the mirror goes with it, by propagation; in mirror+host mode nothing
    goes back to the host, whose mounts the mirror only receives from), then the guest's
    own is mounted: proc shows the pid namespace of whoever mounts it (fs/proc/root.c).

    proc_fd: the host's /proc, opened before the caller entered the guest (`start`): the
    guest's /proc then belongs to the pid namespace of its previous init, which has ended,
    and has no "self" for us."""
    try:
        fd = os.open("self/mountinfo" if proc_fd >= 0 else "/proc/self/mountinfo",
                     os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd if proc_fd >= 0 else None)
        with os.fdopen(fd, encoding="utf-8", errors="surrogateescape") as f:
            inherited = [m.mountpoint for m in mountinfo.parse(f.read()) if m.fstype == "proc"]
    except OSError:
        inherited = []          # no proc at /proc in this rootfs: nothing to hide
    for path in sorted(set(inherited), key=lambda p: -p.count("/")):   # deepest first
        for _ in range(16):     # stacked ones too
            try:
                sc.umount2(path, sc.MNT_DETACH)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    break       # no mount there any more
                raise
    # The mount propagates to BASE/NAME/proc.
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REAPER_COMM = "mm-reaper"           # /proc/PID/comm: 15 bytes at most (prctl PR_SET_NAME)
REAPER_ARGV0 = "mirrormount-reaper"  # /proc/PID/cmdline: `mirrormount-reaper NAME`


def init_env(name: str) -> dict[str, str]:
    """The environment of a guest's init: a PATH, and the marks systemd and others read to
    know they run in a container (systemd's `container=`, see systemd-detect-virt(1))."""
    return {"PATH": GUEST_PATH, "HOME": "/", "container": "mirrormount",
            "MIRRORMOUNT_GUEST": name}


def _resolve_init(argv: tuple[str, ...]) -> str:
    """argv[0] as execvp would find it in the guest's PATH; OperationError when it is not
    there, so that create and start fail (and roll back) instead of leaving a dead init."""
    import shutil
    from ..errors import OperationError
    found = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=GUEST_PATH)
    if not found or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise OperationError(f"init {argv[0]}: not found, or not executable, in the guest "
                             f"(PATH {GUEST_PATH}); nothing was started")
    return found


def _exec_init(path: str, argv: tuple[str, ...], name: str) -> None:
    """Become the user's init: every signal back to its default and unblocked (a helper
    child ignores the stop signals, and an ignored disposition survives exec), no fd
    of ours left open, then exec."""
    os.closerange(3, 65536)
    for sig in range(1, signal.NSIG):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        os.execve(path, list(argv), init_env(name))
    finally:
        os._exit(127)


def _reaper(commit_r: int, prepared: confine.Prepared | None = None, name: str = "",
            init: tuple[str, ...] = (), proc_fd: int = -1) -> None:
    """PID 1 of a guest's pid namespace: mount /proc, then reap; or, with `init` (create
    --init), exec the user's init once the creator committed.

    It exists only to keep the pid namespace alive (a pid namespace whose init has exited
    accepts no new processes) and to reap orphans, as an init must.

    It is started with Child.start by the guest's child, reports ready once /proc is
    mounted (a failure reaches the creator as the guest child's exception) and goes on when
    released. It outlives the child that forked it, so until the create has bound the
    guest's namespace files it waits on commit_r, whose write end only the creating process holds:
    a byte means "bound, stay"; EOF means the creator died (killed midway), and the reaper
    exits, so no process is left that nothing records and `destroy` could not find.
    """
    os.setsid()
    # ps shows what it is: comm is 15 bytes at most, the command line says whose it is
    sc.set_process_name(REAPER_COMM)
    own_proc_only(proc_fd)
    sc.set_cmdline([REAPER_ARGV0, name] if name else [REAPER_ARGV0])   # reads /proc/self
    if proc_fd >= 0:
        os.close(proc_fd)       # the host's /proc: never into the guest
    path = _resolve_init(init) if init else ""
    # Confined like every process mirrormount starts in the guest (kernel/confine.py):
    # guest processes could otherwise reach an unconfined PID 1 (ptrace, /proc/1/mem).
    if prepared is not None:
        prepared.enforce()
    child.report_ready()
    # Hold nothing of the caller's: an inherited pipe would keep `$(mirrormount create)` waiting.
    try:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    except OSError:
        # a rootfs without /dev: closed then, rather than kept open
        for fd in (0, 1, 2):
            try:
                os.close(fd)
            except OSError:
                pass
    if os.read(commit_r, 1) != b"c":
        os._exit(0)      # the creator is gone before binding us: leave nothing behind
    if init:
        child.close_channel()
        _exec_init(path, init, name)
    os.closerange(3, 65536)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
    while True:
        sig = signal.sigwaitinfo({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
        if sig.si_signo in (signal.SIGTERM, signal.SIGINT):
            os._exit(0)  # the kernel then kills everything left in the namespace
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break


def preload(hostname: bool, init: bool) -> None:
    """Import, in the host's view, what a child will import once it stands in a guest's
    root: after pivot_root (or setns into the guest's mount namespace) `import` searches the
    guest's filesystem, where a busybox rootfs has no Python at all. socket for
    sethostname, shutil for _resolve_init; both kept off the CLI's start-up otherwise."""
    if hostname:
        import socket  # noqa: F401
    if init:
        import shutil  # noqa: F401


def _guest_child(op: SpawnGuest, commit_r: int,
                 prepared: confine.Prepared | None = None) -> None:
    preload(bool(op.hostname), bool(op.init))
    if op.cgroup_state:
        # Before the unshare: the new cgroup namespace is rooted at the cgroup we are in.
        from . import cgroup
        where = cgroup.guest_dir(op.cgroup_state, op.name)
        if where is not None and os.path.isdir(where):
            cgroup.join(where)
    # Copy the mirror before leaving the host's namespace: a detached tree whose mounts are
    # peers of the mirror's, which is what makes the guest and BASE/NAME one tree.
    tree = sc.open_tree(op.mirror, sc.OPEN_TREE_CLONE | sc.AT_RECURSIVE)
    # Another guest's pins, opened while STATE is still in view (composition, --join).
    joined = {kind: os.open(pin, os.O_RDONLY | os.O_CLOEXEC) for kind, pin in op.joins}
    nursery = os.open(op.nursery, os.O_RDONLY | os.O_CLOEXEC)
    sc.setns(nursery, sc.CLONE_NEWNS, op.nursery)
    os.close(nursery)
    # a copy of the nursery: one private tmpfs, nothing of the host
    sc.unshare(clone_flags(k for k in op.kinds if k not in joined))
    for kind, fd in joined.items():
        sc.setns(fd, clone_flags([kind]), f"{kind} of {dict(op.joins)[kind]}")
        os.close(fd)
    sc.move_mount(tree, "", sc.AT_FDCWD, NEWROOT, sc.MOVE_MOUNT_F_EMPTY_PATH,
                  f"{op.mirror} (detached copy)")
    os.close(tree)
    old = f"{NEWROOT}/{op.put_old}"
    # pivot_root refuses a put_old on a shared mount, and every mount of the mirror is shared.
    # A self-bind of an existing directory, made private, is a put_old that writes nothing to
    # the rootfs. The bind's parent is shared, so it shows up in BASE/NAME for a moment.
    sc.mount(old, old, None, sc.MS_BIND)
    sc.mount(None, old, None, sc.MS_PRIVATE)
    os.chdir(NEWROOT)
    sc.pivot_root(".", op.put_old)
    os.chdir("/")
    put_old = f"/{op.put_old}"
    # The old root (the nursery's tmpfs) must not propagate its detach anywhere (findings §3).
    sc.mount(None, put_old, None, sc.MS_REC | sc.MS_PRIVATE)
    sc.umount2(put_old, sc.MNT_DETACH)
    # Now the self-bind itself. Its parent is shared, so this umount also removes its copy
    # from BASE/NAME on the host.
    sc.umount2(put_old, 0)
    if op.hostname:
        import socket       # from sys.modules: preload imported it before pivot_root
        socket.sethostname(op.hostname)
    reaper = 0
    if "pid" in op.kinds:
        # PID 1 of the new pid namespace
        pid1 = Child.start(_reaper, commit_r, prepared, op.name, op.init)
        pid1.ready()      # /proc is mounted; or the reaper's exception, raised here
        pid1.release()    # it goes on to wait for the commit; nobody here waits for it
        reaper = pid1.pid
    child.report_ready([str(reaper)])  # stay until the parent has bound our namespace files


def build_and_hold(body: Callable[[], None], hold: Callable[[int, list[str]], T],
                   undo: Callable[[], None], cpu_hint: str | None = None) -> tuple[T, int]:
    """Start a child that builds namespaces (body calls child.report_ready(words), which
    waits), let the parent hold them with nsfs binds (hold(pid, words)), then let the child
    go (release, and its result: an exception it raised after all is raised here).

    kernel-findings §6, and seen here on the first create in a fresh sandbox: binding a mount
    namespace's nsfs file from a non-initial namespace can fail with EINVAL, because the
    kernel's loop check compares namespace ids that are not ordered across CPUs. We then
    throw that namespace away (undo) and build a fresh one on the next CPU, whose ids come
    from another range. Ids only grow on a given CPU, so the CPU that worked once keeps
    working: it is remembered in the file cpu_hint and tried first next time (the benchmark
    saw a second attempt on ~30% of creates without it). Returns hold's result and the
    number of attempts.
    """
    cpus = sorted(os.sched_getaffinity(0))
    hinted = _read_hint(cpu_hint)
    if hinted in cpus:
        cpus.remove(hinted)
        cpus.insert(0, hinted)
    max_attempts = 4 * len(cpus) + 2
    for attempt in range(max_attempts):
        cpu = cpus[attempt % len(cpus)]
        proc = Child.start(body, cpu=cpu)
        try:
            words = proc.ready()      # the child's exception, if it failed, is raised here
            try:
                result = hold(proc.pid, list(words))
                proc.release()
                proc.result()
            except BaseException as exc:
                # Whatever went wrong (a kernel error, Ctrl-C, an injected fault), what this
                # attempt bound is released: the caller's rollback never saw it.
                undo()
                if isinstance(exc, OSError) and exc.errno == errno.EINVAL \
                        and attempt + 1 < max_attempts:
                    continue
                raise
            if cpu != hinted:
                _write_hint(cpu_hint, cpu)
            return result, attempt + 1
        finally:
            proc.close()  # release it, and kill and reap it if it is still there
    raise AssertionError("unreachable")


def _read_hint(path: str | None) -> int | None:
    try:
        with open(path or "", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _write_hint(path: str | None, cpu: int) -> None:
    if path:
        try:
            with open(path, "w", encoding="ascii") as f:
                f.write(f"{cpu}\n")
        except OSError:
            pass  # only a hint


def spawn_guest(op: SpawnGuest, checkpoint: Callable[[int], None] = lambda m: None
                ) -> Spawned:
    """Build the guest's namespaces in a child and bind them under op.ns_dir.

    checkpoint(M) marks the points a kill may hit inside this step: 1 once the namespaces
    (and the reaper) exist and nothing is bound, 2.. after each nsfs bind, and the last one
    after the reaper was told to stay (commit)."""
    bound: list[str] = []
    reaper = [0]
    # Built here, in the host's view (libseccomp lives here; the rootfs may have none), and
    # enforced by the reaper, which inherits it across the forks.
    prepared = (confine.prepare(op.confine == "mirror", cap_numbers(op.drop_caps))
                if "pid" in op.kinds else None)
    # Only this process holds commit_w: the reaper exits on EOF unless told to stay.
    commit_r, commit_w = os.pipe2(os.O_CLOEXEC)

    def body() -> None:
        os.close(commit_w)
        _guest_child(op, commit_r, prepared)

    def hold(pid: int, words: list[str]) -> int:
        reaper[0] = int(words[0])
        checkpoint(1)
        # mnt first: it is the one the kernel's loop check can refuse.
        for index, kind in enumerate(("mnt", *[k for k in op.kinds if k != "mnt"])):
            src = reaper[0] if kind == "pid" else pid
            holder = f"{op.ns_dir}/{kind}"
            if kind == "mnt":
                faults.nsfs_bind_fault()
            bind_ns_file(f"/proc/{src}/ns/{kind}", holder)
            bound.append(holder)
            checkpoint(2 + index)
        return reaper[0]

    def undo() -> None:
        while bound:
            release_ns_file(bound.pop())
        if reaper[0]:
            kill_and_wait(reaper[0])
            reaper[0] = 0

    try:
        pid1, attempts = build_and_hold(body, hold, undo, cpu_hint(op.nursery))
        if pid1:
            os.write(commit_w, b"c")
        checkpoint(len(op.kinds) + 2)
    except BaseException:
        undo()   # the executor registers its own undo only once this step has returned
        raise
    finally:
        os.close(commit_r)
        os.close(commit_w)
    return Spawned(pid1 or None, attempts)


def kill_and_wait(pid: int) -> None:
    """SIGKILL and wait until it is gone: a rollback must not leave even a zombie behind."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone([pid], 5.0)

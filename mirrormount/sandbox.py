"""A throwaway world for the demo and the privileged tests: new mount + pid namespaces whose `/`
is a fresh tmpfs holding read-only binds of the host's system directories.

Nothing done inside can reach the machine's own mounts: the very first step makes every mount
in the copied namespace private, and the host's tree is detached after pivot_root. When the
sandbox's PID 1 exits, the kernel kills every process left inside (guest reapers included) and
the mount namespace, with every mount and nsfs bind in it, goes away.

Usage:  python -m mirrormount.sandbox [--propagation private|rshared] [--hold | -- CMD...]
  --hold   print "ready" and keep the sandbox alive until stdin reaches EOF; enter it with
           `nsenter -t PID -m -p -r -w` where PID is the one printed (tests do this).

A guest made inside with its own cgroup (`create --ns cgroup`) has a directory in the
machine's cgroup hierarchy, which no namespace's end removes: the sandbox removes those of
its own guests as it ends.

Privilege: root (CAP_SYS_ADMIN).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from .kernel import syscalls as sc

# Host directories made visible, read-only, at the same path inside the sandbox.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt")
# Directories made visible read-write (the code under test and its virtualenv live there).
RUNTIME_DIRS = (sys.prefix, sys.base_prefix, str(Path(__file__).resolve().parents[1]))
# Built fresh inside the sandbox, so tests never write the host's copies.
SCRATCH_DIRS = ("/tmp", "/run", "/var/tmp", "/root", "/mnt", "/media", "/srv", "/home")


def _populate(root: str) -> None:
    for path in SYSTEM_DIRS:
        if not os.path.lexists(path):
            continue
        dest = root + path
        if os.path.islink(path):
            # merged-/usr systems: /bin -> usr/bin. Recreate the link, do not follow it.
            os.symlink(os.readlink(path), dest)
            continue
        os.makedirs(dest, exist_ok=True)
        sc.mount(path, dest, None, sc.MS_BIND | sc.MS_REC)
        # Read-only so that no test can change the host's /usr or /etc.
        sc.mount(None, dest, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY)
    # Scratch first: a repository or virtualenv under /tmp or /run (a CI checkout, say) must
    # be bound on top of the fresh tmpfs, not hidden beneath it.
    for path in SCRATCH_DIRS:
        os.makedirs(root + path, exist_ok=True)
    sc.mount("sandbox-tmp", root + "/tmp", "tmpfs", 0, "mode=1777")
    sc.mount("sandbox-run", root + "/run", "tmpfs", 0, "mode=755")
    for path in sorted({os.path.realpath(p) for p in RUNTIME_DIRS}):
        dest = root + path
        if os.path.ismount(dest) or not os.path.isdir(path):
            continue
        os.makedirs(dest, exist_ok=True)
        sc.mount(path, dest, None, sc.MS_BIND | sc.MS_REC)
    os.makedirs(root + "/dev", exist_ok=True)
    os.makedirs(root + "/sys", exist_ok=True)
    os.makedirs(root + "/proc", exist_ok=True)
    # /dev and /sys are the host's (loop devices are global anyway); /proc is this pid ns's own.
    sc.mount("/dev", root + "/dev", None, sc.MS_BIND | sc.MS_REC)
    sc.mount("/sys", root + "/sys", None, sc.MS_BIND | sc.MS_REC)
    sc.mount("proc", root + "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def build(propagation: str = "private") -> None:
    """Turn the calling process (PID 1 of a fresh pid ns, inside a fresh mount ns whose mounts
    are already private) into the sandbox: tmpfs root, binds, pivot_root, old root detached."""
    cwd = os.getcwd()
    root = "/tmp/.mirrormount-sandbox-root"
    os.makedirs(root, exist_ok=True)
    sc.mount("sandbox-root", root, "tmpfs", 0, "mode=755")
    _populate(root)
    os.makedirs(root + "/.oldroot", exist_ok=True)
    os.chdir(root)
    # root's parent and the old root are private (see main), so pivot_root accepts them.
    sc.pivot_root(".", ".oldroot")
    os.chdir("/")
    # The old root is private already; say so again before detaching, as the kernel would
    # otherwise propagate the detach into any peer (kernel-findings §3).
    sc.mount(None, "/.oldroot", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.umount2("/.oldroot", sc.MNT_DETACH)
    os.rmdir("/.oldroot")
    if propagation == "rshared":
        # What systemd does at boot: every mount shared. Fresh peer groups, private to us.
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_SHARED)
    elif propagation != "private":
        raise ValueError(f"unknown propagation {propagation!r}")
    try:
        os.chdir(cwd)  # keep the caller's working directory when it is visible inside
    except OSError:
        pass


def _reap_until(stop_fd: int | None, child: int | None) -> int:
    """PID 1's loop: reap every orphan; stop when stdin hits EOF or the main child exits."""
    status = 0
    if stop_fd is not None:
        os.set_blocking(stop_fd, False)
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, st = 0, 0
            if child is not None:
                return status
        if pid and pid == child:
            return os.waitstatus_to_exitcode(st)
        if pid:
            continue
        if stop_fd is not None:
            try:
                if os.read(stop_fd, 4096) == b"":
                    return 0
            except BlockingIOError:
                pass
        import select
        select.select([stop_fd] if stop_fd is not None else [], [], [], 0.05)


def run(propagation: str, argv: list[str] | None, hold: bool) -> int:
    """Create the sandbox and run argv in it (or hold it open). Returns an exit status."""
    # Both namespaces are new; the pid ns applies to our next child, which becomes PID 1.
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWPID)
    # First, before anything else: nothing we mount may ever propagate back to the host.
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    r, w = os.pipe()
    # PID 1 names, as it ends, its guests' cgroups: the cgroup hierarchy is the machine's,
    # and the kernel removes no directory there when the namespace dies.
    cgroups_r, cgroups_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.close(cgroups_r)
        try:
            sc.set_parent_death_signal(signal.SIGKILL)
            build(propagation)
            os.write(w, b"ok")
            os.close(w)
            if hold:
                code = _reap_until(0, None)
            else:
                assert argv
                child = os.fork()
                if child == 0:
                    try:
                        os.execvp(argv[0], argv)
                    except OSError as exc:
                        print(f"sandbox: {argv[0]}: {exc.strerror}", file=sys.stderr)
                        os._exit(127)
                code = _reap_until(None, child)
        except BaseException as exc:  # noqa: BLE001 - report and leave PID 1 cleanly
            print(f"sandbox: {exc}", file=sys.stderr)
            os._exit(1)
        _name_cgroups(cgroups_w)
        os._exit(code)
    os.close(w)
    os.close(cgroups_w)
    ok = os.read(r, 2) == b"ok"
    os.close(r)
    if hold and ok:
        print(f"ready {pid}", flush=True)
    # The outer process must not keep stdin: PID 1 watches it for EOF.
    if hold:
        os.close(0)
    _, st = os.waitpid(pid, 0)
    _remove_cgroups(cgroups_r)
    return os.waitstatus_to_exitcode(st) if ok else 1


def _name_cgroups(fd: int) -> None:
    """In PID 1, as it ends: the cgroups of the guests still in this sandbox (those of its
    STATE, /run/mirrormount: guest/cgroup.guest_dir names them after STATE's device), one
    path a line on fd. Never another STATE's: the host's guests, or another sandbox's."""
    paths: list[str] = []
    try:
        from .guest.cgroup import TOP, hierarchy
        state = "/run/mirrormount"
        root = hierarchy()
        if root and os.path.ismount(state):
            dev = os.stat(state).st_dev
            suffix = f".{os.major(dev)}-{os.minor(dev)}"
            top = f"{root}/{TOP}"
            paths = [f"{top}/{n}" for n in os.listdir(top) if n.endswith(suffix)]
    except OSError:
        paths = []
    try:
        os.write(fd, "".join(p + "\n" for p in paths).encode())
    except OSError:
        pass
    os.close(fd)


def _remove_cgroups(fd: int) -> None:
    """In the outer process, once PID 1 (and with it every process of the sandbox) is gone:
    rmdir the cgroups PID 1 named (guest/cgroup.remove waits while the last ones exit)."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    from .guest.cgroup import remove
    for path in data.decode().split():
        try:
            remove(path, wait=10.0)
        except OSError as exc:
            print(f"sandbox: could not remove cgroup {path}: {exc.strerror}", file=sys.stderr)


def main(args: list[str]) -> int:
    propagation, hold, argv = "private", False, None
    while args:
        a = args.pop(0)
        if a == "--propagation":
            propagation = args.pop(0)
        elif a == "--hold":
            hold = True
        elif a == "--":
            argv = args
            break
        elif a in ("-h", "--help"):
            print(__doc__.split("Usage:", 1)[1].split("Privilege:", 1)[0].join(
                ("usage:", "")).rstrip())
            return 0
        else:
            print(f"sandbox: unknown argument {a!r} (see --help)", file=sys.stderr)
            return 2
    if not hold and not argv:
        argv = [os.environ.get("SHELL", "/bin/sh")]
    return run(propagation, argv, hold)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

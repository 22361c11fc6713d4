"""A guest's own cgroup (cgroup v2), for a guest made with a cgroup namespace.

Where: ``HIERARCHY/mirrormount/NAME.MAJ-MIN``, HIERARCHY being the cgroup2 mount
(/sys/fs/cgroup, or /sys/fs/cgroup/unified on a systemd "hybrid" host). A place of its own
under the root, not under the caller's cgroup: the guest outlives the command that made it
(a login session's scope is killed at logout, with every cgroup below it), and every exec
must land in the same cgroup whoever runs it, as `systemd-run -M` lands in the machine's
unit and `nsenter -C` in the target's cgroup namespace. MAJ-MIN is the device of STATE's
own tmpfs (mirrormount mounts one per STATE; the kernel gives each a distinct anonymous
device): two STATEs on one machine (the vm-tests' sandboxes) each have their own `c1`, and
every verb can find the path again without a record field.

What joins it: the process that builds the guest's namespaces, before it unshares (so the
guest's cgroup namespace is rooted at this cgroup, and the guest sees itself at "/"), hence
the guest's reaper or init; and every command of exec and enter, before it enters
(nsexec). destroy removes it once the processes are gone (rmdir: cgroup-v2.rst, "a cgroup
which doesn't have any children or live processes can be destroyed by removing the
directory"). Where the hierarchy is missing or read-only, guests get no cgroup (create
works as before) and `doctor` says so.

Privilege: root (writes to the cgroup hierarchy).
"""
from __future__ import annotations

import errno
import os
import time

from ..kernel.mountquery import mounts_at

CANDIDATES = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
TOP = "mirrormount"


def hierarchy() -> str | None:
    """Where cgroup v2 is mounted (CANDIDATES, in order), or None."""
    table = mounts_at(CANDIDATES)
    for path in CANDIDATES:
        m = table.at(path)
        if m is not None and m.fstype == "cgroup2":
            return path
    return None


def unavailable() -> str | None:
    """Why guests cannot get a cgroup of their own here, or None when they can."""
    root = hierarchy()
    if root is None:
        return "no cgroup v2 hierarchy at /sys/fs/cgroup (nor at /sys/fs/cgroup/unified)"
    if not os.access(root, os.W_OK):
        return f"the cgroup v2 hierarchy at {root} is not writable (read-only?)"
    return None


def guest_dir(state: str, name: str, root: str | None = None) -> str | None:
    """The guest's cgroup directory (whether it exists or not), or None without a usable
    hierarchy or STATE."""
    root = root or hierarchy()
    if root is None:
        return None
    try:
        dev = os.stat(state).st_dev
    except OSError:
        return None
    return f"{root}/{TOP}/{name}.{os.major(dev)}-{os.minor(dev)}"


def make(state: str, name: str) -> str | None:
    """Create the guest's cgroup; its path, or None when the hierarchy is unusable (the guest
    then has none). An existing one (a create killed after this step) is reused."""
    if unavailable() is not None:
        return None
    path = guest_dir(state, name)
    if path is None:
        return None
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def remove(path: str, wait: float = 5.0) -> None:
    """rmdir the guest's cgroup, and the shared top when it is left empty. EBUSY while its
    last processes finish exiting (a killed process leaves its cgroup at exit, a moment
    after the signal): retried for `wait` seconds. Gone already: nothing to do."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass       # other guests' cgroups (ENOTEMPTY), or another STATE's: left alone


def join(path: str) -> None:
    """Move this process into the cgroup ("0" is the writer, cgroup-v2.rst)."""
    fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)

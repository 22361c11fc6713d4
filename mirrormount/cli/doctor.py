"""`mirrormount doctor`: one line per check, each ok, warn or fail.

Checks the kernel and each syscall mirrormount relies on (MOVE_MOUNT_SET_GROUP for repair,
seccomp filters for --confine mirror), the propagation of /, the BASE and STATE set-up,
headroom under fs.mount-max, privilege, and the Python version.
Privilege: none required (it reports what it cannot check).
"""
from __future__ import annotations

import errno
import os
import platform
import sys

from ..record import record
from ..kernel import mountinfo
from ..kernel import syscalls as sc
from ..kernel.mountinfo import MountTable, is_under
from ..guest.model import Layout
from ..guest.owner import layout_problems, path_problems

CAP_SYS_ADMIN = 21


@record(frozen=True)
class Check:
    name: str
    level: str    # ok | warn | fail
    detail: str

    def to_json(self) -> dict:
        return {"check": self.name, "level": self.level, "detail": self.detail}


def _kernel_version() -> tuple[int, int]:
    parts = platform.release().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _probe(name: str, call) -> Check:
    """A syscall exists unless it answers ENOSYS; other errors mean it ran and refused."""
    try:
        call()
        return Check(name, "ok", "available")
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return Check(name, "fail", "not in this kernel (ENOSYS)")
        if exc.errno == errno.EPERM:
            return Check(name, "warn", "present, but refused here (EPERM): run as root")
        return Check(name, "ok", f"available ({errno.errorcode.get(exc.errno or 0, '?')} "
                                 "on a harmless probe)")


def _open_tree() -> None:
    os.close(sc.open_tree("/", 0))  # no clone: just a handle on the mount, harmless


def _openat2() -> None:
    os.close(sc.openat2(sc.AT_FDCWD, "/", sc.O_PATH, sc.RESOLVE_IN_ROOT))


def _mount_setattr() -> None:
    sc.mount_setattr("/", 0, recursive=False)  # nothing to set: a no-op when permitted


def _cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except OSError:
        pass
    return False


def _self_mount(table: MountTable, path: str, what: str) -> Check:
    m = table.at(path)
    if m is None:
        return Check(what, "ok", f"{path} is not set up (the first create mounts it, the "
                                 "last destroy takes it away)")
    if m.shared is not None or m.master is not None or not m.unbindable:
        return Check(what, "fail", f"{path} is {m.propagation}: it must be private and "
                                   "unbindable, or guests could see it")
    return Check(what, "ok", f"{path}: {m.fstype}, private, unbindable")


def _placement(layout: Layout, table: MountTable) -> list[Check]:
    """The same refusals as create's (guest/owner.py), as failed checks."""
    problems = [*path_problems(layout.base, "BASE"), *path_problems(layout.state, "STATE")]
    if not problems:
        problems = layout_problems(layout, table)
    if problems:
        return [Check("BASE/STATE", "fail", p) for p in problems]
    return [_self_mount(table, layout.base, "BASE"), _self_mount(table, layout.state, "STATE")]


def run_checks(layout: Layout) -> list[Check]:
    checks: list[Check] = []
    major, minor = _kernel_version()
    checks.append(Check("kernel", "ok" if (major, minor) >= (5, 12) else "fail",
                        f"{platform.release()} on {sc.MACHINE} (needs 5.12+ for "
                        "mount_setattr; open_tree/move_mount 5.2+, openat2 5.6+)"))
    if not sc.has_syscall("open_tree"):
        checks.append(Check("syscall table", "fail", f"no syscall numbers for {sc.MACHINE}"))
    else:
        checks.append(_probe("open_tree/move_mount", _open_tree))
        checks.append(_probe("mount_setattr", _mount_setattr))
        checks.append(_probe("openat2", _openat2))
        try:
            sc.statx("/", mask=sc.STATX_MNT_ID | sc.STATX_MNT_ID_UNIQUE)
            unique = (major, minor) >= (6, 8)
            checks.append(Check("statx mount ids", "ok",
                                "STATX_MNT_ID" + (" and STATX_MNT_ID_UNIQUE" if unique else "")))
        except OSError as exc:
            checks.append(Check("statx mount ids", "fail", exc.strerror or "statx failed"))
    table = MountTable.of(mountinfo.read())
    root = table.root()
    checks.append(Check("propagation of /", "ok",
                        f"{root.propagation} ({'as on systemd hosts' if root.shared else 'private host'}"
                        "; mirrors get fresh peer groups either way)"))
    checks.extend(_placement(layout, table))
    checks.extend(repair_and_confine_checks())
    checks.extend(interface_checks())
    checks.append(mount_max_check(layout, table))
    checks.append(cgroup_check())
    root_ok = os.geteuid() == 0 and _cap_sys_admin()
    checks.append(Check("privilege", "ok" if root_ok else "fail",
                        "root with CAP_SYS_ADMIN" if root_ok else
                        "not root / no CAP_SYS_ADMIN: every change needs it"))
    checks.append(python_check(tuple(sys.version_info[:3])))
    return checks


def interface_checks() -> list[Check]:
    """The newer mount interfaces (kernel/mountns.py interfaces): one check each, ok when
    the kernel has it, else a warn naming the fallback in use (which works, more slowly)."""
    from ..kernel.probes import interfaces
    try:
        found = interfaces()
    except OSError as exc:
        return [Check("newer interfaces", "warn", f"cannot probe: {exc.strerror}")]
    out = []
    for i in found:
        forced = i.forced_by
        why = (f"off: {forced}=1" if forced else i.note if i.note
               else "not in this kernel" if not i.available else "")
        out.append(Check(i.name, "ok" if i.available else "warn",
                         f"Linux {i.since}+, available: {'yes' if i.available else 'no'}; "
                         + (f"fallback in use: {i.fallback} ({why})" if why else
                            f"fallback {i.fallback} not needed")))
    return out


def cgroup_check() -> Check:
    """Whether a guest made with --ns cgroup gets a cgroup of its own (guest/cgroup.py)."""
    from ..guest.cgroup import hierarchy, unavailable
    why = unavailable()
    if why is None:
        return Check("cgroup v2", "ok", f"{hierarchy()} is writable: a guest with a cgroup "
                                        "namespace gets a cgroup of its own")
    return Check("cgroup v2", "warn", f"{why}: guests with a cgroup namespace get no cgroup "
                                      "of their own (create still works)")


def repair_and_confine_checks() -> list[Check]:
    """What `repair` and `--confine mirror` (the default) need from this kernel."""
    from ..guest.rejoin import set_group_available
    from ..kernel.confine import unavailable
    out = [Check("MOVE_MOUNT_SET_GROUP", "ok", "available: repair can re-join a broken mirror")
           if set_group_available() else
           Check("MOVE_MOUNT_SET_GROUP", "warn", "not available (Linux 5.15+): repair cannot "
                 "re-join a broken mirror; destroy and re-create instead")]
    why = unavailable()
    out.append(Check("seccomp", "ok", "filters and libseccomp available: guests are confined "
                                      "(--confine mirror, the default)")
               if why is None else
               Check("seccomp", "warn", f"{why}: create needs --confine none here"))
    return out


def mirror_cost(layout: Layout, table: MountTable) -> int:
    """Mounts one more mirror of / adds to the host's namespace: one copy of each host
    mount an rbind of / takes (BASE, STATE and unbindable mounts are pruned). The guest's
    copies live in its own namespace, under its own fs.mount-max."""
    return max(1, sum(1 for m in table if not m.unbindable
                      and not is_under(m.mountpoint, layout.base)
                      and not is_under(m.mountpoint, layout.state)))


def mount_max_check(layout: Layout, table: MountTable) -> Check:
    """fs.mount-max limits each mount namespace on its own (fs/namespace.c count_mounts:
    ns->mounts + pending against sysctl_mount_max), so what a mirror costs the host is the
    mounts it adds to the host's namespace, not those of the guest's namespace too."""
    try:
        with open("/proc/sys/fs/mount-max") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return Check("fs.mount-max", "warn", "cannot read /proc/sys/fs/mount-max")
    used = len(table)
    per_guest = mirror_cost(layout, table)
    room = max(limit - used, 0) // per_guest
    # Near the limit a create fails (ENOSPC) and rolls back: a warning, not a failure,
    # until the namespace is at the limit and nothing at all can be mounted.
    level = "ok" if room >= 100 else ("warn" if used < limit else "fail")
    return Check("fs.mount-max", level,
                 f"{used} of {limit} mounts used in this namespace; room for about {room} "
                 f"more guests of rootfs / (each mirror adds ~{per_guest} mounts here; the "
                 "limit counts each mount namespace on its own)")


MIN_PYTHON = (3, 11)   # tomllib (recipes); pyproject's requires-python says the same


def python_check(version: tuple[int, ...]) -> Check:
    """ok from 3.11 (the code imports tomllib), fail below."""
    ok = tuple(version[:2]) >= MIN_PYTHON
    return Check("python", "ok" if ok else "fail",
                 f"{'.'.join(str(v) for v in version[:3])} (needs 3.11+: tomllib for "
                 "recipes; setns/unshare via ctypes)")

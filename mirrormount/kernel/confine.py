"""Confinement of the processes mirrormount starts in a guest: a seccomp filter that keeps a
guest from cutting itself off its mirror, and capabilities dropped from the bounding set.

Why (the 2007 thread, ../shared/seed/): "a root process in container c1 could make his fs
unshared, but if that's deemed a problem presumably we can require an extra priv for that
operation which can be dropped for any vservers." There is no such privilege in Linux; a
seccomp filter is the nearest thing: it refuses the calls that change propagation away from
shared, and nothing else a guest does with mounts (kernel-findings §14, measured here).

The filter (libseccomp, through its Python bindings, PyPI's pyseccomp; seccomp_rule_add(3)):
- default: allow;
- mount(2) with MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE in its flags (arg 3), with or without
  MS_REC: EPERM. One rule per bit, a masked equality on ``bit | MS_NOUSER``: a call with
  bit 31 set either carries the old magic MS_MGC_VAL, whose top 16 bits the kernel strips
  (propagation bits included) before looking at the flags, or is refused by the kernel
  itself (fs/namespace.c path_mount), so it can change no propagation and stays allowed.
  New mounts, binds, moves, remounts, unmounts and MS_SHARED stay allowed;
- mount_setattr(2): ENOSYS, whole. It takes its propagation inside a struct passed by
  pointer, which seccomp cannot read (seccomp(2): "the filter cannot dereference pointers").
  ENOSYS rather than EPERM: it reads as "this kernel has no mount_setattr", and libmount
  (2.39+) and systemd then fall back to mount(2), where the rules above apply; EPERM would
  make them fail even an ordinary `mount -o remount,ro`;
- open_by_handle_at(2): EPERM. Since 6.18 nsfs has file handles: a root process can open
  ANY namespace from its id and inode number (both small counters, so guessable) and setns
  into it: another guest's mount namespace, to break that guest's mirror or to read its
  files. Measured here from a guest with its own pid namespace. Nothing a guest needs.

The filter is built in the caller (``prepare``), where libseccomp can be found (the guest's
rootfs may have none), and loaded by the process that is about to become the guest's
(``Prepared.enforce``): it is inherited across fork and exec and cannot be removed.

PR_SET_NO_NEW_PRIVS (prctl(2)) is set only when needed: loading a filter needs it, or
CAP_SYS_ADMIN, which mirrormount has; setting it would also stop setuid and file-capability
programs in the guest from gaining privilege.

Privilege: CAP_SYS_ADMIN to load without no_new_privs; CAP_SETPCAP to drop capabilities.
"""
from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

from ..record import record
from . import syscalls as sc
from ..errors import KernelError

# Each refused propagation change, and why it would break the mirror.
REFUSED_PROPAGATION = (
    (sc.MS_PRIVATE, "private: the mount leaves the mirror's peer group, nothing flows"),
    (sc.MS_SLAVE, "slave: the guest's mounts would no longer reach the host"),
    (sc.MS_UNBINDABLE, "unbindable: leaves the peer group as private does"),
)
REFUSED_ENOSYS = ("mount_setattr",)
REFUSED_EPERM = ("open_by_handle_at",)
# Compatible ABIs of the native one: without them in the filter, a 32-bit program in the
# guest would be killed on its first syscall (the default action for a foreign arch).
_COMPAT = {"x86_64": ("X86", "X32"), "aarch64": ("ARM",)}
CAP_SYS_ADMIN = 21
LIBSECCOMP = "libseccomp.so.2"      # the soname pyseccomp loads (Debian's libseccomp2)


def unavailable() -> str | None:
    """Why a filter cannot be loaded here, or None when it can: the kernel must have seccomp
    filters (the Seccomp line in /proc/self/status; actions_avail lists "errno") and the
    Python bindings must find libseccomp."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            if not any(line.startswith("Seccomp:") for line in f):
                return "this kernel has no seccomp (CONFIG_SECCOMP)"
        with open("/proc/sys/kernel/seccomp/actions_avail", encoding="ascii") as f:
            if "errno" not in f.read().split():
                return "this kernel's seccomp cannot return an errno"
    except OSError as exc:
        return f"cannot tell whether this kernel has seccomp filters ({exc.strerror})"
    # What importing pyseccomp checks (its module, then libseccomp through ctypes), without
    # importing it: pyseccomp finds its libraries with ctypes.util.find_library, which runs
    # `ldconfig -p` twice, and every create asks this (tens of ms on the CLI's hot path).
    # The filter itself is built, with the real import, only for a process started in a
    # guest (build_filter).
    from importlib.util import find_spec
    if find_spec("pyseccomp") is None:
        return "libseccomp or its Python bindings (pyseccomp) are missing: no module pyseccomp"
    if not sc.library_loads(LIBSECCOMP):
        return (f"libseccomp or its Python bindings (pyseccomp) are missing: {LIBSECCOMP} "
                "cannot be loaded")
    return None


def propagation_refused() -> bool:
    """Whether this process itself runs under a filter that refuses propagation changes (a
    mirrormount run inside a confined guest). Asked of the kernel only under a seccomp
    filter (the Seccomp line of /proc/self/status is 2), and harmlessly: make-private of a
    path that does not exist fails with ENOENT, unless a filter refuses it first (EPERM)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            filtered = any(line.split() == ["Seccomp:", "2"] for line in f)
    except OSError:
        return False
    if not filtered:
        return False
    try:
        sc.mount(None, "/proc/self/fd/-1/mirrormount-probe", None, sc.MS_PRIVATE)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return False


def _has_cap_sys_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYS_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def build_filter() -> Any:
    """The guest filter, not loaded (a pyseccomp.SyscallFilter)."""
    import pyseccomp as seccomp
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in _COMPAT.get(sc.MACHINE, ()):
        try:
            flt.add_arch(getattr(seccomp.Arch, name))
        except OSError:
            pass     # libseccomp without that ABI: native only
    for bit, _why in REFUSED_PROPAGATION:
        # flags & (bit | MS_NOUSER) == bit: the bit set, and no MS_MGC_VAL magic (see above)
        flt.add_rule(seccomp.ERRNO(errno.EPERM), "mount",
                     seccomp.Arg(3, seccomp.MASKED_EQ, bit | sc.MS_NOUSER, bit))
    for name in REFUSED_ENOSYS:
        flt.add_rule(seccomp.ERRNO(errno.ENOSYS), name)
    for name in REFUSED_EPERM:
        flt.add_rule(seccomp.ERRNO(errno.EPERM), name)
    # no_new_privs only when the load would otherwise be refused (see the module docstring)
    flt.set_attr(seccomp.Attr.CTL_NNP, 0 if _has_cap_sys_admin() else 1)
    return flt


@record
class Prepared:
    """What a guest process must run under, ready to be enforced after a fork."""

    seccomp_filter: Any = None             # a pyseccomp.SyscallFilter, or None
    drop: tuple[int, ...] = ()             # capability numbers

    def enforce(self) -> None:
        """In the process that is about to exec (or to serve as the guest's init): load the
        filter, then drop the capabilities. In that order: loading without no_new_privs
        needs CAP_SYS_ADMIN, which may be among those dropped."""
        if self.seccomp_filter is not None:
            try:
                self.seccomp_filter.load()
            except OSError as exc:
                raise KernelError(exc.errno or errno.EINVAL, "seccomp",
                                     "the guest's confinement filter") from None
        if self.drop:
            sc.drop_capabilities(list(self.drop))


def prepare(confine_filter: bool, drop: Sequence[int] = ()) -> Prepared | None:
    """Build what enforce() needs, in the host's view; None when there is nothing to do."""
    if not confine_filter and not drop:
        return None
    return Prepared(build_filter() if confine_filter else None, tuple(drop))


# exec and enter: nsexec's child calls enforce_armed() just before execve. The parent arms
# it first; the forked child inherits the armed value (and nothing else changes nsexec).
_armed: Prepared | None = None


@contextmanager
def armed(prepared: Prepared | None) -> Iterator[None]:
    """Make enforce_armed() enforce `prepared` in children forked inside this block."""
    global _armed
    before, _armed = _armed, prepared
    try:
        yield
    finally:
        _armed = before


def enforce_armed() -> None:
    """In a child about to exec into a guest: enforce what the parent armed, if anything."""
    if _armed is not None:
        _armed.enforce()

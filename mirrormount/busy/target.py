"""What a query is about (kernel-findings §9, step 1): the target as typed (TargetSpec,
parse_target: a host path, NAME:GUESTPATH, /dev/NODE or MAJ:MIN) and as resolved (Target: a
mount, with its device and fs root, or a whole device).

A guest path is resolved inside the guest, in a child forked with mirrormount.kernel.child
that walks into the guest's mount namespace, with the guest's / as root (RESOLVE_IN_ROOT), so
a symlink the guest made cannot lead elsewhere.

Privilege: root for guest paths (setns); host paths and devices need none.
"""
from __future__ import annotations

import errno
import os
import posixpath
import re
import stat

from ..record import record
from ..errors import UsageError
from ..kernel import syscalls as sc
from ..kernel.child import run
from ..kernel.mountinfo import MountTable, is_under
from ..guest.model import is_valid_name
from ..guest.nsexec import read_own_mountinfo
from .devices import block_device_of
from .world import World, in_ns, stat_key

_MAJMIN = re.compile(r"(\d+):(\d+)")


# ============================================================================ parsing
@record(frozen=True)
class TargetSpec:
    """What the user typed, classified without touching the system."""

    text: str
    kind: str                        # path | guest | majmin
    path: str | None = None          # host path, or the guest path for kind == guest
    name: str | None = None          # guest name
    major: int | None = None
    minor: int | None = None


def parse_target(text: str) -> TargetSpec:
    """Classify TARGET: a host path, NAME:GUESTPATH, or MAJ:MIN. A device node is a host path
    here; resolve() recognises it by its file type."""
    if not text:
        raise UsageError("empty target: give a host path, NAME:GUESTPATH, /dev/NODE or MAJ:MIN")
    m = _MAJMIN.fullmatch(text)
    if m:
        return TargetSpec(text, "majmin", major=int(m.group(1)), minor=int(m.group(2)))
    if not text.startswith("/") and ":" in text:
        name, _, gpath = text.partition(":")
        if not is_valid_name(name):
            raise UsageError(f"bad target {text!r}: {name!r} is not a guest name")
        if not gpath.startswith("/"):
            raise UsageError(f"bad target {text!r}: the guest path must be absolute "
                             f"(NAME:/path)")
        return TargetSpec(text, "guest", path=posixpath.normpath(gpath), name=name)
    return TargetSpec(text, "path", path=text)


# ============================================================================ targets
@record(frozen=True)
class Target:
    """What a query is about: a mount (its device and fs root), or a whole device."""

    spec: str
    major: int
    minor: int
    root: str | None = None          # fs root to match; None: any (device targets)
    mount_id: int | None = None      # the mount itself; None: device or residue query
    guest: str | None = None
    guest_path: str | None = None
    fstype: str = ""
    source: str = ""
    residue: bool = False            # after a lazy umount: every surviving copy is a leak

    @property
    def dev(self) -> tuple[int, int]:
        return self.major, self.minor

    @property
    def mode(self) -> str:
        if self.residue:
            return "residue"
        return "mount" if self.mount_id is not None else "device"


def _resolve_in_guest(proc_fd: int, guest_path: str,
                      probes: list[str]) -> tuple[str, int, dict]:
    """In a child inside the guest: its mountinfo, the mount id of guest_path (resolved with
    the guest's / as root, so a symlink the guest made cannot lead elsewhere), and the probe
    paths as the guest sees them."""
    text = read_own_mountinfo(proc_fd)
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pfd = sc.openat2(root, guest_path.lstrip("/") or ".", sc.O_PATH,
                         sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(root)
    try:
        st = sc.statx("", pfd, sc.AT_EMPTY_PATH)
    finally:
        os.close(pfd)
    return text, st.mnt_id, {p: stat_key(p) for p in probes}


# errnos meaning "the path typed names nothing usable": bad input (exit 2). Any other errno
# (EPERM from setns, EACCES, EIO, ...) is a real failure and stays an OSError (exit 1).
_BAD_PATH = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG})


def _bad_path(exc: OSError, what: str) -> Exception:
    """The exception to raise for a target path that failed to resolve with `exc`."""
    if exc.errno in _BAD_PATH:
        return UsageError(f"{what}: {os.strerror(exc.errno or 0)}")
    return exc


def resolve(spec: TargetSpec, world: World) -> Target:
    """Turn a parsed target into a mount or a device. UsageError (exit 2) when it names
    nothing: a missing path, an unknown guest, a file that is neither."""
    if spec.kind == "majmin":
        assert spec.major is not None and spec.minor is not None
        return _device_target(spec.text, spec.major, spec.minor, world)
    if spec.kind == "guest":
        assert spec.name is not None and spec.path is not None
        ino = next((i for i, g in world.guest_by_mnt.items() if g == spec.name), None)
        if ino is None:
            raise UsageError(f"no such guest (or its mount namespace is not held): {spec.name}")
        v = world.views[ino]
        try:
            text, mnt_id, probes = run(in_ns(v.chain, _resolve_in_guest), world.proc_fd,
                                       spec.path, world.probes)
        except OSError as exc:
            raise _bad_path(exc, f"{spec.path} in {spec.name}") from None
        v.table = MountTable.parse(text)
        v.probes = probes
        m = v.table.by_id.get(mnt_id)
        if m is None:
            raise UsageError(f"{spec.path} in {spec.name} lies on no mount of the guest")
        return Target(spec.text, m.major, m.minor, m.root, m.mount_id, spec.name, spec.path,
                      m.fstype, m.source)
    assert spec.path is not None
    path = os.path.abspath(spec.path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _bad_path(exc, spec.text) from None
    if stat.S_ISBLK(st.st_mode):
        return _device_target(spec.text, os.major(st.st_rdev), os.minor(st.st_rdev), world)
    if stat.S_ISCHR(st.st_mode):
        raise UsageError(f"{spec.text} is a character device, not a block device or a path")
    own = world.views[world.own]
    assert own.table is not None
    try:
        mnt_id = sc.statx(path).mnt_id
    except OSError as exc:
        raise _bad_path(exc, spec.text) from None
    m = own.table.by_id.get(mnt_id)
    if m is None:
        # Reached through another namespace (e.g. /proc/PID/root/...): a device question.
        return _device_target(spec.text, os.major(st.st_dev), os.minor(st.st_dev), world)
    guest, gpath = _guest_path_of(m.mountpoint, world)
    return Target(spec.text, m.major, m.minor, m.root, m.mount_id, guest, gpath, m.fstype,
                  m.source)


def _guest_path_of(host_path: str, world: World) -> tuple[str | None, str | None]:
    base = world.layout.base.rstrip("/")
    if not is_under(host_path, base) or host_path == base:
        return None, None
    rest = host_path[len(base) + 1:]
    name, _, tail = rest.partition("/")
    if name in world.rootfs:
        return name, "/" + tail
    return None, None


def _device_target(text: str, major: int, minor: int, world: World) -> Target:
    own = world.views[world.own]
    assert own.table is not None
    m = next((x for x in own.table if (x.major, x.minor) == (major, minor)), None)
    if m is None and major != 0:
        # btrfs shows an anonymous 0:N in mountinfo; its source still names the device
        m = next((x for x in own.table if x.major == 0 and x.source.startswith("/dev/")
                  and block_device_of(x.source) == (major, minor)), None)
    return Target(text, major, minor, fstype=m.fstype if m else "",
                  source=m.source if m else "")

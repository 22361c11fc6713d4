"""Composition and the lifecycle's checks on the create and exec paths: a guest that takes a
namespace from another (create --join KIND=GUEST, Serge's `ln /container_ns/vserver1/network
/container_ns/new_container/network` in the 2007 thread) holds a bind of that guest's nsfs
pin, so the namespace is one (same inode) and outlives either pin; and whether an init-based
guest's pid namespace still has its init.

Privilege: root (STATE is 0700).
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import UsageError
from ..kernel.mountquery import mounts_at
from ..kernel.procfs import ns_inode, parse_status, pids_by_mnt_ns, read_text
from .model import CreateRequest, Layout, parse_signal
from .state import GuestRecord, load


def check_create(layout: Layout, req: CreateRequest, no_such: Callable[[str], str]) -> None:
    """--init, --stop-signal and --join, before any change (UsageError): a joined guest
    must exist in this STATE and hold a pin of that kind (its own namespace, or one it
    joined); a kind is either the guest's own or joined; --hostname needs a uts namespace
    of the guest's own."""
    parse_signal(req.stop_signal)
    for kind, other in req.joins:
        if other == req.name:
            raise UsageError(f"--join {kind}={other}: a guest cannot join itself")
        if kind in req.kinds:
            raise UsageError(f"--join {kind}={other} and --ns {kind}: a {kind} namespace is "
                             "either the guest's own or joined, not both")
        if kind == "uts" and req.hostname:
            raise UsageError(f"--join uts={other} and --hostname: the hostname is the shared "
                             f"uts namespace's ({other}'s); give one or the other")
        theirs = load(layout, other)
        if theirs is None:
            raise UsageError(f"--join {kind}={other}: {no_such(other)}")
        pin = layout.ns_file(other, kind)
        held = mounts_at([pin]).at(pin)
        if kind not in theirs.kinds or held is None or held.fstype != "nsfs":
            raise UsageError(f"--join {kind}={other}: {other} has no {kind} namespace of "
                             f"its own (it has {','.join(theirs.kinds)}); hint: create "
                             f"{other} with --ns {kind}")


def init_alive(layout: Layout, rec: GuestRecord) -> bool:
    """Whether the pinned pid namespace still has its init: some process of the guest whose
    own pid namespace it is (one can only be there while its init lives), not a zombie."""
    ino = ns_inode(layout.ns_file(rec.name, "pid"))
    mnt = ns_inode(layout.ns_file(rec.name, "mnt"))
    if not ino or not mnt:
        return False
    for pid in pids_by_mnt_ns().get(mnt, []):
        if ns_inode(f"/proc/{pid}/ns/pid") == ino and \
                parse_status(read_text(f"/proc/{pid}/status") or "").get(
                    "State", "Z")[:1] != "Z":
            return True
    return False

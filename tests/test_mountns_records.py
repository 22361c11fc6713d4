"""kernel/mountns.py and kernel/mntevents.py, the parts that need no privilege: statmount's
answers turned into the Mount records mountinfo gives, fanotify event parsing, the table
diff the poll fallback uses, the switches, and the read-only calls on our own namespace
(listmount, statmount, NS_GET_MNTNS_ID need no root on this kernel for the caller's own
namespace; where the kernel refuses, the test checks the clean refusal instead)."""
from __future__ import annotations

import errno
import os
import struct

import pytest

from mirrormount.record import replace
from mirrormount.kernel import mntevents, mountns
from mirrormount.kernel import nsfs_calls as nc
from mirrormount.kernel import syscalls as sc
from mirrormount.kernel.mountinfo import MountTable, parse_line

LINES = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:2 - proc proc rw
24 22 0:30 / /srv/a ro,nosuid,noatime master:3 propagate_from:4 - tmpfs t rw
25 22 0:31 / /srv/b rw,nodiratime,relatime,nosymfollow unbindable - tmpfs u rw
"""


def sm_for(line: str, uid: int) -> sc.StatmountResult:
    """The statmount answer the kernel gives for the mount a mountinfo line shows."""
    m = parse_line(line)
    prop = ((sc.MS_SHARED if m.shared is not None else 0)
            | (sc.MS_SLAVE if m.master is not None else 0)
            | (sc.MS_UNBINDABLE if m.unbindable else 0)) or sc.MS_PRIVATE
    words = m.options.split(",")
    attr = (sc.MOUNT_ATTR_RDONLY if "ro" in words else 0) \
        | sum(bit for word, bit in (("nosuid", sc.MOUNT_ATTR_NOSUID),
                                    ("nodev", sc.MOUNT_ATTR_NODEV),
                                    ("noexec", sc.MOUNT_ATTR_NOEXEC),
                                    ("noatime", sc.MOUNT_ATTR_NOATIME),
                                    ("nodiratime", sc.MOUNT_ATTR_NODIRATIME),
                                    ("nosymfollow", sc.MOUNT_ATTR_NOSYMFOLLOW))
              if word in words)
    return sc.StatmountResult(m.mount_id, m.parent_id, m.major, m.minor, prop,
                              m.shared or 0, m.master or 0, m.fstype, m.root, m.mountpoint,
                              m.source, uid, 0, 0, attr, m.propagate_from or 0)


@pytest.mark.parametrize("line", LINES.splitlines())
def test_statmount_record_is_the_mountinfo_record(line):
    want = replace(parse_line(line), super_options="")
    assert mountns.mount_of(sm_for(line, 1 << 31)) == want


def test_options_order_is_show_mnt_opts():
    a = sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOEXEC | sc.MOUNT_ATTR_NOSUID \
        | sc.MOUNT_ATTR_NODIRATIME | sc.MOUNT_ATTR_NOATIME | mountns.MOUNT_ATTR_IDMAP
    assert mountns.mount_options(a) == "ro,nosuid,noexec,noatime,nodiratime,idmapped"
    assert mountns.mount_options(sc.MOUNT_ATTR_STRICTATIME) == "rw"
    assert mountns.mount_options(0) == "rw,relatime"


def test_propagate_from_only_when_it_differs():
    sm = replace(sm_for(LINES.splitlines()[2], 9), propagate_from=3)
    assert mountns.mount_of(sm).propagate_from is None


def fan_event(mask: int, mnt_id: int, kind: int = nc.FAN_EVENT_INFO_TYPE_MNT) -> bytes:
    info = struct.pack("=BBHI", kind, 0, 16, 0) + struct.pack("=Q", mnt_id)
    meta = struct.pack("=IBBHQii", 24 + len(info), 3, 0, 24, mask, -1, 1234)
    return meta + info


def test_parse_fanotify_events():
    data = (fan_event(nc.FAN_MNT_ATTACH, 7) + fan_event(nc.FAN_MNT_DETACH, 8)
            + fan_event(nc.FAN_MNT_ATTACH | nc.FAN_MNT_DETACH, 2**31 + 5))
    assert mntevents.parse_fanotify(data) == [
        (nc.FAN_MNT_ATTACH, 7), (nc.FAN_MNT_DETACH, 8),
        (nc.FAN_MNT_ATTACH | nc.FAN_MNT_DETACH, 2**31 + 5)]
    # A record of another type is skipped; a truncated event ends the parse.
    assert mntevents.parse_fanotify(fan_event(nc.FAN_MNT_ATTACH, 7, kind=6)) == \
        [(nc.FAN_MNT_ATTACH, 0)]
    assert mntevents.parse_fanotify(fan_event(nc.FAN_MNT_ATTACH, 7)[:20]) == []


def test_diff_attach_detach_move():
    before = MountTable.parse(LINES)
    moved = LINES.replace("/srv/a", "/srv/moved").replace("24 22", "24 25")
    after = MountTable.parse(moved.replace(LINES.splitlines()[3] + "\n", "")
                             + "26 22 0:40 / /mnt rw - tmpfs new rw\n")
    got = [(e.event, e.path, e.mount_id, e.old_path)
           for e in mntevents.diff("c1", before, after)]
    assert ("detach", "/srv/b", 25, None) in got
    assert ("attach", "/mnt", 26, None) in got
    assert ("move", "/srv/moved", 24, "/srv/a") in got
    assert len(got) == 3 and got[0][0] == "detach"
    ev = mntevents.diff("host", before, after)[-1]
    assert set(ev.to_json()) >= {"event", "guest", "path", "mount_id", "source", "fstype"}


def test_switches(monkeypatch):
    monkeypatch.delenv("MIRRORMOUNT_NO_LISTMOUNT", raising=False)
    monkeypatch.delenv("MIRRORMOUNT_NO_UNIQUE_ID", raising=False)
    assert not mountns.switched_off("LISTMOUNT")
    monkeypatch.setenv("MIRRORMOUNT_NO_UNIQUE_ID", "1")
    assert mountns.switched_off("LISTMOUNT") and mountns.switched_off("STATMOUNT")
    with pytest.raises(NotImplementedError):
        mountns.unique_mounts()
    assert mountns.unique_id("/") is None
    monkeypatch.setenv("MIRRORMOUNT_NO_NSWALK", "1")
    assert mountns.walk_refused() == "off: MIRRORMOUNT_NO_NSWALK=1"
    with pytest.raises(NotImplementedError):
        with mountns.walked():
            pass


def test_own_namespace_by_listmount_matches_mountinfo(monkeypatch):
    """Our own namespace: listmount + statmount against /proc/self/mountinfo, or, on a
    kernel without them, the clean NotImplementedError the callers fall back on."""
    for name in ("LISTMOUNT", "UNIQUE_ID"):
        monkeypatch.delenv(f"MIRRORMOUNT_NO_{name}", raising=False)
    try:
        new = mountns.unique_mounts()
    except NotImplementedError:
        return                                  # before 6.13: the fallback is all there is
    with open("/proc/self/mountinfo") as f:
        old = MountTable.parse(f.read())

    def key(ms):
        return sorted((m.mount_id, m.parent_id, m.dev, m.root, m.mountpoint, m.options,
                       m.fstype, m.source, m.shared, m.master) for m in ms)
    assert key(new.values()) == key(old)


def test_ns_id_ioctl_refuses_a_non_namespace_cleanly():
    fd = os.open("/", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            nc.mntns_id(fd)
        assert exc.value.errno in (errno.ENOTTY, errno.EINVAL)
    finally:
        os.close(fd)


def test_watch_line():
    from mirrormount.busy.mountwatch import render
    ev = mntevents.MountEvent("move", "c1", "/b", 24, "t", "tmpfs", "/a")
    assert render(ev) == "move    c1           /a -> /b t tmpfs 24"
    assert ev.to_json()["old_path"] == "/a"
    ev = mntevents.MountEvent("attach", "host", "/x", 3, "", "")
    assert render(ev).split() == ["attach", "host", "/x", "-", "-", "3"]
    assert "old_path" not in ev.to_json()

"""`repair`: a guest made with --confine none breaks its mirror; status says so; repair
re-joins every mount to its copy's peer group (MOVE_MOUNT_SET_GROUP) and copies what was
made on one side meanwhile; afterwards mounts flow both ways again. --dry-run changes
nothing; what cannot be healed is said, with exit 1. (Its rollback and a kill at every
step: vm-tests/test_verbs.py.)"""
from __future__ import annotations

import pytest

from test_confine import guest_sh, ok
from test_verbs import snapshot


def guest_mounts(sb, name="c1"):
    return guest_sh(sb, name, "cat /proc/self/mountinfo").stdout.split()


@pytest.mark.parametrize("breaker", ["mount --make-rprivate /", "mount --make-rslave /",
                                     "mount --make-rprivate / && mount --make-rshared /"])
@pytest.mark.parametrize("kinds", [(), ("--ns", "pid")])
def test_repair_heals_a_broken_mirror(sandbox, breaker, kinds):
    sb = sandbox
    ok(sb.mm("create", "c1", "--confine", "none", *kinds))
    guest_sh(sb, "c1", breaker)
    st = sb.mm("--json", "status", "c1")
    assert st.returncode == 1 and not st.json["mirror_intact"], st.stdout
    # made while broken: one side each
    guest_sh(sb, "c1", "mkdir -p /tmp/g && mount -t tmpfs while-g /tmp/g && "
                       "mkdir -p /tmp/g/in && mount -t tmpfs while-gin /tmp/g/in")
    sb.sh("mkdir -p /container/c1/srv/h && mount -t tmpfs while-h /container/c1/srv/h")
    assert "/container/c1/tmp/g" not in sb.mountpoints()
    # a slave still receives: only the guest's own mounts stay on its side
    receives = "rslave" in breaker
    assert ("/srv/h" in guest_mounts(sb)) is receives

    before = snapshot(sb)
    dry = ok(sb.mm("repair", "c1", "--dry-run"))
    assert "# step 1: " in dry.stdout and "MOVE_MOUNT_SET_GROUP" in dry.stdout
    assert "copied to the host side (2 mount(s))" in dry.stdout
    assert ("copied to the guest side (1 mount(s))" in dry.stdout) is not receives
    assert snapshot(sb) == before, "repair --dry-run changed something"

    r = ok(sb.mm("repair", "c1"))
    assert r.stdout.startswith("step 1: ") and "c1: mirror intact" in r.stdout
    st = ok(sb.mm("--json", "status", "c1")).json
    assert st["mirror_intact"] and st["problems"] == [] and \
        st["mounts_host"] == st["mounts_guest"], st
    # what was made while broken is on both sides now, once each
    host = sb.mountpoints()
    assert host.count("/container/c1/tmp/g") == 1 and "/container/c1/tmp/g/in" in host
    mine = guest_mounts(sb)
    assert mine.count("/srv/h") == 1
    # and new mounts flow both ways again
    guest_sh(sb, "c1", "mkdir -p /srv/after && mount -t tmpfs after-g /srv/after")
    assert "/container/c1/srv/after" in sb.mountpoints()
    sb.sh("mkdir -p /container/c1/tmp/after && mount -t tmpfs after-h /container/c1/tmp/after")
    assert "/tmp/after" in guest_mounts(sb)
    # an unmount too, from either side
    guest_sh(sb, "c1", "umount /srv/h")
    assert "/container/c1/srv/h" not in sb.mountpoints()
    # nothing left to do
    again = ok(sb.mm("--json", "repair", "c1")).json
    assert again["steps"] == [] and again["mirror_intact"] is True


def test_an_intact_mirror_needs_no_repair(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1"))
    before = sb.mountinfo()
    r = ok(sb.mm("repair", "c1"))
    assert "nothing to re-join or copy" in r.stdout and "c1: mirror intact" in r.stdout
    assert sb.mountinfo() == before


def test_without_move_mount_set_group_repair_says_so(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1", "--confine", "none"))
    guest_sh(sb, "c1", "mount --make-rprivate /")
    before = snapshot(sb)
    sb.env["MIRRORMOUNT_NO_SET_GROUP"] = "1"
    try:
        r = sb.mm("repair", "c1")
        doc = ok(sb.mm("--json", "doctor")).json
    finally:
        del sb.env["MIRRORMOUNT_NO_SET_GROUP"]
    assert r.returncode == 1 and "MOVE_MOUNT_SET_GROUP" in r.stderr and "5.15" in r.stderr
    assert "nothing was changed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(sb) == before
    check = next(c for c in doc if c["check"] == "MOVE_MOUNT_SET_GROUP")
    assert check["level"] == "warn"


def test_what_repair_cannot_heal_is_said_and_exits_1(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1", "--confine", "none"))
    guest_sh(sb, "c1", "mount --make-rprivate / && mkdir -p /srv/d && mount -t tmpfs mine /srv/d")
    sb.sh("mkdir -p /container/c1/srv/d && mount -t tmpfs theirs /container/c1/srv/d")
    dry = sb.mm("repair", "c1", "--dry-run")
    assert dry.returncode == 1 and "# cannot heal: /srv/d: " in dry.stdout
    r = sb.mm("repair", "c1")
    # everything else healed; /srv/d named, with what to do
    assert r.returncode == 1 and "/srv/d" in r.stderr and "theirs" in r.stderr \
        and "mount the one to keep again" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert ok(sb.mm("--json", "status", "c1")).json["mirror_intact"] is True
    # as the message says: the mirror whole again, one unmount takes both sides' away ...
    guest_sh(sb, "c1", "umount /srv/d")
    assert "/container/c1/srv/d" not in sb.mountpoints() and "/srv/d" not in guest_mounts(sb)
    # ... and the one to keep is mounted again, on both sides at once
    ok(sb.mm("mount", "c1", "theirs", "/srv/d", "-t", "tmpfs"))
    assert "/container/c1/srv/d" in sb.mountpoints() and "theirs" in guest_mounts(sb)
    ok(sb.mm("repair", "c1"))


def test_repair_of_no_such_guest_is_a_usage_error(sandbox):
    r = sandbox.mm("repair", "nope")
    assert r.returncode == 2 and "no such guest" in r.stderr

"""Issue 3: `mount --guest-only`, the answer to the thread's "do you have some smart solution?".

A guest-only mount must leave the host mirror an empty directory, give host tasks nothing to
pin, survive a host camper sitting in the mirror, show up in list/status, and leave nothing
behind (no self-bind on either side) once unmounted. Real CLI, real kernel, loop devices made
here and always detached in a finally (they are global to the machine).
"""
from __future__ import annotations

import os

import pytest

from conftest import OwnLoops, q, wait_for

MIRROR = "/container/c1"


def create(sb, *args):
    r = sb.mm("create", *args)
    assert r.returncode == 0, r.stderr


def guest_sh(sb, script, check=True):
    # nsenter rather than `mirrormount exec`: the same namespace, without a Python start-up
    # per look (the guest has a mount namespace only).
    r = sb.run(["nsenter", "--mount=/run/mirrormount/c1/ns/mnt", "--", "/bin/sh", "-c", script])
    if check:
        assert r.returncode == 0, f"{script}: {r.stderr}{r.stdout}"
    return r


def guest_mountinfo(sb):
    return [line.split() for line in guest_sh(sb, "cat /proc/self/mountinfo").stdout.splitlines()]


def at(mountinfo, path):
    return [f for f in mountinfo if f[4] == path]


def majmin(dev):
    rdev = os.stat(dev).st_rdev   # /dev is the machine's own, inside the sandbox too
    return f"{os.major(rdev)}:{os.minor(rdev)}"


@pytest.fixture
def loop_ext4(sandbox):
    """An ext4 filesystem on a loop device of its own (image in the sandbox's /tmp),
    detached afterwards even if the test process is killed (OwnLoops' guardian). Still
    mounted somewhere (a failed test)? Then detaching only sets autoclear, and the device
    is freed when the sandbox's namespaces die with it."""
    own = OwnLoops()
    try:
        dev = sandbox.sh("truncate -s 16M /tmp/disk.img && mkfs.ext4 -q /tmp/disk.img && "
                         "losetup --find --show /tmp/disk.img").stdout.strip()
        assert dev.startswith("/dev/loop"), dev
        yield own.attached(dev)
    finally:
        own.close()


def camper(sb, path):
    """A host process whose working directory is `path`; returns (Popen, its pid)."""
    p = sb.popen(f"cd {q(path)} && echo $$ && exec sleep 300")
    pid = int(p.stdout.readline())
    assert wait_for(lambda: sb.sh(f"readlink /proc/{pid}/cwd", check=False).stdout.strip()
                    == path)
    return p, pid


def stop(sb, proc, pid):
    sb.sh(f"kill {pid}", check=False)
    proc.wait(timeout=10)
    proc.stdout.close()
    proc.stderr.close()


def test_guest_only_mount_is_invisible_and_unpinnable(sandbox, loop_ext4):
    sb, dev = sandbox, loop_ext4
    create(sb, "c1")
    sb.sh("mkdir -p /mnt/x")
    host_before = sb.mountinfo()

    r = sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4", "--guest-only")
    assert r.returncode == 0, r.stderr

    # The guest has it, and can use it.
    guest_sh(sb, "echo inside > /mnt/x/file && cat /mnt/x/file")
    mine = at(guest_mountinfo(sb), "/mnt/x")
    assert len(mine) == 1 and mine[0][2] == majmin(dev), mine   # the filesystem, no self-bind

    # The host has no trace of it: not the device, not a self-bind, only an empty directory.
    host = sb.mountinfo()
    assert not [f for f in host if f[2] == majmin(dev)]
    assert not at(host, f"{MIRROR}/mnt/x")
    assert len(host) == len(host_before)
    assert sb.sh(f"ls -A {MIRROR}/mnt/x").stdout == ""

    # A host camper in the mirror directory...
    proc, pid = camper(sb, f"{MIRROR}/mnt/x")
    try:
        # ...pins nothing of the device: fuser sees no user, the finder no host copy or pin.
        assert sb.run(["fuser", "-m", dev]).returncode == 1
        rep = sb.mm("busy", dev, "--json").json
        assert [c["guest"] for c in rep["copies"]] == ["c1"]
        assert rep["pins"] == [] and rep["busy"] is False

        # ...and cannot block the guest's umount.
        r = sb.mm("umount", "c1", "/mnt/x")
        assert r.returncode == 0, r.stderr
        assert not at(guest_mountinfo(sb), "/mnt/x")        # no leftover self-bind inside
        assert not at(sb.mountinfo(), f"{MIRROR}/mnt/x")    # nor outside
        assert len(sb.mountinfo()) == len(host_before)
    finally:
        stop(sb, proc, pid)

    # The control: a normal mount of the same device, and the same kind of camper, does block.
    assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0
    proc, pid = camper(sb, f"{MIRROR}/mnt/x")
    try:
        r = sb.mm("umount", "c1", "/mnt/x")
        assert r.returncode == 3, (r.stdout, r.stderr)
    finally:
        stop(sb, proc, pid)
    assert sb.mm("umount", "c1", "/mnt/x").returncode == 0


@pytest.mark.kernels
def test_guest_only_shows_in_list_and_status_and_goes_at_umount(sandbox):
    sb = sandbox
    create(sb, "c1")
    sb.sh("mkdir -p /mnt/t")
    r = sb.mm("mount", "c1", "scratch", "/mnt/t", "-t", "tmpfs", "-o", "size=1m",
              "--guest-only")
    assert r.returncode == 0, r.stderr

    [info] = sb.mm("list", "--json").json
    assert info["guest_only"] == ["/mnt/t"]
    st = sb.mm("status", "c1", "--json")
    assert st.returncode == 0, st.stdout + st.stderr
    assert st.json["guest_only"] == ["/mnt/t"]
    assert st.json["mirror_intact"] is True and st.json["problems"] == []

    # What the guest mounts beneath a guest-only mount stays in the guest too.
    guest_sh(sb, "mkdir /mnt/t/sub && mount -t tmpfs below /mnt/t/sub")
    assert not [p for p in sb.mountpoints() if p.startswith(f"{MIRROR}/mnt/t")]
    assert sb.mm("status", "c1", "--json").json["problems"] == []
    guest_sh(sb, "umount /mnt/t/sub")

    # A guest-only mount inside another one: its self-bind has no host copy to detach, so it
    # stays beneath (what a kernel without topper reparenting does everywhere) until umount.
    r = sb.mm("mount", "c1", "inner", "/mnt/t/sub", "-t", "tmpfs", "--guest-only")
    assert r.returncode == 0, r.stderr
    assert len(at(guest_mountinfo(sb), "/mnt/t/sub")) == 2          # self-bind + tmpfs
    assert sb.mm("list", "--json").json[0]["guest_only"] == ["/mnt/t", "/mnt/t/sub"]
    assert sb.mm("umount", "c1", "/mnt/t/sub").returncode == 0
    assert not at(guest_mountinfo(sb), "/mnt/t/sub")                # both gone
    assert sb.mm("list", "--json").json[0]["guest_only"] == ["/mnt/t"]

    assert sb.mm("umount", "c1", "/mnt/t").returncode == 0
    assert sb.mm("list", "--json").json[0]["guest_only"] == []
    assert sb.mm("status", "c1", "--json").json["guest_only"] == []
    assert not at(guest_mountinfo(sb), "/mnt/t")


def test_guest_only_bind_is_host_resolved_read_only_and_recorded_canonically(sandbox):
    sb = sandbox
    create(sb, "c1")
    # The source exists on the host only (STATE-like hidden place); the target is reached
    # through a symlink the guest sees, and is recorded under its real path.
    sb.sh("mkdir -p /srv/data /mnt/b && echo from-host > /srv/data/f && ln -s mnt/b /lnk")
    r = sb.mm("mount", "c1", "/srv/data", "/lnk", "--bind", "-o", "ro", "--guest-only")
    assert r.returncode == 0, r.stderr
    assert guest_sh(sb, "cat /mnt/b/f").stdout == "from-host\n"
    r = guest_sh(sb, "touch /mnt/b/new", check=False)                      # touch's own 1
    assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
    assert sb.sh(f"ls -A {MIRROR}/mnt/b").stdout == ""
    assert not at(sb.mountinfo(), f"{MIRROR}/mnt/b")
    assert sb.mm("list", "--json").json[0]["guest_only"] == ["/mnt/b"]

    assert sb.mm("umount", "c1", "/lnk").returncode == 0
    assert not at(guest_mountinfo(sb), "/mnt/b")
    assert sb.mm("list", "--json").json[0]["guest_only"] == []


def test_failed_guest_only_mount_leaves_nothing(sandbox):
    sb = sandbox
    create(sb, "c1")
    sb.sh("mkdir -p /mnt/x")
    host_before, guest_before = sb.mountinfo(), guest_mountinfo(sb)
    state_before = sb.sh("ls -A /run/mirrormount").stdout

    r = sb.mm("mount", "c1", "nothing", "/mnt/x", "-t", "no-such-fs", "--guest-only")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "mount" in r.stderr and "/mnt/x in c1" in r.stderr

    # a missing target is bad input: exit 2 (README), as for a normal mount
    r = sb.mm("mount", "c1", "scratch", "/no/such/dir", "-t", "tmpfs", "--guest-only")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr

    r = sb.mm("mount", "c1", "/no/such/source", "/mnt/x", "--bind", "--guest-only")
    assert r.returncode == 2, r.stderr

    r = sb.mm("mount", "c1", "scratch", "/", "-t", "tmpfs", "--guest-only")
    assert r.returncode == 2 and "guest's /" in r.stderr, r.stderr

    # A directory cannot cover a file: said plainly, before anything is mounted.
    sb.sh("touch /mnt/afile")
    r = sb.mm("mount", "c1", "scratch", "/mnt/afile", "-t", "tmpfs", "--guest-only")
    assert r.returncode == 2 and "cannot put a directory on /mnt/afile" in r.stderr, r.stderr

    assert sb.mountinfo() == host_before
    assert guest_mountinfo(sb) == guest_before
    assert sb.sh("ls -A /run/mirrormount").stdout == state_before    # no scratch dir left
    assert sb.mm("list", "--json").json[0]["guest_only"] == []


def test_an_interrupted_guest_only_mount_is_named_by_status_and_completed(sandbox):
    """A kill after the record marks the mount as pending, and before it is made (the tree
    of step 1 is detached and held only by the killed process's fd, so it goes with it):
    status says so, and the next plain call mounts; the end state is that of an
    uninterrupted call."""
    sb = sandbox
    create(sb, "c1")
    sb.sh("mkdir -p /mnt/x")
    host_before = sb.mountinfo()
    argv = ["mount", "c1", "hidden", "/mnt/x", "-t", "tmpfs", "--guest-only"]
    sb.env["MIRRORMOUNT_FAULT"] = "1:kill"          # the pending record is written
    try:
        assert sb.mm(*argv).returncode == -9
    finally:
        sb.env.pop("MIRRORMOUNT_FAULT")
    st = sb.mm("status", "c1")
    assert st.returncode == 1 and "/mnt/x was interrupted" in st.stdout + st.stderr, st

    r = sb.mm(*argv)
    assert r.returncode == 0, r.stderr
    assert sb.mountinfo() == host_before            # no self-bind left in the mirror
    assert [f[-2] for f in at(guest_mountinfo(sb), "/mnt/x")] == ["hidden"]
    assert sb.mm("list", "--json").json[0]["guest_only"] == ["/mnt/x"]
    assert sb.mm("status", "c1").returncode == 0
    assert sb.mm("umount", "c1", "/mnt/x").returncode == 0
    assert at(guest_mountinfo(sb), "/mnt/x") == []

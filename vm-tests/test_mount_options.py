"""Issue 4 ("Never harm the host", part 4): `mirrormount mount -o` speaks mount(8)'s options.

The four reported cases, fixed: `-t tmpfs -o noatime` mounts; `--bind -o ro,noatime` keeps
noatime; a file bound onto a directory, and a missing target, exit 2 with one line. Then each
option class is shown applied by the kernel, on both sides of the mirror (per-mount options in
/proc/self/mountinfo of the host and of the guest; superblock flags and filesystem data in the
super options); bad input exits 2 with one line and leaves the mount tables (targets and
propagation) and the files as they were; a target reached through a guest symlink is reported
where it really went. Real CLI, real kernel; every test runs with the sandbox's / private and
rshared.
"""
from __future__ import annotations

import pytest

MIRROR = "/container/c1"
HOLDER = "/run/mirrormount/c1/ns/mnt"


def create(sb):
    r = sb.mm("create", "c1")
    assert r.returncode == 0, r.stderr


def mount(sb, *args):
    r = sb.mm("mount", "c1", *args)
    assert r.returncode == 0, f"mount {args}: {r.stderr}"
    return r


def guest_sh(sb, script, check=True):
    r = sb.run(["nsenter", f"--mount={HOLDER}", "--", "/bin/sh", "-c", script])
    if check:
        assert r.returncode == 0, f"{script}: {r.stderr}{r.stdout}"
    return r


def parse(text):
    """mountinfo lines -> [{point, opts, tags, fstype, super}] (proc(5))."""
    out = []
    for line in text.splitlines():
        f = line.split()
        dash = f.index("-")
        out.append({"point": f[4], "opts": set(f[5].split(",")), "tags": f[6:dash],
                    "fstype": f[dash + 1], "super": set(f[dash + 3].split(","))})
    return out


def host_table(sb):
    return parse(sb.sh("cat /proc/self/mountinfo").stdout)


def guest_table(sb):
    return parse(guest_sh(sb, "cat /proc/self/mountinfo").stdout)


def top(table, point):
    """The mount a path shows: the last one mounted there."""
    found = [m for m in table if m["point"] == point]
    assert found, f"nothing mounted at {point}"
    return found[-1]


def both_sides(sb, path):
    """(the mirror's mount at BASE/c1/PATH, the guest's at PATH): one peer group."""
    host, guest = top(host_table(sb), MIRROR + path), top(guest_table(sb), path)
    shared = [t for t in host["tags"] if t.startswith("shared:")]
    assert shared and shared == [t for t in guest["tags"] if t.startswith("shared:")], \
        (host, guest)
    return host, guest


def one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("mirrormount: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert "propagation problem" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


# ----------------------------------------------------------------------------- the four reports
def test_reported_tmpfs_noatime_mounts_with_noatime_on_both_sides(sandbox):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /tmp/t")
    mount(sb, "scratch", "/tmp/t", "-t", "tmpfs", "-o", "noatime")
    for side in both_sides(sb, "/tmp/t"):
        assert "noatime" in side["opts"] and side["fstype"] == "tmpfs", side


def test_reported_bind_ro_noatime_keeps_noatime(sandbox):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /srv/src /tmp/d && echo hi > /srv/src/f")
    mount(sb, "/srv/src", "/tmp/d", "--bind", "-o", "ro,noatime")
    for side in both_sides(sb, "/tmp/d"):
        assert {"ro", "noatime"} <= side["opts"], side
    r = guest_sh(sb, "touch /tmp/d/new", check=False)
    assert r.returncode != 0 and "Read-only file system" in r.stderr


def test_reported_file_on_directory_and_missing_target_exit_2(sandbox):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /srv/src /tmp/d && echo hi > /srv/src/f && touch /tmp/afile")
    before = host_table(sb), guest_table(sb)
    one_line_exit_2(sb.mm("mount", "c1", "/srv/src/f", "/tmp/d", "--bind"),
                    "cannot put a file on /tmp/d in c1, which is a directory")
    one_line_exit_2(sb.mm("mount", "c1", "/srv/src", "/tmp/afile", "--bind"),
                    "cannot put a directory on /tmp/afile in c1, which is a file")
    one_line_exit_2(sb.mm("mount", "c1", "scratch", "/no/such/dir", "-t", "tmpfs"),
                    "target /no/such/dir in c1 does not exist")
    assert (host_table(sb), guest_table(sb)) == before


# ----------------------------------------------------------------------------- option classes
def test_per_mount_attributes_of_a_new_filesystem(sandbox):
    sb = sandbox
    create(sb)
    cases = {   # target: (-o, per-mount options expected, ... not expected)
        "/tmp/a": ("ro,nosuid,nodev,noexec", {"ro", "nosuid", "nodev", "noexec", "relatime"},
                   set()),
        "/tmp/b": ("nodiratime,nosymfollow,strictatime", {"rw", "nodiratime", "nosymfollow"},
                   {"relatime", "noatime"}),
        "/tmp/c": ("noatime,relatime,norelatime", {"rw"}, {"relatime", "noatime"}),  # strict
        "/tmp/d": ("strictatime,nostrictatime,exec,suid", {"relatime"}, {"noexec", "nosuid"}),
    }
    sb.sh("mkdir -p " + " ".join(cases))
    for path, (opts, want, unwanted) in cases.items():
        mount(sb, "fs" + path[-1], path, "-t", "tmpfs", "-o", opts)
        for side in both_sides(sb, path):
            assert want <= side["opts"] and not unwanted & side["opts"], (path, opts, side)
    # the kernel enforces them, in the guest
    assert "Read-only" in guest_sh(sb, "touch /tmp/a/x", check=False).stderr
    guest_sh(sb, "ln -s /etc/hostname /tmp/b/link")
    r = guest_sh(sb, "cat /tmp/b/link", check=False)
    assert r.returncode != 0 and "Too many levels of symbolic links" in r.stderr, r.stderr


@pytest.mark.kernels
def test_per_mount_attributes_of_a_bind_set_and_cleared(sandbox):
    sb = sandbox
    create(sb)
    # A source mount of the test's own that is ro,nosuid,nodev: "rw,suid,dev" must clear
    # those on the copy (mount_setattr attr_clr), "noexec,nodiratime" add to them.
    sb.sh("mkdir -p /srv/locked /tmp/open /tmp/strict && echo x > /srv/locked/f && "
          "mount --bind /srv/locked /srv/locked && "
          "mount -o remount,bind,ro,nosuid,nodev /srv/locked")
    mount(sb, "/srv/locked", "/tmp/open", "--bind", "-o", "rw,suid,dev,noexec,nodiratime")
    for side in both_sides(sb, "/tmp/open"):
        assert {"rw", "noexec", "nodiratime"} <= side["opts"], side
        assert not {"ro", "nosuid", "nodev"} & side["opts"], side
    guest_sh(sb, "echo written > /tmp/open/f")
    assert sb.sh("cat /srv/locked/f").stdout == "written\n"
    # ... and without options the copy keeps what its source mount has
    mount(sb, "/srv/locked", "/tmp/strict", "--bind", "-o", "nosymfollow,strictatime")
    for side in both_sides(sb, "/tmp/strict"):
        assert {"ro", "nosuid", "nodev", "nosymfollow"} <= side["opts"], side
        assert not {"relatime", "noatime"} & side["opts"], side


@pytest.mark.kernels
def test_superblock_flags_and_filesystem_data_of_a_new_filesystem(sandbox):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /tmp/s /tmp/r")
    mount(sb, "sbflags", "/tmp/s", "-t", "tmpfs",
          "-o", "sync,dirsync,lazytime,size=2m,mode=0751,nr_inodes=100,defaults,silent")
    for side in both_sides(sb, "/tmp/s"):
        assert {"sync", "dirsync", "lazytime", "size=2048k", "mode=751", "nr_inodes=100"} \
            <= side["super"], side
    # ro: the superblock and the mount, as mount(2)'s MS_RDONLY does
    mount(sb, "readonly", "/tmp/r", "-t", "tmpfs", "-o", "ro,size=1m,sync,async")
    for side in both_sides(sb, "/tmp/r"):
        assert "ro" in side["opts"] and "ro" in side["super"], side
        assert "sync" not in side["super"], side


def test_guest_only_mount_takes_the_same_options(sandbox):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /tmp/g /tmp/h /srv/src")
    mount(sb, "hidden", "/tmp/g", "-t", "tmpfs", "-o", "noatime,nodev,size=1m", "--guest-only")
    mine = top(guest_table(sb), "/tmp/g")
    assert {"noatime", "nodev"} <= mine["opts"] and "size=1024k" in mine["super"], mine
    mount(sb, "/srv/src", "/tmp/h", "--bind", "-o", "ro,nosymfollow", "--guest-only")
    assert {"ro", "nosymfollow"} <= top(guest_table(sb), "/tmp/h")["opts"]
    assert not [m for m in host_table(sb) if m["point"] in (f"{MIRROR}/tmp/g",
                                                            f"{MIRROR}/tmp/h")]


# ----------------------------------------------------------------------------- bad input
BAD = [  # (arguments after `mount c1`, words the one line must hold)
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "noatime,bogus"],
     ["'bogus'", "tmpfs: Unknown parameter 'bogus'"]),
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "size=lots"],
     ["'size=lots'", "tmpfs: Bad value for 'size'"]),
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "ro,shared"],
     ["'shared'", "mirrormount owns a guest mount's propagation: it is what makes the mirror"]),
    (["/srv/src", "/tmp/t", "--bind", "-o", "rprivate"], ["'rprivate'", "propagation"]),
    (["/srv/src", "/tmp/t", "--bind", "-o", "ro,size=1m"], ["unknown option 'size=1m'"]),
    (["/srv/src", "/tmp/t", "--bind", "-o", "sync"], ["'sync'", "filesystem itself"]),
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "iversion"], ["'iversion'"]),
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "loop"], ["'loop'", "losetup"]),
    (["scratch", "/tmp/afile", "-t", "tmpfs"],
     ["cannot put a directory on /tmp/afile in c1, which is a file"]),
    (["/srv/src/f", "/tmp/t", "--bind"], ["cannot put a file on /tmp/t in c1"]),
    (["scratch", "/tmp/gone/deeper", "-t", "tmpfs"], ["target /tmp/gone/deeper in c1"]),
    (["scratch", "/tmp/afile/below", "-t", "tmpfs"], ["target /tmp/afile/below in c1"]),
    (["/srv/nothing", "/tmp/t", "--bind"], ["bind source /srv/nothing does not exist"]),
    (["scratch", "/tmp/t"], ["-t TYPE"]),
    (["scratch", "/tmp/t", "-t", "tmpfs", "-o", "bogus", "--dry-run"], ["'bogus'"]),
]


@pytest.mark.parametrize("guest_only", [False, True], ids=["mirrored", "guest-only"])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(sandbox, guest_only):
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /tmp/t /srv/src && echo keep > /tmp/t/file && echo s > /srv/src/f && "
          "touch /tmp/afile")
    files = "ls -laR --time-style=+%s /tmp /srv /run/mirrormount /container/c1/tmp"

    def state():
        # every mount line whole (targets, ids, propagation tags), the record, the files
        return (sb.sh("cat /proc/self/mountinfo").stdout,
                guest_sh(sb, "cat /proc/self/mountinfo").stdout,
                sb.sh("cat /run/mirrormount/c1/guest.json").stdout, sb.sh(files).stdout)

    before = state()
    extra = ["--guest-only"] if guest_only else []
    for args, needles in BAD:
        one_line_exit_2(sb.mm("mount", "c1", *args, *extra), *needles)
        assert state() == before, f"mount {args} changed something"


# ----------------------------------------------------------------------------- where it went
@pytest.mark.parametrize("guest_only", [False, True], ids=["mirrored", "guest-only"])
def test_a_target_through_a_guest_symlink_reports_where_it_went(sandbox, guest_only):
    sb = sandbox
    create(sb)
    guest_sh(sb, "mkdir -p /run/x /run/y /tmp/plain && ln -sfn ../run /var/run")
    extra = ["--guest-only"] if guest_only else []
    r = mount(sb, "s1", "/var/run/x", "-t", "tmpfs", *extra)
    assert r.stdout == "mounted on /run/x in c1 (typed /var/run/x: a symlink in the guest)\n"
    assert top(guest_table(sb), "/run/x")["fstype"] == "tmpfs"
    r = mount(sb, "s2", "/var/run/y", "-t", "tmpfs", "--json", *extra)
    assert r.json == {"name": "c1", "source": "s2", "target": "/run/y", "typed": "/var/run/y",
                      "guest_only": guest_only, "options": ""}
    # the same path as typed: nothing to say
    assert mount(sb, "s3", "/tmp/plain", "-t", "tmpfs", *extra).stdout == ""
    # --dry-run shows it too
    dry = sb.mm("mount", "c1", "s4", "/var/run/x", "-t", "tmpfs", "--dry-run")
    assert dry.returncode == 0 and "typed /var/run/x: a symlink in the guest" in dry.stdout


# ----------------------------------------------------------------------------- propagation
def test_a_bind_never_ties_the_guest_to_the_hosts_peer_group(sandbox):
    """With / rshared, a clone of the host's / is a peer of it: attached as it was, the
    guest's mounts beneath the bind appeared in the host's /srv/data (measured before the
    fix). The copy is made private before it is attached: a fresh peer group with the
    guest's copy only."""
    sb = sandbox
    create(sb)
    sb.sh("mkdir -p /srv/data /mnt/b")
    mount(sb, "/srv/data", "/mnt/b", "--bind")
    host, guest = both_sides(sb, "/mnt/b")
    outside = {t for m in host_table(sb) if not m["point"].startswith(MIRROR)
               for t in m["tags"] if t.startswith("shared:")}
    assert not set(host["tags"]) & outside, (host, outside)
    guest_sh(sb, "mkdir -p /mnt/b/x && mount -t tmpfs guestfs /mnt/b/x")
    assert [m for m in host_table(sb) if m["point"] == f"{MIRROR}/mnt/b/x"]   # mirrored
    assert not [m for m in host_table(sb) if m["point"] == "/srv/data/x"]     # not leaked
    status = sb.mm("status", "c1", "--json")
    assert status.returncode == 0 and status.json["problems"] == [], status.stdout

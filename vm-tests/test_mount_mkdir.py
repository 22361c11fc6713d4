"""Issue 10 part 4: `mount --mkdir` makes TARGET inside the guest's root, as safely as the mount
resolves it, through the mirror and with --guest-only (and for a --bind); a missing target
without it exits 2 with a hint and changes nothing; a failure later in the mount leaves no
directory behind.

The guest's rootfs is /srv/g in the sandbox, so that the sandbox's own /etc (a read-only bind
of the machine's) is "the host's /etc" a guest symlink may point at: nothing may appear there.
"""
from __future__ import annotations

import sys

import pytest

ROOT = "/srv/g"
MODES = {"mirror": (), "guest-only": ("--guest-only",), "bind": ("--bind",)}


def guest(sb):
    # A small rootfs with the sandbox's /usr (a read-only bind) and /proc, so the guest has a
    # shell and findmnt.
    sb.sh(f"mkdir -p {ROOT}/mnt {ROOT}/tmp {ROOT}/usr {ROOT}/proc /tmp/src && "
          f"echo x > /tmp/src/file && mount --bind -o ro /usr {ROOT}/usr && "
          f"mount --bind /proc {ROOT}/proc && "
          f"for d in bin sbin lib lib64; do ln -s usr/$d {ROOT}/$d; done")
    r = sb.mm("create", "c1", "--rootfs", ROOT)
    assert r.returncode == 0, r.stderr


def mount(sb, mode, target, *extra, env=None):
    source = ("/tmp/src",) if mode == "bind" else ("scratch", "-t", "tmpfs")
    argv = ["mount", "c1", source[0], target, *source[1:], *MODES[mode], *extra]
    if env:
        return sb.run(["env", *[f"{k}={v}" for k, v in env.items()], sys.executable,
                       "-m", "mirrormount", *argv])
    return sb.mm(*argv)


def guest_sh(sb, script):
    r = sb.run(["nsenter", "--mount=/run/mirrormount/c1/ns/mnt", "--", "/bin/sh", "-c",
                script])
    return r


def tree(sb):
    """Every path under the guest's rootfs and the sandbox's /etc and /tmp, with its kind."""
    return sb.sh(f"find {ROOT} /etc /tmp -xdev -printf '%y %m %p\\n' 2>/dev/null | sort",
                 check=False).stdout


@pytest.mark.parametrize("mode", MODES)
def test_mkdir_makes_a_nested_target_with_mode_0755(sandbox, mode):
    guest(sandbox)
    r = mount(sandbox, mode, "/a/b/c", "--mkdir")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    # The mount is at the new directory, as the guest sees it.
    g = guest_sh(sandbox, "findmnt -n -o TARGET /a/b/c && stat -c '%a %F' /a /a/b /a/b/c")
    assert g.returncode == 0, g.stderr
    lines = g.stdout.splitlines()
    assert lines[0] == "/a/b/c"
    assert lines[1:3] == ["755 directory", "755 directory"]
    # Made in the guest's rootfs (the mirror's own filesystem), nowhere else.
    assert sandbox.sh(f"stat -c %a {ROOT}/a/b").stdout.strip() == "755"
    assert sandbox.sh("test ! -e /a").returncode == 0
    # Mirrored, or not, as the mode says.
    on_host = sandbox.sh("findmnt -n /container/c1/a/b/c", check=False).returncode == 0
    assert on_host == (mode != "guest-only")
    assert sandbox.mm("umount", "c1", "/a/b/c").returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_mkdir_under_an_existing_directory_and_on_an_existing_target(sandbox, mode):
    guest(sandbox)
    sandbox.sh(f"mkdir -p {ROOT}/srv/x")
    assert mount(sandbox, mode, "/srv/x/new", "--mkdir").returncode == 0
    # An existing target: --mkdir makes nothing and the mount goes ahead.
    assert mount(sandbox, mode, "/srv/x", "--mkdir").returncode == 0
    assert guest_sh(sandbox, "findmnt -n /srv/x").returncode == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("link", ["/etc", "../../../../etc", "/etc/mm-made"])
def test_a_symlink_pointing_out_of_the_guest_creates_nothing_outside(sandbox, mode, link):
    """esc -> /etc (absolute, relative with '..', or to a path below): resolved inside the
    guest's root, it leads to the guest's /etc, which does not exist: refused, exit 2."""
    guest(sandbox)
    sandbox.sh(f"ln -s {link} {ROOT}/esc")
    before, table = tree(sandbox), sandbox.mountinfo()
    r = mount(sandbox, mode, "/esc/mm-made/deeper", "--mkdir")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and "symlink" in r.stderr, r.stderr
    assert tree(sandbox) == before
    assert sandbox.sh("test ! -e /etc/mm-made").returncode == 0
    assert sandbox.mountinfo() == table


@pytest.mark.parametrize("mode", MODES)
def test_a_symlink_to_etc_is_followed_inside_the_guest(sandbox, mode):
    """When the guest has an /etc, esc -> /etc leads there: the directory is made in the
    guest's /etc, never the host's."""
    guest(sandbox)
    sandbox.sh(f"mkdir {ROOT}/etc && ln -s /etc {ROOT}/esc")
    r = mount(sandbox, mode, "/esc/mm-made", "--mkdir")
    assert r.returncode == 0, r.stderr
    assert sandbox.sh(f"test -d {ROOT}/etc/mm-made && test ! -e /etc/mm-made").returncode == 0
    assert guest_sh(sandbox, "findmnt -n /etc/mm-made").returncode == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_target_without_mkdir_exits_2_with_the_hint(sandbox, mode):
    guest(sandbox)
    before, table = tree(sandbox), sandbox.mountinfo()
    r = mount(sandbox, mode, "/a/b")
    assert r.returncode == 2
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert "does not exist" in r.stderr and "use --mkdir" in r.stderr, r.stderr
    assert (tree(sandbox), sandbox.mountinfo()) == (before, table)


@pytest.mark.parametrize("mode", MODES)
def test_bad_paths_to_make_are_refused(sandbox, mode):
    guest(sandbox)
    sandbox.sh(f"touch {ROOT}/file")
    before = tree(sandbox)
    for target in ("/file/x", "/new/../x", "/new/./x"):
        r = mount(sandbox, mode, target, "--mkdir")
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (target, r.stderr)
    assert tree(sandbox) == before


@pytest.mark.parametrize("mode", MODES)
def test_a_failure_later_in_the_mount_removes_the_directories_made(sandbox, mode):
    """Fault points after each step (the first is the mkdir): every directory made is gone
    again, and the mount table is as before."""
    guest(sandbox)
    sandbox.sh(f"mkdir {ROOT}/keep")
    before, table = tree(sandbox), sandbox.mountinfo()
    plan = sandbox.mm("mount", "c1", *(["/tmp/src"] if mode == "bind" else ["x", "-t", "tmpfs"]),
                      "/keep/a/b", *MODES[mode], "--mkdir", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "mkdir -p -m 0755" in plan.stdout
    steps = sum(1 for ln in plan.stdout.splitlines() if ln.startswith("# step "))
    assert steps >= 2
    for point in range(1, steps):      # after the last step, the mount is done
        r = mount(sandbox, mode, "/keep/a/b", "--mkdir",
                  env={"MIRRORMOUNT_FAULT": str(point)})
        assert r.returncode != 0, point
        assert tree(sandbox) == before, point
        assert sandbox.mountinfo() == table, point
    assert mount(sandbox, mode, "/keep/a/b", "--mkdir").returncode == 0

"""exec and enter: the environment (issue 14), --user, --wd, --env, --keep-env and options
stopping at the command (issue 8).

The guest `g0` has a rootfs of its own with its own /etc/passwd and /etc/group, so what the
command gets can only have come from the guest's files, not the host's.
"""
from __future__ import annotations

import sys

import pytest

MM = [sys.executable, "-m", "mirrormount"]
PASSWD = ("root:x:0:0:root:/guestroot:/bin/sh\n"
          "bob:x:1234:1234:Bob:/home/bob:/bin/nosuchshell\n"
          "malformed line\n")
GROUP = "root:x:0:\nbob:x:1234:\nstaff:x:50:alice,bob\n"


@pytest.fixture
def guest(sandbox):
    """g0: /usr bound in, /bin and /lib as symlinks into it, its own passwd and group."""
    sandbox.sh(
        "set -e; r=/srv/g0; mkdir -p $r/usr $r/etc $r/tmp $r/proc $r/guestroot $r/home/bob; "
        "mount --bind /usr $r/usr; for d in bin sbin lib lib64; do "
        "[ -e /$d ] && ln -s usr/$d $r/$d; done; "
        f"printf '{PASSWD}' > $r/etc/passwd; printf '{GROUP}' > $r/etc/group")
    r = sandbox.mm("create", "g0", "--rootfs", "/srv/g0")
    assert r.returncode == 0, r.stderr
    return sandbox


def env_of(r) -> dict[str, str]:
    assert r.returncode == 0, r.stderr
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


CALLER = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/host-home", "USER": "hostuser",
          "FOO": "bar"}


def caller(sb, *args: str, env: dict[str, str] | None = None):
    """The CLI started with exactly CALLER (no LANG, no LC_*: Python coerces the C locale
    and adds LC_CTYPE to its own environ, which must not reach the command)."""
    base = {**CALLER, "PYTHONPATH": sb.env["PYTHONPATH"], **(env or {})}
    return sb.run(["env", "-i", *(f"{k}={v}" for k, v in base.items()), *MM, *args])


def test_the_command_gets_the_callers_env_with_the_guests_passwd_and_markers(guest):
    got = env_of(caller(guest, "exec", "g0", "--", "env"))
    assert "LC_CTYPE" not in got and "LC_ALL" not in got and "LANG" not in got, got
    expect = {**CALLER, "PYTHONPATH": guest.env["PYTHONPATH"], "HOME": "/guestroot",
              "USER": "root", "LOGNAME": "root", "container": "mirrormount",
              "MIRRORMOUNT_GUEST": "g0"}
    assert got == expect


def test_keep_env_keeps_the_callers_env_as_it_is(guest):
    got = env_of(caller(guest, "exec", "--keep-env", "g0", "--", "env"))
    assert got == {**CALLER, "PYTHONPATH": guest.env["PYTHONPATH"]}
    got = env_of(caller(guest, "exec", "g0", "--keep-env", "--env", "A=1", "env"))
    assert got == {**CALLER, "PYTHONPATH": guest.env["PYTHONPATH"], "A": "1"}


def test_env_adds_in_order_and_wins(guest):
    got = env_of(caller(guest, "exec", "--env", "A=1", "g0", "--env", "HOME=/x",
                        "--env=B=two=2", "--", "env"))
    assert (got["A"], got["HOME"], got["B"]) == ("1", "/x", "two=2")
    r = guest.mm("exec", "g0", "--env", "novalue", "--", "true")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "NAME=VALUE" in r.stderr


def test_user_by_name_and_uid_from_the_guests_passwd_and_group(guest):
    r = guest.mm("exec", "g0", "--user", "bob", "--", "sh", "-c", "id -u; id -g; id -G")
    assert r.returncode == 0, r.stderr
    uid, gid, groups = r.stdout.split("\n")[:3]
    assert (uid, gid, sorted(groups.split())) == ("1234", "1234", ["1234", "50"])
    got = env_of(guest.mm("exec", "--user", "1234", "g0", "--", "env"))
    assert (got["HOME"], got["USER"], got["LOGNAME"]) == ("/home/bob", "bob", "bob")
    r = guest.mm("exec", "g0", "--user", "alice", "--", "true")
    assert r.returncode == 2 and "no such user" in r.stderr and r.stderr.count("\n") == 1


def test_wd_is_inside_the_guest(guest):
    r = guest.mm("exec", "g0", "--wd", "/home/bob", "--", "pwd")
    assert (r.returncode, r.stdout) == (0, "/home/bob\n"), r.stderr
    r = guest.mm("exec", "g0", "--wd", "/srv", "--", "pwd")     # the host has it; not g0
    assert r.returncode == 2 and "--wd /srv" in r.stderr and r.stderr.count("\n") == 1
    r = guest.mm("exec", "g0", "--wd", "relative", "--", "pwd")
    assert r.returncode == 2


def test_options_stop_at_the_command_and_the_status_passes_through(guest):
    r = guest.mm("exec", "g0", "ls", "--help")
    assert r.returncode == 0 and "Usage: ls" in r.stdout, r.stderr
    r = guest.mm("exec", "g0", "sh", "-c", "exit 42")
    assert r.returncode == 42
    r = guest.mm("exec", "g0", "--", "--user")         # after --, a command's word
    assert r.returncode == 127 and "--user" in r.stderr


def test_enter_sets_shell_to_the_shell_it_ran(guest):
    # the caller's $SHELL is not in the guest: /bin/sh runs, and says so
    r = guest.run(["env", "-i", *(f"{k}={v}" for k, v in CALLER.items()),
                   f"PYTHONPATH={guest.env['PYTHONPATH']}", "SHELL=/bin/nosuchshell", *MM,
                   "enter", "g0"], input='echo "SHELL=$SHELL"; echo "HOME=$HOME"\n')
    assert r.returncode == 0, r.stderr
    assert env_of(r) == {"SHELL": "/bin/sh", "HOME": "/guestroot"}
    r = guest.run([*MM, "enter", "g0", "--user", "bob"], input='echo "SHELL=$SHELL"; id -u\n')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["SHELL=/bin/sh", "1234"]

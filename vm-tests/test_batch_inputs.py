"""What a new user's trial found, each as a class, on real guests:

- a batch destroy orders its names itself: a guest that joined another's namespaces goes
  first, so the order given does not matter (with --dry-run too);
- a batch's names are all checked (exit 2, no such guest) before any other verdict (exit 3);
- a guest path (mount and umount TARGET, exec --wd, a recipe mount's target) must be
  absolute: exit 2, nothing changed;
- a stop that lands once a name is complete and reported (MIRRORMOUNT_FAULT=reported:stop,
  then Ctrl-C) ends the batch saying what was done, not as if it had been undone.
"""
from __future__ import annotations

import signal

from test_signals import snapshot, stop_at


def names(sb) -> list[str]:
    return sorted(g["name"] for g in sb.mm("--json", "list").json)


def test_destroy_in_any_order_of_a_guest_and_its_joiners(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1", "--ns", "net,uts").returncode == 0
    assert sb.mm("create", "c2", "--join", "net=c1").returncode == 0
    r = sb.mm("destroy", "c1")
    assert r.returncode == 3 and "c2 (net)" in r.stderr, r.stderr     # still refused alone
    for order in (("c1", "c2"), ("c2", "c1")):
        r = sb.mm("destroy", *order, "--dry-run", "-J")
        assert r.returncode == 0, (order, r.stderr)
        assert [p["name"] for p in r.json] == ["c2", "c1"]
    before = sb.mountinfo()
    r = sb.mm("destroy", "c1", "c2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["destroyed c2", "destroyed c1"]
    assert "c1" not in names(sb) and "c2" not in names(sb)
    assert len(sb.mountinfo()) < len(before)


def test_every_name_is_checked_before_any_verdict(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1", "--ns", "net").returncode == 0
    assert sb.mm("create", "c2", "--join", "net=c1").returncode == 0
    before = snapshot(sb)
    for argv in (["destroy", "c1", "nosuch"], ["destroy", "c1", "nosuch", "--dry-run"],
                 ["destroy", "nosuch", "c1"]):
        r = sb.mm(*argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert "no such guest" in r.stderr and "nosuch" in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    r = sb.mm("destroy", "c1", "bad/name")
    assert r.returncode == 2 and "bad/name" in r.stderr, r.stderr
    assert snapshot(sb) == before


def test_a_guest_path_must_be_absolute(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1").returncode == 0
    before = snapshot(sb)
    for argv in (["mount", "c1", "x", "rel", "-t", "tmpfs"],
                 ["mount", "c1", "x", "rel/y", "-t", "tmpfs", "--mkdir"],
                 ["mount", "c1", "x", "rel", "-t", "tmpfs", "--guest-only", "--mkdir"],
                 ["mount", "c1", "x", "rel", "-t", "tmpfs", "--dry-run"],
                 ["umount", "c1", "rel"], ["umount", "c1", "rel", "--dry-run"],
                 ["exec", "c1", "--wd", "tmp", "--", "true"]):
        r = sb.mm(*argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert r.stderr.endswith("give an absolute path inside the guest\n"), r.stderr
        assert len(r.stderr.splitlines()) == 1
    sb.sh("printf '[[mount]]\\nsource = \"s\"\\ntarget = \"rel\"\\ntype = \"tmpfs\"\\n' "
          "> /tmp/rel.toml")
    r = sb.mm("create", "c2", "--recipe", "/tmp/rel.toml")
    assert r.returncode == 2 and "give an absolute path inside the guest" in r.stderr
    assert snapshot(sb) == before
    assert sb.sh("ls /container/c1/rel 2>&1 || true").stdout.strip().endswith(
        "No such file or directory")


def test_a_stop_after_a_name_is_complete_says_what_was_done(sandbox):
    sb = sandbox
    code, out, err = stop_at(sb, ("create", "k1"), "reported:stop", [signal.SIGINT])
    assert (code, err) == (130, "mirrormount: interrupted; created: k1\n"), (code, err)
    assert out.startswith("created k1: ")
    assert names(sb) == ["k1"]
    # a batch: the stop after the first name ends it there, and says what was not done
    code, out, err = stop_at(sb, ("create", "k2", "k3"), "reported:stop", [signal.SIGINT])
    assert (code, err) == (130, "mirrormount: interrupted; created: k2; not created: k3\n")
    assert names(sb) == ["k1", "k2"]
    # the typer path says the same (a recipe's create is not the fast path)
    sb.sh("printf '[guest]\\n' > /tmp/plain.toml")
    code, out, err = stop_at(sb, ("create", "k4", "--recipe", "/tmp/plain.toml"),
                             "reported:stop", [signal.SIGINT])
    assert (code, err) == (130, "mirrormount: interrupted; created: k4\n"), (code, err)
    # destroy, likewise
    code, out, err = stop_at(sb, ("destroy", "k1", "k2"), "reported:stop", [signal.SIGINT])
    assert (code, err) == (130, "mirrormount: interrupted; destroyed: k1; "
                                "not destroyed: k2\n"), (code, err)
    code, out, err = stop_at(sb, ("destroy", "k2"), "reported:stop", [signal.SIGTERM])
    assert (code, err) == (143, "mirrormount: terminated; destroyed: k2\n"), (code, err)
    assert names(sb) == ["k4"]

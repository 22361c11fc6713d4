"""A guest's own cgroup (issue 14): a guest made with a cgroup namespace gets a cgroup v2
directory of its own (guest/cgroup.py), its reaper and every exec'd command are in it, its
cgroup namespace is rooted there (the guest sees "/", never "/.."), destroy removes it;
without a writable hierarchy, doctor warns once and create works without it. (The sandbox
fixture removes what a failed test leaves: cgroups are global to the machine.)"""
from __future__ import annotations

import sys

import pytest

from conftest import wait_for

HIER = (f"{sys.executable} -c 'from mirrormount.guest.cgroup import hierarchy; "
        "print(hierarchy())'")


def hierarchy(sb) -> str:
    root = sb.sh(HIER).stdout.strip()
    assert root.startswith("/sys/fs/cgroup"), root
    return root


def own_cgroups(sb, root: str) -> list[str]:
    return sb.sh(f"ls -d {root}/mirrormount/*.*-* 2>/dev/null || true").stdout.split()


@pytest.mark.parametrize("ns", ["cgroup", "cgroup,pid"])
def test_exec_lands_in_the_guests_own_cgroup(sandbox, ns):
    root = hierarchy(sandbox)
    assert sandbox.mm("create", "g1", "--ns", ns).returncode == 0
    [own] = own_cgroups(sandbox, root)
    assert own.startswith(f"{root}/mirrormount/g1.")
    # Seen from inside: the root of its own cgroup namespace (not "/..").
    r = sandbox.mm("exec", "g1", "--", "cat", "/proc/self/cgroup")
    assert r.returncode == 0 and "0::/\n" in r.stdout, (r.stdout, r.stderr)
    # Seen from the host: the guest's cgroup, with the command and (pid ns) the reaper in it.
    cli = sandbox.popen(f"{sys.executable} -m mirrormount exec g1 -- sh -c "
                        "'echo $$; exec sleep 30'")
    try:
        pid = cli.stdout.readline().strip()
        if "pid" in ns:   # $$ is the guest's pid: find the host's by the command
            pid = wait_for(lambda: sandbox.sh("pgrep -x sleep", check=False).stdout.strip())
        line = sandbox.sh(f"grep '^0::' /proc/{pid}/cgroup").stdout.strip()
        assert line == "0::" + own.removeprefix(root), line
        procs = sandbox.sh(f"cat {own}/cgroup.procs").stdout.split()
        assert pid in procs
        if "pid" in ns:
            reaper = sandbox.sh("pgrep -x mm-reaper").stdout.split()
            assert set(reaper) <= set(procs), (reaper, procs)
    finally:
        cli.kill()
        cli.communicate()
    assert sandbox.mm("destroy", "--force", "g1").returncode == 0
    assert own_cgroups(sandbox, root) == []


def test_a_guest_without_a_cgroup_namespace_gets_no_cgroup(sandbox):
    root = hierarchy(sandbox)
    assert sandbox.mm("create", "c1", "--ns", "pid").returncode == 0
    assert own_cgroups(sandbox, root) == []
    assert "cgroup" not in sandbox.mm("create", "c2", "--dry-run").stdout


def test_create_rolls_back_its_cgroup_at_every_point_around_it(sandbox):
    root = hierarchy(sandbox)
    assert sandbox.mm("create", "other").returncode == 0
    steps = [ln for ln in sandbox.mm("create", "g1", "--ns", "cgroup,pid",
                                     "--dry-run").stdout.splitlines()
             if ln.startswith("# step ")]
    made = next(i for i, ln in enumerate(steps, start=1) if "a cgroup of the guest's own" in ln)
    for point in (str(made), str(made + 1), f"{made + 1}.1", str(len(steps))):
        sandbox.env["MIRRORMOUNT_FAULT"] = point
        r = sandbox.mm("create", "g1", "--ns", "cgroup,pid")
        del sandbox.env["MIRRORMOUNT_FAULT"]
        assert r.returncode == 1 and "injected fault" in r.stderr, (point, r.stderr)
        assert own_cgroups(sandbox, root) == [], point
    # a kill after it: the next create cleans up and makes it again; destroy removes it
    sandbox.env["MIRRORMOUNT_FAULT"] = f"{made + 1}:kill"
    assert sandbox.mm("create", "g1", "--ns", "cgroup,pid").returncode == -9
    del sandbox.env["MIRRORMOUNT_FAULT"]
    assert sandbox.mm("create", "g1", "--ns", "cgroup,pid").returncode == 0
    assert len(own_cgroups(sandbox, root)) == 1
    assert sandbox.mm("destroy", "g1").returncode == 0
    assert own_cgroups(sandbox, root) == []


def test_a_read_only_hierarchy_is_said_once_by_doctor_and_create_still_works(sandbox):
    root = hierarchy(sandbox)
    # Read-only in the sandbox's mount namespace only (a per-mount flag; remounts do not
    # propagate): the machine's own hierarchy stays writable.
    sandbox.sh(f"mount -o remount,bind,ro {root}")
    r = sandbox.mm("doctor")
    lines = [ln for ln in r.stdout.splitlines() if "cgroup" in ln]
    assert len(lines) == 1 and lines[0].startswith("warn") and "not writable" in lines[0], \
        r.stdout
    assert sandbox.mm("create", "g1", "--ns", "cgroup,pid").returncode == 0
    r = sandbox.mm("exec", "g1", "--", "true")
    assert r.returncode == 0, r.stderr
    assert sandbox.mm("destroy", "g1").returncode == 0

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
    """This sandbox's guests' cgroups. The hierarchy is the machine's, shared with every
    other sandbox alive at the same time (another test run's guests are there too), so
    only names ending in a device this sandbox's STATE has had (cgroup.guest_dir) count."""
    dev = sb.sh("stat -c '%Hd-%Ld' /run/mirrormount 2>/dev/null", check=False).stdout.strip()
    seen = sb.__dict__.setdefault("state_devs", set())
    if dev:
        seen.add(dev)
    found = sb.sh(f"ls -d {root}/mirrormount/*.*-* 2>/dev/null || true").stdout.split()
    return [c for c in found if c.rsplit(".", 1)[-1] in seen]


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


def test_start_puts_the_init_and_the_start_commands_in_the_guests_cgroup(sandbox):
    """start gives an init-based guest its init again, and an init-less one runs its start
    commands: both in the guest's own cgroup, as create's spawn and exec are, whoever runs
    start (here a shell in a cgroup of its own, as a systemd unit would be)."""
    sb = sandbox
    root = hierarchy(sb)
    assert sb.mm("create", "i1", "--ns", "cgroup", "--init", "sleep 1000000").returncode == 0
    assert sb.mm("create", "s1", "--ns", "cgroup,pid",
                 "--start", "sleep 999999 </dev/null >/dev/null 2>&1 &").returncode == 0
    own = {n: next(c for c in own_cgroups(sb, root) if c.startswith(f"{root}/mirrormount/{n}."))
           for n in ("i1", "s1")}
    caller = f"{root}/mm-test-caller"
    sb.sh(f"mkdir -p {caller}")
    try:
        r = sb.mm("stop", "i1", "--timeout", "1")
        assert r.returncode == 0, r.stderr
        start = (f"echo $$ > {caller}/cgroup.procs && {sys.executable} -m mirrormount start")
        for name in ("i1", "s1"):
            r = sb.sh(f"{start} {name}", check=False)
            assert r.returncode == 0, r.stderr
        init = wait_for(lambda: sb.sh("pgrep -fx 'sleep 1000000'", check=False).stdout.strip())
        started = wait_for(lambda: sb.sh("pgrep -fx 'sleep 999999'",
                                         check=False).stdout.strip())
        for pid, name in ((init, "i1"), (started, "s1")):
            line = sb.sh(f"grep '^0::' /proc/{pid}/cgroup").stdout.strip()
            assert line == "0::" + own[name].removeprefix(root), (name, line)
        r = sb.mm("exec", "i1", "--", "cat", "/proc/1/cgroup")
        assert r.returncode == 0 and "0::/\n" in r.stdout, (r.stdout, r.stderr)
    finally:
        for name in ("i1", "s1"):
            sb.mm("destroy", "--force", name)
        sb.sh(f"rmdir {caller}", check=False)
    assert own_cgroups(sb, root) == []


@pytest.mark.parametrize("ns", ["cgroup", "cgroup,pid"])
def test_a_sandbox_removes_its_guests_cgroups_as_it_ends(ns):
    """The demo's and the tests' sandbox (mirrormount.sandbox): a guest with a cgroup of its
    own still there when the sandbox ends leaves nothing in the machine's hierarchy."""
    import os
    import subprocess
    inner = (f"{sys.executable} -m mirrormount create g --ns {ns} >/dev/null && "
             f"{sys.executable} -c 'from mirrormount.guest.cgroup import guest_dir; "
             "print(guest_dir(\"/run/mirrormount\", \"g\"))' && "
             f"{sys.executable} -m mirrormount exec g -- true")
    r = subprocess.run([sys.executable, "-m", "mirrormount.sandbox", "--", "sh", "-c", inner],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip()
    assert path.startswith("/sys/fs/cgroup") and "/mirrormount/g." in path, r.stdout
    assert not os.path.exists(path), path

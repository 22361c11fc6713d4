"""A guest's own /sys (issue 14): a guest with its own net namespace gets a fresh sysfs at
/sys, made in that namespace (as `ip netns exec` does), attached through the mirror at
create; rolled back at every point like every other create step."""
from __future__ import annotations

import pytest

NET = ("n1", "--ns", "net,pid")


def sysfs_mounts(sb) -> list[str]:
    return sorted(f[4] for f in sb.mountinfo() if f[f.index("-") + 1] == "sysfs")


def test_a_net_guest_lists_its_own_interfaces_in_sys(sandbox):
    host = sandbox.sh("ls /sys/class/net").stdout.split()
    assert host != ["lo"]          # the host has interfaces besides lo: the test can fail
    assert sandbox.mm("create", *NET).returncode == 0
    r = sandbox.mm("exec", "n1", "--", "ls", "/sys/class/net")
    assert (r.returncode, r.stdout.split()) == (0, ["lo"]), r.stderr
    # the host-side mirror shows the guest's sysfs like any guest mount, intact
    assert sandbox.sh("ls /container/n1/sys/class/net").stdout.split() == ["lo"]
    assert sandbox.mm("status", "n1").returncode == 0
    # a guest without a net namespace keeps the rootfs's /sys
    assert sandbox.mm("create", "c1").returncode == 0
    r = sandbox.mm("exec", "c1", "--", "ls", "/sys/class/net")
    assert r.stdout.split() == host
    before = sysfs_mounts(sandbox)
    assert "/container/n1/sys" in before
    assert sandbox.mm("destroy", "n1", "c1").returncode == 0
    assert "/container/n1/sys" not in sysfs_mounts(sandbox)


@pytest.mark.parametrize("kill", [False, True])
def test_create_of_a_net_guest_rolls_back_around_its_sysfs_step(sandbox, kill):
    assert sandbox.mm("create", "other").returncode == 0      # BASE and STATE stay
    steps = [ln for ln in sandbox.mm("create", *NET, "--dry-run").stdout.splitlines()
             if ln.startswith("# step ")]
    sysfs = next(i for i, ln in enumerate(steps, start=1) if "a sysfs of the guest's own" in ln)
    before = sandbox.mountinfo()
    for point in (str(sysfs - 1), f"{sysfs}.1", str(sysfs)):
        sandbox.env["MIRRORMOUNT_FAULT"] = point + (":kill" if kill else "")
        r = sandbox.mm("create", *NET)
        del sandbox.env["MIRRORMOUNT_FAULT"]
        if kill:
            assert r.returncode == -9, (point, r.stderr)
            # the next create cleans up the half-made guest, then a destroy: as before
            assert sandbox.mm("create", *NET).returncode == 0, point
            assert sandbox.mm("destroy", "n1").returncode == 0, point
        else:
            assert r.returncode == 1 and "injected fault" in r.stderr, (point, r.stderr)
        assert sandbox.mountinfo() == before, point
    assert sandbox.mm("create", *NET).returncode == 0
    assert sandbox.mm("exec", "n1", "--", "ls", "/sys/class/net").stdout.split() == ["lo"]

"""Mounts stacked at one path, on both paths of kernel/mountquery.py and of `status`: the
statx + statmount lookup names the topmost mount, as the mountinfo scan (MountTable.at)
does, and `status` judges an overmounted mirror or nsfs file the same with listmount,
without it, and without unique ids (kernels before 6.8). Each test in its own sandbox,
/ private and rshared."""
from __future__ import annotations

import json

SWITCHES = ("", "MIRRORMOUNT_NO_LISTMOUNT", "MIRRORMOUNT_NO_STATMOUNT",
            "MIRRORMOUNT_NO_UNIQUE_ID")
PROBE = r"""
import json, sys
from mirrormount.kernel import mountquery
paths = sys.argv[1:]
table = mountquery.mounts_at(paths)
out = {}
for p in paths:
    m = table.at(p)
    out[p] = None if m is None else [m.mountpoint, m.fstype, m.source, m.root,
                                     m.shared is not None, m.master is not None]
stacks = {}
if mountquery.cheap():
    from mirrormount.kernel import syscalls as sc
    stacks = {p: [sc.statmount(u).sb_source for u in mountquery.stack_ids(p)] for p in paths}
print(json.dumps([mountquery.cheap(), out, stacks]))
"""


def _run_each(sb, argv):
    """{switch: (exit code, stdout)} of argv run with each switch set (and with none)."""
    out = {}
    for switch in SWITCHES:
        if switch:
            sb.env[switch] = "1"
        try:
            r = sb.run(argv, timeout=120)
            out[switch] = (r.returncode, r.stdout)
        finally:
            if switch:
                del sb.env[switch]
    return out


def test_mounts_at_names_the_top_of_a_stack_on_both_paths(sandbox):
    sb = sandbox
    sb.sh("mkdir -p /srv/s /srv/plain && mount -t tmpfs bottom /srv/s && mkdir /srv/s/sub"
          " && mount -t tmpfs middle /srv/s && mount -t ramfs top /srv/s"
          " && mount --make-shared /srv/s")
    paths = ["/srv/s", "/srv/s/sub", "/srv/plain", "/srv/none", "/"]
    seen = {k: json.loads(out) for k, (code, out) in
            _run_each(sb, ["python3", "-c", PROBE, *paths]).items() if code == 0}
    assert len(seen) == len(SWITCHES), seen
    assert seen[""][0] is True                              # statmount on this kernel
    assert seen["MIRRORMOUNT_NO_STATMOUNT"][0] is False     # the mountinfo scan
    want = seen[""][1]
    assert want["/srv/s"] == ["/srv/s", "ramfs", "top", "/", True, False]
    assert want["/srv/s/sub"] is None and want["/srv/plain"] is None
    assert want["/srv/none"] is None and want["/"] is not None
    for switch, (_, got, _) in seen.items():
        assert got == want, switch
    # stack_ids: every mount at the path, bottom first; none where no mount is attached
    stacks = seen[""][2]
    assert stacks["/srv/s"] == ["bottom", "middle", "top"], stacks
    assert stacks["/srv/s/sub"] == stacks["/srv/plain"] == stacks["/srv/none"] == []
    assert len(stacks["/"]) >= 1
    assert seen["MIRRORMOUNT_NO_STATMOUNT"][2] == {}


def test_status_of_an_overmounted_mirror_and_nsfs_file_on_every_path(sandbox):
    sb = sandbox
    sb.mm("create", "c1", "c2", "c3", check=True, timeout=120)
    sb.sh("touch /tmp/f && mount -t tmpfs over /container/c1"
          " && mount --bind /tmp/f /run/mirrormount/c2/ns/mnt"
          " && mkdir -p /container/c3/mnt/s && mount -t tmpfs s1 /container/c3/mnt/s"
          " && mount -t tmpfs s2 /container/c3/mnt/s")
    for name in ("c1", "c2", "c3"):
        runs = _run_each(sb, ["python3", "-m", "mirrormount", "--json", "status", name])
        code, out = runs[""]
        rep = json.loads(out)
        if name == "c1":
            # The tmpfs on the mirror's root is a mount beneath the (shared) mirror: it
            # reached the guest's / as well. The 27 mirror mounts it hides are still
            # counted on the host side, on every path: listmount starts from the bottom.
            assert rep["mounts_host"] == 28, rep
        elif name == "c2":
            assert code != 0 and any("mnt namespace is not held" in p
                                     for p in rep["problems"]), rep
        else:       # a stack made through the mirror reaches the guest: still intact
            assert code == 0 and rep["mirror_intact"] is True, rep
        for switch, got in runs.items():
            assert got == (code, out), (name, switch)

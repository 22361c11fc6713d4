"""Issue 11: on each kernel, mirrormount takes the interface the kernel has, or its fallback.

`make kernel-test` runs these (marked `kernels`) on Debian's 6.1 and 6.12 under QEMU, and
`make test` on this machine's own kernel, so each row of SINCE is seen both ways: on 6.1
nothing newer than MOVE_MOUNT_SET_GROUP exists and every lookup takes the mountinfo
fallback for real (no MIRRORMOUNT_NO_STATMOUNT needed); on 6.12 statmount exists but cannot
name a mount's source (STATMOUNT_SB_SOURCE is 6.13), so lookups still fall back; from 6.13
they use statmount. What each test expects is computed from the running kernel's version
and this table, never skipped.
"""
from __future__ import annotations

import json
import platform
import re
import sys

import pytest

from test_core import create, guest_sh

# Interface -> first mainline kernel that has it (include/uapi/linux/*.h, the syscall tables;
# kernel-findings §11). Debian's stable updates do not backport these.
SINCE = {
    "MOVE_MOUNT_SET_GROUP": (5, 15),     # repair re-joins a peer group
    "statmount": (6, 8),                 # syscall 457
    "STATX_MNT_ID_UNIQUE": (6, 8),       # statx mask 0x4000
    "STATMOUNT_SB_SOURCE": (6, 13),      # mountquery needs the source: statmount path from here
    # kernel/probes.py's rows (doctor's interface table), as named there:
    "unique mount ids": (6, 8),          # STATX_MNT_ID_UNIQUE, again, through kernel/mountns.py
    "listmount/statmount": (6, 13),      # by a namespace's id (6.11), with the source (6.13)
    "namespace walk": (6, 12),           # NS_MNT_GET_NEXT
    "fanotify mount events": (6, 15),    # FAN_MARK_MNTNS, FAN_MNT_ATTACH/DETACH
}


def running() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    assert m, platform.release()
    return int(m.group(1)), int(m.group(2))


def has(interface: str) -> bool:
    return running() >= SINCE[interface]


# Asked inside the sandbox through mirrormount's own syscall layer; prints JSON.
PROBE = r"""
import errno, json, os
from mirrormount.kernel import syscalls as sc, mountquery
out = {}
st = sc.statx("/", flags=sc.AT_SYMLINK_NOFOLLOW, mask=sc.STATX_MNT_ID | sc.STATX_MNT_ID_UNIQUE)
out["STATX_MNT_ID_UNIQUE"] = bool(st.mask & sc.STATX_MNT_ID_UNIQUE)
try:
    sc.statmount(st.mnt_id if out["STATX_MNT_ID_UNIQUE"] else 1 << 62)
    out["statmount"] = True
except OSError as exc:
    out["statmount"] = exc.errno != errno.ENOSYS     # ENOENT/EINVAL: it ran and refused
out["MOVE_MOUNT_SET_GROUP"] = sc.can_set_group()
out["cheap"] = mountquery.cheap()                      # True: the statmount path
table = mountquery.mounts_at(["/container/c1", "/container/c1/tmp/t"])
out["mounts"] = sorted((m.mountpoint, m.fstype, m.source, m.shared is not None,
                        m.master is not None) for m in table)
print(json.dumps(out))
"""


def probe(sb, no_statmount: bool = False) -> dict:
    env = dict(sb.env)
    if no_statmount:
        sb.env["MIRRORMOUNT_NO_STATMOUNT"] = "1"
    try:
        r = sb.run([sys.executable, "-c", PROBE], timeout=120)
    finally:
        sb.env = env
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.kernels
def test_each_interface_is_there_exactly_from_its_kernel(sandbox):
    create(sandbox, "c1")
    got = probe(sandbox)
    for name in ("statmount", "STATX_MNT_ID_UNIQUE", "MOVE_MOUNT_SET_GROUP"):
        assert got[name] is has(name), (platform.release(), name, got[name])


@pytest.mark.kernels
def test_single_mount_lookups_fall_back_where_the_kernel_lacks_statmount(sandbox):
    """Without any switch, mountquery takes statmount only where the kernel can name a
    mount's source (6.13+); on 6.1 and 6.12 the mountinfo scan runs for real. Both paths
    give the same answers."""
    create(sandbox, "c1")
    sandbox.sh("mkdir -p /tmp/t && mount -t tmpfs kt-src /container/c1/tmp/t")
    real = probe(sandbox)
    assert real["cheap"] is has("STATMOUNT_SB_SOURCE"), (platform.release(), real)
    forced = probe(sandbox, no_statmount=True)
    assert forced["cheap"] is False
    assert real["mounts"] == forced["mounts"]
    assert ["/container/c1/tmp/t", "tmpfs", "kt-src", True, False] in real["mounts"]


@pytest.mark.kernels
def test_doctor_reports_this_kernel(sandbox):
    checks = {c["check"]: c for c in sandbox.mm("--json", "doctor").json}
    assert checks["kernel"]["level"] == "ok"
    assert checks["kernel"]["detail"].startswith(platform.release() + " ")
    assert ("STATX_MNT_ID_UNIQUE" in checks["statx mount ids"]["detail"]) \
        is has("STATX_MNT_ID_UNIQUE")
    assert checks["MOVE_MOUNT_SET_GROUP"]["level"] == \
        ("ok" if has("MOVE_MOUNT_SET_GROUP") else "warn")
    assert checks["seccomp"]["level"] == "ok"


@pytest.mark.kernels
def test_repair_rejoins_by_move_mount_set_group_and_confinement_holds(sandbox):
    """Every kernel tested has MOVE_MOUNT_SET_GROUP (5.15) and seccomp filters: repair
    re-joins a broken mirror, and a confined guest cannot break one."""
    sb = sandbox
    create(sb, "c1", "--confine", "none")
    guest_sh(sb, "c1", "mount --make-rprivate /")
    assert sb.mm("--json", "status", "c1").json["mirror_intact"] is False
    r = sb.mm("repair", "c1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert sb.mm("--json", "status", "c1").json["mirror_intact"] is True
    guest_sh(sb, "c1", "mkdir -p /tmp/g && mount -t tmpfs g /tmp/g")
    assert "/container/c1/tmp/g" in sb.mountpoints()

    create(sb, "c2")                                  # --confine mirror, the default
    r = guest_sh(sb, "c2", "mount --make-rprivate /", check=False)
    assert r.returncode != 0 and "ermission denied" in r.stderr, r.stderr
    assert sb.mm("--json", "status", "c2").json["mirror_intact"] is True


INTERFACES = r"""
import json
from mirrormount.kernel import probes
print(json.dumps([[i.name, i.available, i.note] for i in probes.interfaces()]))
"""


@pytest.mark.kernels
def test_mount_namespace_interfaces_are_there_exactly_from_their_kernel(sandbox):
    """The busy scan's and `watch --mounts`' newer interfaces (kernel/probes.py): each is
    offered from its version on and its fallback taken below it. The namespace walk is the
    one exception the kernel makes on purpose: from 6.12 it exists but refuses (EPERM) a
    caller outside the initial pid namespace, which probes names instead of failing."""
    r = sandbox.run([sys.executable, "-c", INTERFACES], timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {name: (available, note) for name, available, note in json.loads(r.stdout)}
    assert set(rows) == {"unique mount ids", "listmount/statmount", "namespace walk",
                         "fanotify mount events"}
    for name, (available, note) in rows.items():
        if name == "namespace walk" and has(name) and not available:
            assert note and "EPERM" in note, (platform.release(), name, note)
            continue
        assert available is has(name), (platform.release(), name, available, note)

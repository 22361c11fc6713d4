"""Guests that cannot break their mirror, nor reach each other. The real CLI on the real
kernel, in a sandbox (conftest.py), each test with the sandbox's / private and rshared.

- default --confine mirror: in the guest, mount(2) with MS_PRIVATE, MS_SLAVE or
  MS_UNBINDABLE fails with EPERM (mount(8) and the raw call), mount_setattr with ENOSYS;
  mounts still flow both ways and status stays intact; exec, enter and the guest's init
  (the pid namespace's reaper) are all under the filter;
- --drop-caps sys_admin: the guest can make no mount at all;
- a process in a guest cannot open another guest's namespaces or state, or the host's
  namespaces it does not share, by any path the probe (isolation_probe.py) tries.
"""
from __future__ import annotations

import fcntl
import json
import os
import struct
import sys
from pathlib import Path

import pytest

KINDS = [(), ("--ns", "pid")]
PROBE = Path(__file__).resolve().parent / "isolation_probe.py"
# In the guest (rootfs /, so the repository is there): one raw mount(2) or mount_setattr(2)
# call through mirrormount's own wrappers, printing the errno's name or "ok".
RAW = """
import errno, sys
from mirrormount.kernel import syscalls as sc
path, flags = sys.argv[1], int(sys.argv[2])
try:
    if sys.argv[3:] == ["setattr"]:
        sc.mount_setattr(path, flags, recursive=False)
    elif sys.argv[3:] == ["new"]:
        sc.mount("x", path, "tmpfs", 0)
    else:
        sc.mount(None, path, None, flags)
    print("ok")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}{r.stdout}"
    return r


def guest_sh(sb, name, script, check=True):
    r = sb.mm("exec", name, "--", "/bin/sh", "-c", script)
    if check:
        ok(r)
    return r


def raw(sb, name, path, flags, *how):
    return ok(sb.mm("exec", name, "--", sys.executable, "-c", RAW, path, str(flags),
                    *how)).stdout.strip()


MS_REC, MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE = (
    0x4000, 1 << 18, 1 << 19, 1 << 20, 1 << 17)


# ---------------------------------------------------------------- default confinement
@pytest.mark.parametrize("kinds", KINDS)
def test_a_confined_guest_cannot_cut_itself_off_its_mirror(sandbox, kinds):
    sb = sandbox
    ok(sb.mm("create", "c1", *kinds))
    guest_sh(sb, "c1", "mkdir -p /tmp/x && mount -t tmpfs x /tmp/x")
    # mount(8), as an admin in the guest would type it: refused, permission denied (EPERM)
    for cmd in ("mount --make-rprivate /", "mount --make-private /tmp/x",
                "mount --make-rslave /", "mount --make-slave /tmp/x",
                "mount --make-unbindable /tmp/x", "mount --make-runbindable /"):
        r = guest_sh(sb, "c1", cmd, check=False)
        assert r.returncode == 32 and "permission denied" in r.stderr, (cmd, r.stderr)
    # the raw calls: EPERM with or without MS_REC; mount_setattr refused whole (ENOSYS,
    # so that libmount falls back to mount(2)); make-shared and new mounts allowed
    for path, flags in (("/", MS_REC | MS_PRIVATE), ("/tmp/x", MS_PRIVATE),
                        ("/", MS_REC | MS_SLAVE), ("/tmp/x", MS_SLAVE),
                        ("/tmp/x", MS_UNBINDABLE), ("/", MS_REC | MS_UNBINDABLE)):
        assert raw(sb, "c1", path, flags) == "EPERM", (path, hex(flags))
    assert raw(sb, "c1", "/", MS_PRIVATE, "setattr") == "ENOSYS"
    assert raw(sb, "c1", "/tmp/x", MS_SHARED) == "ok"
    assert raw(sb, "c1", "/", MS_REC | MS_SHARED) == "ok"
    guest_sh(sb, "c1", "umount /tmp/x")
    # the mirror is intact, and works both ways
    st = ok(sb.mm("--json", "status", "c1")).json
    assert st["mirror_intact"] is True and st["problems"] == [] and st["confine"] == "mirror"
    guest_sh(sb, "c1", "mkdir -p /tmp/g && mount -t tmpfs fromguest /tmp/g")
    assert "/container/c1/tmp/g" in sb.mountpoints()
    sb.sh("mkdir -p /container/c1/tmp/h && mount -t tmpfs fromhost /container/c1/tmp/h")
    mine = guest_sh(sb, "c1", "cat /proc/self/mountinfo").stdout.split()
    assert "/tmp/h" in mine and "fromhost" in mine
    # every process mirrormount starts in the guest carries the filter: exec ...
    status = guest_sh(sb, "c1", "grep -E '^(Seccomp|Seccomp_filters):' /proc/self/status")
    assert "Seccomp:\t2" in status.stdout and "Seccomp_filters:\t1" in status.stdout
    # ... enter ...
    sb.env["SHELL"] = "/bin/sh"
    r = sb.mm("enter", "c1", input="mount --make-rprivate / 2>&1; echo rc=$?\n")
    assert "permission denied" in r.stdout and "rc=32" in r.stdout, r.stdout + r.stderr
    # ... and the pid namespace's init
    if kinds:
        init = guest_sh(sb, "c1", "grep -E '^(Name|Seccomp):' /proc/1/status").stdout
        assert "mm-reaper" in init and "Seccomp:\t2" in init
    assert ok(sb.mm("--json", "list")).json[0]["confine"] == "mirror"
    human = ok(sb.mm("status", "c1")).stdout
    assert "confine:       mirror" in human


def test_without_confinement_the_guest_can_break_its_mirror(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1", "--confine", "none"))
    assert raw(sb, "c1", "/", MS_PRIVATE, "setattr") in ("ok", "EINVAL")    # not refused
    guest_sh(sb, "c1", "grep -q '^Seccomp:.0' /proc/self/status")
    guest_sh(sb, "c1", "mount --make-rprivate /")
    st = sb.mm("--json", "status", "c1")
    assert st.returncode == 1 and st.json["mirror_intact"] is False
    assert st.json["confine"] == "none"


# ---------------------------------------------------------------- capabilities
@pytest.mark.parametrize("kinds", KINDS)
def test_drop_caps_sys_admin_means_no_mounts(sandbox, kinds):
    sb = sandbox
    before = sb.mountinfo()
    r = sb.mm("create", "c1", "--drop-caps", "sys_admin,bogus", *kinds)
    assert r.returncode == 2 and "unknown capability bogus" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and sb.mountinfo() == before
    ok(sb.mm("create", "c1", "--drop-caps", "CAP_SYS_ADMIN", *kinds))
    sb.sh("mkdir -p /tmp/m")
    assert raw(sb, "c1", "/tmp/m", 0, "new") == "EPERM"
    r = guest_sh(sb, "c1", "mount -t tmpfs m /tmp/m", check=False)
    assert r.returncode != 0 and "/tmp/m" not in guest_sh(sb, "c1", "cat /proc/self/mountinfo"
                                                          ).stdout.split()
    caps = guest_sh(sb, "c1", "grep -E '^Cap(Bnd|Eff|Prm|Inh):' /proc/self/status").stdout
    for line in caps.splitlines():
        assert not int(line.split()[1], 16) >> 21 & 1, line       # CAP_SYS_ADMIN is bit 21
    if kinds:
        init = guest_sh(sb, "c1", "grep -E '^Cap(Bnd|Eff):' /proc/1/status").stdout
        assert all(not int(ln.split()[1], 16) >> 21 & 1 for ln in init.splitlines()), init
    st = ok(sb.mm("--json", "status", "c1")).json
    assert st["drop_caps"] == ["sys_admin"] and st["mirror_intact"] is True
    # the host still mounts through the mirror, and the guest sees it
    ok(sb.mm("mount", "c1", "fromhost", "/tmp/m", "-t", "tmpfs"))
    assert "/tmp/m" in guest_sh(sb, "c1", "cat /proc/self/mountinfo").stdout.split()


# ---------------------------------------------------------------- guests apart
NS_GET_ID = 0x8008B70D              # include/uapi/linux/nsfs.h, 6.18+
CLONE = {"mnt": 0x00020000, "pid": 0x20000000, "uts": 0x04000000}


def _ns_id(path: str) -> int | None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, NS_GET_ID, buf)
        return struct.unpack("Q", buf)[0]
    except OSError:
        return None                 # before 6.18: no nsfs file handles to forge either
    finally:
        os.close(fd)


def forbidden_for(sb, others):
    """What a process in c1 must not reach, as (dev, ino) seen from the sandbox: every nsfs
    file of the other guests and of the nursery, their records, a file on a mount only c2
    has, and the sandbox's own mount and pid namespaces (which c1 does not share)."""
    script = f"""
import json, os, stat, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_confine import _ns_id, CLONE
out, handles = [], []
paths = ["/proc/self/ns/mnt", "/proc/self/ns/pid", "/container/c2/srv/secret/token",
         "/run/mirrormount/.nursery/mnt"]
for name in {list(others)!r}:
    d = f"/run/mirrormount/{{name}}"
    paths += [d, d + "/guest.json", d + "/claim", d + "/ns"]
    paths += [d + "/ns/" + k for k in os.listdir(d + "/ns")]
for p in paths:
    if not os.path.exists(p):
        continue
    st = os.stat(p)
    out.append({{"id": [st.st_dev, st.st_ino], "what": p}})
    kind = p.rsplit("/", 1)[1]
    if p.startswith("/run/mirrormount/") and "/ns/" in p and kind in CLONE or \\
            p == "/proc/self/ns/mnt":
        nsid = _ns_id(p)
        if nsid is not None:
            handles.append({{"ns_id": nsid, "inum": st.st_ino,
                             "type": CLONE.get(kind, CLONE["mnt"]), "what": p}})
print(json.dumps({{"forbidden": out, "handles": handles, "names": {list(others)!r}}}))
"""
    return ok(sb.run([sys.executable, "-c", script])).stdout.strip()


def test_a_guest_cannot_open_another_guests_namespaces_or_state(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1", "--ns", "pid"))                  # the prober's guest
    ok(sb.mm("create", "c2", "--ns", "pid,uts,ipc"))
    ok(sb.mm("create", "c3"))                                 # no pid namespace of its own
    sb.sh("mkdir -p /srv/secret")
    ok(sb.mm("mount", "c2", "c2-secret", "/srv/secret", "-t", "tmpfs"))
    sb.sh("echo c2 > /container/c2/srv/secret/token")
    # processes living in the other guests, whose /proc entries would lead into them
    sleepers = [sb.popen(f"exec {sys.executable} -m mirrormount exec {g} -- sleep 600")
                for g in ("c2", "c3")]
    try:
        spec = forbidden_for(sb, ("c2", "c3"))
        assert len(json.loads(spec)["forbidden"]) >= 12
        r = ok(sb.mm("exec", "c1", "--", sys.executable, str(PROBE), spec))
        probe = json.loads(r.stdout)
        assert probe["reached"] == [], probe
        assert probe["own"] and probe["tried"] > 100, probe
        assert probe["proc_unmounted"], "the probe could not even try /proc beneath"
        assert probe["container"] == [], probe          # BASE is empty in a guest (§5b)
        if json.loads(spec)["handles"]:                 # 6.18+: refused by the filter
            assert probe["handle_errors"] == ["EPERM"], probe
        # the guest's own mounts are still its own: the probe changed no mirror
        for g in ("c1", "c2", "c3"):
            assert ok(sb.mm("--json", "status", g)).json["mirror_intact"] is True
    finally:
        for p in sleepers:
            p.kill()
            p.wait()

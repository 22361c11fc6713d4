"""Issue 9 part 2: the newer interfaces and their /proc fallbacks give the same answers.

The kernel refuses the namespace walk (EPERM, measured on 6.18) to a caller outside the
initial pid namespace, and the sandbox has its own: inside it, mirrormount uses the /proc
scan, which `doctor` says. Tests of the walk therefore run their command from the machine's
pid namespace, in a fresh mount namespace under the sandbox's with a /proc of that pid
namespace (in_init_pidns): nothing they mount reaches the sandbox, let alone the machine.

- The namespace walk (NS_MNT_GET_NEXT, 6.12) against the /proc scan (MIRRORMOUNT_NO_NSWALK=1):
  a guest's namespace, one held only by an nsfs bind and one held only by an fd are found by
  both. One held only by an nsfs bind inside a namespace no process is in is found by the
  walk alone: the scan's stated limitation (kernel/mountns.py).
- A namespace's table by listmount + statmount on its id (6.11) against mountinfo
  (MIRRORMOUNT_NO_LISTMOUNT=1): the same Mount records, field by field.
- `status` and `list` the same on both paths; `busy` finds a copy held in a namespace whose
  only holder is outside the sandbox (so no /proc the sandbox has shows it) with the walk,
  and not with the walk switched off.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import wait_for

PROBE = r"""
import json, os, sys
from mirrormount.kernel import mountns
own = os.stat("/proc/self/ns/mnt").st_ino
want = [int(x) for x in sys.argv[1:]] + [own]
assert mountns.walk_available()
walk = {n.ino for n in mountns.namespaces()}
os.environ["MIRRORMOUNT_NO_NSWALK"] = "1"
scan = mountns.scan_proc()

def key(t):
    return sorted((m.mount_id, m.parent_id, m.major, m.minor, m.root, m.mountpoint, m.options,
                   m.shared, m.master, m.propagate_from, m.unbindable, m.fstype, m.source)
                  for m in t)

same, new_path = {}, {}
for ns in scan:
    if ns.ino not in want:
        continue
    try:
        mountns.unique_mounts(ns.ns_id) if ns.ns_id else None
        new_path[ns.ino] = bool(ns.ns_id)
    except NotImplementedError:
        new_path[ns.ino] = False
    a = mountns.mounts_of(ns)
    os.environ["MIRRORMOUNT_NO_LISTMOUNT"] = "1"
    b = mountns.mounts_of(ns)
    del os.environ["MIRRORMOUNT_NO_LISTMOUNT"]
    same[ns.ino] = [key(a) == key(b), len(a)]
print(json.dumps({"walk": sorted(walk), "scan": sorted(n.ino for n in scan), "own": own,
                  "same": same, "new_path": new_path}))
"""


def in_init_pidns(sb, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """argv in a new mount namespace under the sandbox's (private: it reaches nothing), from
    the machine's initial pid namespace, with that pid namespace's /proc mounted there."""
    cmd = ["nsenter", "-t", str(sb.pid), "-m", "-r", "-w", "--", "unshare", "-m",
           "--propagation", "private", "/bin/sh", "-c", 'mount -t proc proc /proc && '
           'exec "$@"', "sh", *argv]
    return subprocess.run(cmd, env=dict(sb.env, **(env or {})), capture_output=True,
                          text=True, timeout=180)


def ino(sb, path: str, ns: str | None = None) -> int:
    pre = f"nsenter --mount={ns} -- " if ns else ""
    return int(sb.sh(f"{pre}stat -L -c %i {path}").stdout)


def bind_retry(cmd: str) -> str:
    """cmd (an `unshare --mount=FILE`), tried again with a fresh namespace on the next CPU
    when the nsfs bind fails: the kernel's loop check refuses it (EINVAL) when the new
    namespace's id is not above the binder's, and ids are drawn per CPU (kernel-findings
    section 6; guest/nursery.py build_and_hold does the same)."""
    return (f"n=$(nproc); i=0; until taskset -c $((i % n)) {cmd} 2>/dev/null; do "
            f"i=$((i + 1)); [ $i -lt $((4 * n)) ] || {{ {cmd}; exit 1; }}; done")


def held_by_bind(sb) -> int:
    """A namespace whose only holder is an nsfs bind at /srv/held/ns (a private mount)."""
    sb.sh("mkdir -p /srv/held && mount -t tmpfs held /srv/held && mount --make-private "
          "/srv/held && touch /srv/held/ns && " + bind_retry(
              "unshare --mount=/srv/held/ns --propagation private "
              "sh -c 'mount -t tmpfs in-held /tmp'"))
    return ino(sb, "/srv/held/ns")


def held_by_fd(sb):
    """A namespace whose only holder is fd 3 of a sleep in the sandbox."""
    p = sb.popen("unshare -m --propagation private sh -c 'mount -t tmpfs in-fd /tmp && "
                 "exec sleep 300' & U=$!; sleep 0.5; exec 3</proc/$U/ns/mnt; kill $U; "
                 "wait $U; echo $$; exec sleep 300")
    pid = int(p.stdout.readline())
    return p, pid, ino(sb, f"/proc/{pid}/fd/3")


def test_walk_and_scan_and_tables_agree(sandbox):
    sandbox.mm("create", "c1", check=True)
    guest = ino(sandbox, "/run/mirrormount/c1/ns/mnt")
    bind = held_by_bind(sandbox)
    p, _, fd = held_by_fd(sandbox)
    try:
        # nested: held by a bind inside the namespace held by /srv/held/ns, nothing else
        sandbox.sh("nsenter --mount=/srv/held/ns -- sh -c 'mkdir -p /run/in && "
                   "mount -t tmpfs in /run/in && mount --make-private /run/in && "
                   "touch /run/in/ns && " + bind_retry("unshare --mount=/run/in/ns true")
                   + "'")
        nested = ino(sandbox, "/run/in/ns", ns="/srv/held/ns")
        r = in_init_pidns(sandbox, [sys.executable, "-c", PROBE,
                                    *map(str, (guest, bind, fd))])
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        own = data["own"]
        for n in (own, guest, bind, fd):
            assert n in data["walk"], n
            assert n in data["scan"], n
            ok, count = data["same"][str(n)]
            assert ok and count >= 1, (n, data["same"])
        assert nested in data["walk"] and nested not in data["scan"]
        # The new path really ran where the kernel allows it: our namespace, and one made
        # by unshare. (A guest's namespace, made by mirrormount's nursery, makes listmount
        # answer ENOENT on 6.18: mounts_of fell back, with the same answer.)
        assert data["new_path"][str(own)] and data["new_path"][str(bind)]
        assert data["new_path"][str(fd)]
    finally:
        p.kill()
        p.wait()


def test_status_and_list_same_on_both_paths(sandbox):
    sandbox.mm("create", "c1", check=True)
    sandbox.mm("create", "c2", check=True)
    sandbox.sh("mkdir -p /tmp/x")
    sandbox.mm("mount", "c1", "tmpfs", "/tmp/x", "-t", "tmpfs", check=True)
    new = sandbox.mm("--json", "status", "c1", check=True).json
    lst = sandbox.mm("--json", "list", check=True).json
    for switch in ("MIRRORMOUNT_NO_LISTMOUNT", "MIRRORMOUNT_NO_UNIQUE_ID"):
        sandbox.env[switch] = "1"
        try:
            assert sandbox.mm("--json", "status", "c1", check=True).json == new
            assert sandbox.mm("--json", "list", check=True).json == lst
        finally:
            del sandbox.env[switch]
    assert new["mirror_intact"] is True and new["mounts_host"] == new["mounts_guest"]
    # A broken mirror is seen the same way too.
    sandbox.mm("create", "c3", "--confine", "none", check=True)
    sandbox.sh("nsenter --mount=/run/mirrormount/c3/ns/mnt -- mount --make-rprivate /")
    broken = sandbox.mm("--json", "status", "c3")
    sandbox.env["MIRRORMOUNT_NO_LISTMOUNT"] = "1"
    try:
        again = sandbox.mm("--json", "status", "c3")
    finally:
        del sandbox.env["MIRRORMOUNT_NO_LISTMOUNT"]
    assert broken.returncode == again.returncode != 0
    assert broken.json == again.json and broken.json["mirror_intact"] is False


def _host_pid(sb, inner: int) -> int:
    """The machine's pid of the sandbox's process `inner` (NSpid's last field)."""
    sandbox_pidns = os.stat(f"/proc/{sb.pid}/ns/pid").st_ino
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}/ns/pid").st_ino != sandbox_pidns:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and int(line.split()[-1]) == inner:
                        return int(pid)
        except OSError:
            continue
    raise AssertionError(f"no host pid for {inner}")


def test_busy_finds_a_copy_only_the_walk_reaches(sandbox):
    """A namespace kept alive only by an open /proc/PID/mountinfo (proc_mounts holds the
    namespace, not the process; kernel fs/proc_namespace.c): no process is in it, no fd
    names it as nsfs, no nsfs file holds it. Its copy of the mount still keeps the
    filesystem alive. Only the kernel's walk finds it."""
    sandbox.sh("mkdir -p /srv/t && mount -t tmpfs target-t /srv/t")
    p = sandbox.popen("unshare -m --propagation private sh -c 'echo $$; exec sleep 300'")
    inner = int(p.stdout.readline())
    try:
        host_pid = _host_pid(sandbox, inner)
        label = f"mnt:[{os.stat(f'/proc/{host_pid}/ns/mnt').st_ino}]"
        fd = os.open(f"/proc/{host_pid}/mountinfo", os.O_RDONLY)
        try:
            sandbox.sh(f"kill {inner}")
            p.wait(timeout=30)
            argv = [sys.executable, "-m", "mirrormount", "--json", "busy", "/srv/t"]
            with_walk = in_init_pidns(sandbox, argv)
            without = in_init_pidns(sandbox, argv, {"MIRRORMOUNT_NO_NSWALK": "1"})
            assert with_walk.stdout and without.stdout, with_walk.stderr + without.stderr
            walked = json.loads(with_walk.stdout)["copies"]
            scanned = json.loads(without.stdout)["copies"]
            # Each run stands in a fresh namespace of its own: compare the sandbox's copy.
            sandbox_ns = f"mnt:[{os.stat(f'/proc/{sandbox.pid}/ns/mnt').st_ino}]"
            for copies in (walked, scanned):
                assert [c["path"] for c in copies if c["namespace"] == sandbox_ns] == \
                    ["/srv/t"], (sandbox_ns, copies)
            assert [c["path"] for c in walked if c["namespace"] == label] == ["/srv/t"], \
                (label, walked)
            assert not any(c["namespace"] == label for c in scanned), (label, scanned)
        finally:
            os.close(fd)
    finally:
        p.kill()
        p.wait()
        assert wait_for(lambda: p.poll() is not None)


def test_doctor_lists_the_interfaces(sandbox):
    out = sandbox.mm("--json", "doctor").json
    checks = out if isinstance(out, list) else out.get("checks", out)
    names = {c["check"]: c for c in checks}
    for name, since in (("unique mount ids", "6.8"), ("listmount/statmount", "6.13"),
                        ("namespace walk", "6.12"), ("fanotify mount events", "6.15")):
        assert name in names and f"Linux {since}+" in names[name]["detail"], names.get(name)
        if name != "namespace walk":
            assert "available: yes" in names[name]["detail"]       # this kernel is 6.18
    # The sandbox has its own pid namespace: the kernel refuses the walk there.
    walk = names["namespace walk"]
    assert walk["level"] == "warn" and "EPERM" in walk["detail"], walk
    r = in_init_pidns(sandbox, [sys.executable, "-m", "mirrormount", "--json", "doctor"])
    walk = {c["check"]: c for c in json.loads(r.stdout)}["namespace walk"]
    assert walk["level"] == "ok" and "available: yes" in walk["detail"], walk
    r = in_init_pidns(sandbox, [sys.executable, "-m", "mirrormount", "--json", "doctor"],
                      {"MIRRORMOUNT_NO_NSWALK": "1"})
    walk = {c["check"]: c for c in json.loads(r.stdout)}["namespace walk"]
    assert walk["level"] == "warn" and "MIRRORMOUNT_NO_NSWALK=1" in walk["detail"], walk

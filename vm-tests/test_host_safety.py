"""Never harm the host: ownership of BASE and STATE, mirror+host without touching the host's
propagation, batches where exit 2 means nothing changed, reserved names, nested guests and
fs.mount-max. Each test compares what lies outside its own scope before and after: the whole
mount table (targets and propagation, every field of mountinfo) and the files it could touch.
"""
from __future__ import annotations

import json
import sys

import pytest

from conftest import q


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


def one_line(r, code, *words):
    """Refused: the exit code, one line on stderr naming the reason, nothing on stdout."""
    assert r.returncode == code, (r.returncode, r.stderr, r.stdout)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def files(sb, *dirs):
    """Names, types, modes and link targets under dirs (what a wrong removal would change)."""
    paths = " ".join(q(d) for d in dirs)
    return sb.sh(f"find {paths} -xdev -printf '%p %y %m %l\\n' 2>/dev/null | sort",
                 check=False).stdout


# ---------------------------------------------------------------- 1. ownership
def test_a_mistyped_state_never_touches_a_live_guest(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1"))
    before, before_files = sb.mountinfo(), files(sb, "/run", "/container")
    typo = ("--state", "/run/mirrormount-typo")
    one_line(sb.mm(*typo, "status", "c1"), 2, "no such guest in STATE /run/mirrormount-typo",
             "/container/c1 exists")
    one_line(sb.mm(*typo, "destroy", "c1"), 2, "no such guest in STATE")
    one_line(sb.mm(*typo, "umount", "c1", "/tmp"), 2, "no such guest in STATE")
    assert ok(sb.mm(*typo, "--json", "list")).json == []
    assert sb.mountinfo() == before and files(sb, "/run", "/container") == before_files
    st = sb.mm("--json", "status", "c1")
    assert st.returncode == 0 and st.json["mirror_intact"] is True, st.stdout


@pytest.mark.parametrize("which", ["--state", "--base"])
def test_an_existing_mount_is_refused_as_base_or_state(sandbox, which):
    """A mount mirrormount did not make (here a tmpfs, shared when / is rshared) would have
    to become private and unbindable: refused, and left exactly as it was."""
    sb = sandbox
    sb.sh("mkdir -p /srv/data && mount -t tmpfs data /srv/data && echo x > /srv/data/f")
    before, before_files = sb.mountinfo(), files(sb, "/srv", "/run")
    one_line(sb.mm(which, "/srv/data", "create", "c1"), 2,
             "/srv/data is a mount mirrormount did not make", f"{which}")
    one_line(sb.mm(which, "/srv/data", "create", "c1", "--dry-run"), 2, "did not make")
    assert sb.mountinfo() == before and files(sb, "/srv", "/run") == before_files
    doc = sb.mm(which, "/srv/data", "--json", "doctor")
    assert doc.returncode == 1
    assert any(c["level"] == "fail" and "did not make" in c["detail"] for c in doc.json)


@pytest.mark.parametrize("setup,args,words", [
    ("touch /srv/afile", ("--base", "/srv/afile"), ("BASE /srv/afile is not a directory",)),
    ("touch /srv/afile", ("--state", "/srv/afile/x"), ("STATE /srv/afile/x cannot be made",)),
    ("mkdir -p /srv/ro && mount -t tmpfs -o ro ro /srv/ro", ("--state", "/srv/ro/s"),
     ("STATE /srv/ro/s is not writable",)),
    ("", ("--base", "/srv/m", "--state", "/srv/m/s"), ("must be apart",)),
    ("", ("--base", "/srv/m", "--state", "/srv/m"), ("must be apart",)),
    ("", ("--state", "/"), ("STATE cannot be /",)),
])
def test_bad_base_or_state_exits_2_and_changes_nothing(sandbox, setup, args, words):
    sb = sandbox
    if setup:
        sb.sh(setup)
    before, before_files = sb.mountinfo(), files(sb, "/srv", "/run")
    one_line(sb.mm(*args, "create", "c1"), 2, *words)
    assert sb.mountinfo() == before and files(sb, "/srv", "/run") == before_files
    assert sb.mm(*args, "doctor").returncode == 1


def test_a_symlink_in_state_and_base_is_resolved_once(sandbox):
    """/var/run -> /run: guests come up intact, a second create stacks nothing, and destroy
    leaves no nsfs bind (everything is named by its real path)."""
    sb = sandbox
    sb.sh("mkdir -p /var /srv/realbase && ln -sfn /run /var/run && ln -sfn /srv/realbase "
          "/srv/linkbase")
    before = sb.mountinfo()
    mm = ("--state", "/var/run/mirrormount", "--base", "/srv/linkbase")
    ok(sb.mm(*mm, "create", "c1", "--ns", "pid"))
    ok(sb.mm(*mm, "create", "c2"))
    points = sb.mountpoints()
    assert points.count("/run/mirrormount") == 1 and points.count("/srv/realbase") == 1
    for name in ("c1", "c2"):
        st = sb.mm(*mm, "--json", "status", name)
        assert st.returncode == 0 and st.json["mirror_intact"] is True, st.stdout
        assert st.json["mirror"] == f"/srv/realbase/{name}"
    # the real paths name the same guests
    assert [g["name"] for g in ok(sb.mm("--state", "/run/mirrormount", "--base",
                                        "/srv/realbase", "--json", "list")).json] == ["c1", "c2"]
    ok(sb.mm(*mm, "destroy", "c1", "c2"))
    assert sb.mountinfo() == before      # no nsfs bind, no BASE or STATE left


# ---------------------------------------------------------------- 2. mirror+host
def test_mirror_host_on_a_private_mount_is_refused_naming_it(sandbox):
    sb = sandbox
    sb.sh("mkdir -p /srv/rootfs/bin /srv/rootfs/mnt")
    before = sb.mountinfo()
    r = sb.mm("create", "c1", "--rootfs", "/srv/rootfs", "--propagation", "mirror+host")
    if sb.propagation == "private":
        one_line(r, 2, "not shared (/", "mount --make-shared /")
        assert sb.mountinfo() == before
        sb.sh("mount --make-shared /")        # what the line says to do
        r = sb.mm("create", "c1", "--rootfs", "/srv/rootfs", "--propagation", "mirror+host")
    ok(r)
    # host mounts made under the rootfs now reach the guest
    sb.sh("mkdir -p /srv/rootfs/mnt/x && mount -t tmpfs fromhost /srv/rootfs/mnt/x")
    assert "/container/c1/mnt/x" in sb.mountpoints()
    st = sb.mm("--json", "status", "c1")     # the guest's / is a peer of the mirror
    assert st.returncode == 0 and st.json["mirror_intact"] is True, st.stdout
    assert st.json["mounts_host"] == st.json["mounts_guest"]
    sb.sh("umount /srv/rootfs/mnt/x")
    ok(sb.mm("destroy", "c1"))
    # mirrormount changed no host mount's propagation: only what the test did itself
    after = {f[4]: f for f in sb.mountinfo()}
    for f in before:
        assert f[4] in after


def test_status_flags_a_mirror_host_mirror_with_no_master(sandbox):
    sb = sandbox
    if sb.propagation == "private":
        sb.sh("mount --make-rshared /")
    ok(sb.mm("create", "c1", "--propagation", "mirror+host"))
    assert sb.mm("status", "c1").returncode == 0
    # cut the tie to the host by hand: shared still, but no longer anyone's slave
    sb.sh("mount --make-private /container/c1 && mount --make-shared /container/c1")
    st = sb.mm("--json", "status", "c1")
    assert st.returncode == 1
    assert any("receives from no host peer group" in p for p in st.json["problems"])


# ---------------------------------------------------------------- 3. batches
def test_a_batch_validates_every_name_before_acting(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1"))
    before = sb.mountinfo()
    one_line(sb.mm("create", "new1", "c1"), 2, "c1 already exists")
    one_line(sb.mm("create", "new1", "bad/name"), 2, "bad/name")
    one_line(sb.mm("create", "new1", "host"), 2, "reserved")
    one_line(sb.mm("destroy", "c1", "nope"), 2, "no such guest in STATE", "nope")
    assert sb.mountinfo() == before
    assert [g["name"] for g in ok(sb.mm("--json", "list")).json] == ["c1"]


def test_umount_of_nothing_is_bad_input(sandbox):
    """umount of a path that is not there, or is no mount point: exit 2, nothing changed
    (the unmount is the plan's first step, so nothing can have changed)."""
    sb = sandbox
    ok(sb.mm("create", "c1"))
    sb.sh("mkdir -p /srv/plain")
    before = sb.mountinfo()
    one_line(sb.mm("umount", "c1", "/srv/no-such-dir"), 2, "does not exist",
             "nothing was changed")
    one_line(sb.mm("umount", "c1", "/srv/plain"), 2, "not a mount point")
    one_line(sb.mm("umount", "c1", "/srv/plain", "--lazy"), 2, "not a mount point")
    assert sb.mountinfo() == before


# ---------------------------------------------------------------- 7. reserved names
@pytest.mark.parametrize("verb", [("create",), ("destroy",), ("status",),
                                  ("exec", "--", "true")])
def test_host_is_a_reserved_name(sandbox, verb):
    sb = sandbox
    before = sb.mountinfo()
    r = sb.mm(verb[0], "host", *verb[1:])
    one_line(r, 2, "host", "reserved")
    assert sb.mountinfo() == before
    assert json.loads(ok(sb.mm("--json", "list")).stdout) == []


# ---------------------------------------------------------------- 6. nested guests
@pytest.mark.parametrize("kinds", [(), ("--ns", "pid")])
def test_nested_guest_status_is_honest_and_leaves_nothing(sandbox, kinds):
    """mirrormount run inside a guest: the nested guest is intact in the guest, the host's
    status of the outer guest does not count the nested BASE/STATE's private mounts as
    problems, and once the nested guest is gone nothing of it is left on the host."""
    sb = sandbox
    # a confined guest cannot make mounts private, which the nested BASE and STATE must be:
    # it is refused, said so, and nothing changes
    ok(sb.mm("create", "c0", *kinds))
    before = sb.mountinfo()
    r = sb.mm("exec", "c0", "--", sys.executable, "-m", "mirrormount", "create", "n1")
    assert r.returncode == 1 and "--confine none" in r.stderr, r.stderr
    assert sb.mountinfo() == before
    ok(sb.mm("destroy", "c0"))
    ok(sb.mm("create", "c1", "--confine", "none", *kinds))
    before = sb.mountinfo()
    inner = ("exec", "c1", "--", sys.executable, "-m", "mirrormount")
    ok(sb.mm(*inner, "create", "n1"))
    st = sb.mm(*inner, "--json", "status", "n1")
    assert st.returncode == 0 and st.json["mirror_intact"] and st.json["problems"] == [], \
        st.stdout
    assert [g["name"] for g in ok(sb.mm(*inner, "--json", "list")).json] == ["n1"]
    outer = sb.mm("--json", "status", "c1")
    assert outer.returncode == 0 and outer.json["problems"] == [], outer.stdout
    ok(sb.mm(*inner, "destroy", "n1"))
    assert sb.mountinfo() == before       # no copy of the nested BASE or STATE remains
    st = sb.mm("--json", "status", "c1")
    assert st.returncode == 0 and st.json["problems"] == [], st.stdout


# ---------------------------------------------------------------- 10. fs.mount-max
class MountMax:
    """Lower fs.mount-max for a moment (it is global: restored in every case)."""

    PATH = "/proc/sys/fs/mount-max"

    def __init__(self, value: int) -> None:
        self.value = value

    def __enter__(self):
        with open(self.PATH) as f:
            self.saved = f.read().strip()
        with open(self.PATH, "w") as f:
            f.write(str(self.value))
        return self

    def __exit__(self, *exc):
        with open(self.PATH, "w") as f:
            f.write(self.saved)


def per_guest(sb):
    """How many mounts one more guest adds to the sandbox's namespace (measured)."""
    n = len(sb.mountinfo())
    ok(sb.mm("create", "probe"))
    cost = len(sb.mountinfo()) - n
    ok(sb.mm("destroy", "probe"))
    assert len(sb.mountinfo()) == n
    return cost


def test_near_mount_max_doctor_warns_and_create_rolls_back(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1"))
    cost = per_guest(sb)
    before = sb.mountinfo()
    with MountMax(len(before) + cost // 2):
        doc = sb.mm("--json", "doctor")
        check = next(c for c in doc.json if c["check"] == "fs.mount-max")
        assert check["level"] == "warn", check
        r = sb.mm("create", "c2")
        one_line(r, 1, "fs.mount-max")
        assert sb.mountinfo() == before          # rolled back
    assert [g["name"] for g in ok(sb.mm("--json", "list")).json] == ["c1"]


def test_a_batch_failing_midway_says_what_was_done(sandbox):
    sb = sandbox
    ok(sb.mm("create", "c1"))
    cost = per_guest(sb)
    with MountMax(len(sb.mountinfo()) + cost + cost // 2):
        r = sb.mm("create", "c2", "c3")
    one_line(r, 1, "fs.mount-max", "created: c2; not created: c3")
    assert [g["name"] for g in ok(sb.mm("--json", "list")).json] == ["c1", "c2"]

"""Issue 2: mirrored guests on today's kernels. Every test runs the real CLI against the real
kernel inside a throwaway sandbox, once with the sandbox's / private and once rshared."""
from __future__ import annotations

import pytest

from conftest import wait_for


def create(sb, *args):
    r = sb.mm("create", *args)
    assert r.returncode == 0, r.stderr
    return r


def guest_sh(sb, name, script, check=True):
    r = sb.mm("exec", name, "--", "/bin/sh", "-c", script)
    if check:
        assert r.returncode == 0, f"{script}: {r.stderr}{r.stdout}"
    return r


def live_reapers(sb):
    """mm-reaper processes that still run. A killed one may linger a moment as a zombie
    until its new parent reaps it; a zombie holds no namespace, so it does not count."""
    out = sb.sh("ps -eo stat=,comm= | awk '$2 == \"mm-reaper\" && $1 !~ /^Z/'").stdout
    return out.strip()


def host_mountpoints(sb):
    return sb.mountpoints()


def guest_mountpoints(sb, name):
    out = guest_sh(sb, name, "cat /proc/self/mountinfo").stdout
    return [line.split()[4] for line in out.splitlines()]


# ---------------------------------------------------------------- the thread's own example
def test_hostname_example(sandbox):
    host_before = sandbox.sh("hostname").stdout
    create(sandbox, "c1", "--hostname", "serge")
    assert guest_sh(sandbox, "c1", "hostname").stdout.strip() == "serge"
    assert sandbox.sh("hostname").stdout == host_before
    info = sandbox.mm("--json", "list").json[0]
    assert set(info["namespaces"]) == {"mnt", "uts"}
    assert info["namespaces"]["uts"].startswith("uts:[")


# ---------------------------------------------------------------- both directions
@pytest.mark.kernels
def test_host_mount_appears_in_guest(sandbox):
    create(sandbox, "c1")
    sandbox.sh("mkdir -p /tmp/h && mount -t tmpfs hostside /container/c1/tmp/h "
               "&& echo from-host > /container/c1/tmp/h/f")
    assert "/tmp/h" in guest_mountpoints(sandbox, "c1")
    assert guest_sh(sandbox, "c1", "cat /tmp/h/f").stdout.strip() == "from-host"


@pytest.mark.kernels
def test_guest_mount_appears_on_host(sandbox):
    create(sandbox, "c1")
    guest_sh(sandbox, "c1", "mkdir -p /tmp/g && mount -t tmpfs guestside /tmp/g "
                            "&& echo from-guest > /tmp/g/f")
    assert "/container/c1/tmp/g" in host_mountpoints(sandbox)
    assert sandbox.sh("cat /container/c1/tmp/g/f").stdout.strip() == "from-guest"
    # and an unmount in the guest removes the host copy too
    guest_sh(sandbox, "c1", "umount /tmp/g")
    assert "/container/c1/tmp/g" not in host_mountpoints(sandbox)


# ---------------------------------------------------------------- isolation
def test_guests_do_not_see_each_other_or_state(sandbox):
    create(sandbox, "c1", "c2")
    guest_sh(sandbox, "c1", "mkdir -p /tmp/only1 && mount -t tmpfs one /tmp/only1")
    mps2 = guest_mountpoints(sandbox, "c2")
    assert "/tmp/only1" not in mps2
    for name in ("c1", "c2"):
        mps = guest_mountpoints(sandbox, name)
        assert not [m for m in mps if m.startswith("/container") or m.startswith("/run/mirror")]
        # BASE and STATE are tmpfs on the host: the directories beneath are empty (§5b)
        listing = guest_sh(sandbox, name, "ls -A /container /run/mirrormount").stdout
        assert "c1" not in listing and "c2" not in listing and "guest.json" not in listing
        # exec exits with the command's status: test(1) says 1, "no such file"
        assert guest_sh(sandbox, name, "test -e /run/mirrormount/c1/ns/mnt",
                        check=False).returncode == 1


# ---------------------------------------------------------------- mirror vs mirror+host
@pytest.mark.parametrize("mode,reaches", [("mirror", False), ("mirror+host", True)])
def test_host_mount_elsewhere(sandbox, mode, reaches):
    if mode == "mirror+host" and sandbox.propagation == "private":
        # mirrormount never shares a host mount itself: it says which, and changes nothing
        before = sandbox.mountinfo()
        r = sandbox.mm("create", "c1", "--propagation", mode)
        assert r.returncode == 2 and "mount --make-shared /" in r.stderr, r.stderr
        assert sandbox.mountinfo() == before
        sandbox.sh("mount --make-rshared /")
    create(sandbox, "c1", "--propagation", mode)
    sandbox.sh("mkdir -p /srv/elsewhere && mount -t tmpfs elsewhere /srv/elsewhere")
    assert ("/srv/elsewhere" in guest_mountpoints(sandbox, "c1")) is reaches
    # The mirror stays bidirectional in both modes ...
    guest_sh(sandbox, "c1", "mkdir -p /tmp/g && mount -t tmpfs g /tmp/g")
    assert "/container/c1/tmp/g" in host_mountpoints(sandbox)
    # ... and the guest's mounts never reach the host's own tree.
    assert "/tmp/g" not in host_mountpoints(sandbox)
    st = sandbox.mm("--json", "status", "c1")
    assert st.returncode == 0 and st.json["mirror_intact"] is True, st.stdout


# ---------------------------------------------------------------- status
def test_status_intact_then_broken(sandbox):
    create(sandbox, "c1", "--confine", "none")      # confined, it could not break it
    st = sandbox.mm("--json", "status", "c1")
    assert st.returncode == 0
    data = st.json
    assert data["mirror_intact"] is True and data["problems"] == []
    assert data["mounts_host"] == data["mounts_guest"] > 5
    assert set(data) >= {"name", "mirror", "mirror_intact", "mounts_host", "mounts_guest",
                         "problems"}
    guest_sh(sandbox, "c1", "mount --make-rprivate /")
    st = sandbox.mm("--json", "status", "c1")
    assert st.returncode == 1
    assert st.json["mirror_intact"] is False
    assert any("no longer a peer" in p and "hint:" in p for p in st.json["problems"])
    human = sandbox.mm("status", "c1")
    assert "mirror_intact: NO" in human.stdout and "problem:" in human.stdout


# ---------------------------------------------------------------- mount / umount
def test_mount_into_guest_and_umount(sandbox):
    create(sandbox, "c1")
    sandbox.sh("mkdir -p /tmp/target")
    r = sandbox.mm("mount", "c1", "viamirror", "/tmp/target", "-t", "tmpfs", "-o", "size=1m")
    assert r.returncode == 0, r.stderr
    assert "/tmp/target" in guest_mountpoints(sandbox, "c1")
    assert "/container/c1/tmp/target" in host_mountpoints(sandbox)
    r = sandbox.mm("umount", "c1", "/tmp/target")
    assert r.returncode == 0, r.stderr
    assert "/tmp/target" not in guest_mountpoints(sandbox, "c1")
    assert "/container/c1/tmp/target" not in host_mountpoints(sandbox)


def test_mount_is_symlink_safe(sandbox):
    create(sandbox, "c1")
    # The guest plants symlinks pointing at host-looking paths; both must resolve inside it.
    guest_sh(sandbox, "c1", "mkdir -p /tmp/inside /tmp/etcdir && ln -sfn /tmp/etcdir /tmp/abs "
                            "&& ln -sfn ../../../../../../tmp/inside /tmp/rel")
    r = sandbox.mm("mount", "c1", "t1", "/tmp/abs", "-t", "tmpfs")
    assert r.returncode == 0, r.stderr
    r = sandbox.mm("mount", "c1", "t2", "/tmp/rel", "-t", "tmpfs")
    assert r.returncode == 0, r.stderr
    host = host_mountpoints(sandbox)
    assert "/container/c1/tmp/etcdir" in host and "/container/c1/tmp/inside" in host
    assert "/tmp/etcdir" not in host and "/tmp/inside" not in host
    # a symlink to / means the guest's / (the mirror), never the host's
    guest_sh(sandbox, "c1", "ln -sfn / /tmp/toroot")
    r = sandbox.mm("mount", "c1", "t3", "/tmp/toroot/srv", "-t", "tmpfs")
    assert r.returncode == 0, r.stderr
    host = host_mountpoints(sandbox)
    assert "/container/c1/srv" in host and "/srv" not in host


def test_umount_busy_exits_3(sandbox):
    create(sandbox, "c1")
    guest_sh(sandbox, "c1", "mkdir -p /tmp/usb && mount -t tmpfs usb /tmp/usb")
    camper = sandbox.popen("cd /container/c1/tmp/usb && exec sleep 600")
    try:
        assert wait_for(lambda: sandbox.sh("pgrep -x sleep", check=False).returncode == 0)
        r = sandbox.mm("umount", "c1", "/tmp/usb")
        assert r.returncode == 3, r.stderr
        assert "cannot unmount /tmp/usb in c1" in r.stderr and "sleep" in r.stderr
    finally:
        camper.kill()
        camper.wait()


# ---------------------------------------------------------------- exec / pid namespaces
def test_exec_status_and_pid_namespace(sandbox):
    create(sandbox, "p1", "--ns", "pid,ipc,net,cgroup")
    assert guest_sh(sandbox, "p1", "exit 7", check=False).returncode == 7
    out = guest_sh(sandbox, "p1", "echo $$; cat /proc/1/comm").stdout.split()
    assert out[1] == "mm-reaper" and int(out[0]) > 1
    info = sandbox.mm("--json", "list").json[0]
    assert set(info["namespaces"]) == {"mnt", "ipc", "net", "pid", "cgroup"}
    assert info["state"] == "stopped" and len(info["pids"]) == 1  # only the reaper
    # the guest's own /proc propagated to the host mirror
    assert "/container/p1/proc" in host_mountpoints(sandbox)
    # NSpid: one pid per level, as the thread asked
    sleeper = sandbox.popen("python3 -m mirrormount exec p1 -- sleep 600")
    try:
        pids = wait_for(lambda: [p for p in sandbox.mm("--json", "list").json[0]["pids"]
                                 if p != info["pids"][0]])
        # only the command is inside: mirrormount's own waiting parent is not
        assert len(pids) == 1, pids
        assert pids, "the sleeper never appeared in the guest"
        nspid = sandbox.sh(f"grep NSpid /proc/{pids[0]}/status").stdout.split()[1:]
        assert len(nspid) == 2 and int(nspid[1]) > 1
        assert sandbox.mm("--json", "list").json[0]["state"] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_exec_missing_command(sandbox):
    create(sandbox, "c1")
    r = sandbox.mm("exec", "c1", "--", "/no/such/cmd")
    assert r.returncode == 127 and "no/such/cmd" in r.stderr


# ---------------------------------------------------------------- destroy
# Names, types, modes, sizes, mtimes and link targets, then contents: any change shows.
CHECKSUM = ("find /srv /mnt /tmp /root /home /media /etc -xdev -printf '%p %y %m %s %T@ %l\\n' "
            "| sort | sha256sum; find /srv /mnt /tmp /root -xdev -type f -exec cat {} + "
            "| sha256sum")


@pytest.mark.kernels
def test_destroy_leaves_nothing_and_host_files_unchanged(sandbox):
    sandbox.sh("mkdir -p /srv/data && echo precious > /srv/data/file && "
               "ln -s /srv/data /srv/link")
    before_sum = sandbox.sh(CHECKSUM).stdout
    before_mounts = sandbox.mountinfo()
    create(sandbox, "c1", "--hostname", "x", "--ns", "pid,net")
    create(sandbox, "c2")
    assert sandbox.mm("destroy", "c1").returncode == 0
    # one guest left: BASE, STATE and the nursery stay for it
    assert {"/container", "/run/mirrormount"} <= set(host_mountpoints(sandbox))
    assert sandbox.mm("destroy", "c2").returncode == 0
    # the last guest gone: BASE, STATE and the nursery go too; the table is as before
    assert sandbox.mountinfo() == before_mounts
    assert sandbox.sh("ls -A /container").stdout == ""
    assert sandbox.sh("cat /srv/data/file").stdout == "precious\n"
    assert sandbox.sh(CHECKSUM).stdout == before_sum
    assert sandbox.mm("--json", "list").json == []
    # no reaper left behind
    assert not live_reapers(sandbox)


def test_destroy_refuses_while_processes_inside(sandbox):
    create(sandbox, "c1")
    p = sandbox.popen("python3 -m mirrormount exec c1 -- sleep 600")
    try:
        assert wait_for(lambda: sandbox.mm("--json", "list").json[0]["pids"])
        r = sandbox.mm("destroy", "c1")
        assert r.returncode == 3 and "process" in r.stderr
        assert sandbox.mm("--json", "list").json[0]["name"] == "c1"
        r = sandbox.mm("destroy", "--force", "--grace", "1", "c1")
        assert r.returncode == 0, r.stderr
        assert sandbox.mm("--json", "list").json == []
    finally:
        p.kill()
        p.wait()


# ---------------------------------------------------------------- dry-run
def test_dry_run_prints_plan_and_changes_nothing(sandbox):
    before = sandbox.mountinfo()
    r = sandbox.mm("create", "c1", "--hostname", "h", "--dry-run")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    order = ["mount -t tmpfs -o mode=0755 mirrormount-base /container",
             "mount --make-unbindable /container",
             "mount --rbind / /container/c1",
             "mount --make-rprivate /container/c1",
             "mount --make-rshared /container/c1",
             "pivot_root . mnt",
             "mount --bind /proc/$!/ns/mnt /run/mirrormount/c1/ns/mnt"]
    positions = [text.find(s) for s in order]
    assert -1 not in positions, [s for s, p in zip(order, positions) if p < 0]
    assert positions == sorted(positions)
    assert "unshare --uts --mount" in text and "hostname h" in text
    assert sandbox.mountinfo() == before
    assert sandbox.sh("test -e /container || test -e /run/mirrormount; echo $?").stdout == "1\n"


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", ["-x", ".hidden", "a/b", "", "x" * 64, "ü", "a b", ".."])
def test_bad_names_exit_2_and_change_nothing(sandbox, bad):
    before = sandbox.mountinfo()
    r = sandbox.mm("create", bad)
    assert r.returncode == 2, (bad, r.stderr)
    assert "Traceback" not in r.stderr
    assert sandbox.mountinfo() == before
    assert sandbox.sh("test -e /container; echo $?").stdout == "1\n"


def test_non_root_is_refused_and_changes_nothing(sandbox):
    before = sandbox.mountinfo()
    r = sandbox.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     "python3", "-m", "mirrormount", "create", "c1"])
    assert r.returncode == 1 and "needs root" in r.stderr, r.stderr   # an operation failure
    assert "Traceback" not in r.stderr
    assert sandbox.mountinfo() == before


def test_exists_and_unknown(sandbox):
    create(sandbox, "c1")
    r = sandbox.mm("create", "c1")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert sandbox.mm("status", "nope").returncode == 2
    assert sandbox.mm("destroy", "nope").returncode == 2


# ---------------------------------------------------------------- concurrency
def test_concurrent_creates_leave_exactly_one_guest(sandbox):
    procs = [sandbox.popen("python3 -m mirrormount create c1") for _ in range(4)]
    codes = sorted(p.wait() for p in procs)
    assert codes == [0, 2, 2, 2], codes        # the others: "already exists", a usage error
    guests = sandbox.mm("--json", "list").json
    assert [g["name"] for g in guests] == ["c1"] and guests[0]["state"] == "stopped"
    assert sandbox.mm("--json", "status", "c1").json["mirror_intact"] is True


# ---------------------------------------------------------------- enter, --bind, doctor
def test_enter_runs_a_shell_inside(sandbox):
    create(sandbox, "c1", "--hostname", "inside")
    sandbox.env["SHELL"] = "/bin/sh"
    r = sandbox.mm("enter", "c1", input="hostname; pwd; exit 5\n")
    assert r.returncode == 5 and r.stdout.split() == ["inside", "/"], (r.stdout, r.stderr)


def test_bind_host_dir_into_guest(sandbox):
    create(sandbox, "c1")
    sandbox.sh("mkdir -p /srv/share /tmp/dst && echo shared > /srv/share/f")
    # /srv/share is not a mount of its own: only the bind, made through the mirror, shows it.
    r = sandbox.mm("mount", "c1", "/srv/share", "/tmp/dst", "--bind", "-o", "ro")
    assert r.returncode == 0, r.stderr
    assert guest_sh(sandbox, "c1", "cat /tmp/dst/f").stdout == "shared\n"
    r = guest_sh(sandbox, "c1", "touch /tmp/dst/g", check=False)   # exec exits with touch's 1
    assert r.returncode == 1 and "Read-only file system" in r.stderr, r.stderr
    r = sandbox.mm("mount", "c1", "/no/such/dir", "/tmp/dst", "--bind")
    assert r.returncode == 2


def test_doctor(sandbox):
    r = sandbox.mm("doctor")
    assert r.returncode == 0, r.stdout
    names = [c["check"] for c in sandbox.mm("doctor", "--json").json]
    for want in ("kernel", "open_tree/move_mount", "mount_setattr", "openat2",
                 "statx mount ids", "propagation of /", "BASE", "STATE", "fs.mount-max",
                 "privilege", "python"):
        assert want in names
    create(sandbox, "c1")
    levels = {c["check"]: c["level"] for c in sandbox.mm("doctor", "--json").json}
    assert levels["BASE"] == levels["STATE"] == "ok"
    expected = "shared" if sandbox.propagation == "rshared" else "private"
    assert expected in [c for c in sandbox.mm("doctor", "--json").json
                        if c["check"] == "propagation of /"][0]["detail"]


# ---------------------------------------------------------------- recipes
def test_create_from_recipe(sandbox):
    text = ("[guest]\nhostname = 'fromrecipe'\nnamespaces = ['pid']\n"
            "[[mount]]\nsource = 'seen'\ntarget = '/srv'\ntype = 'tmpfs'\n"
            "[[mount]]\nsource = 'hidden'\ntarget = '/mnt'\ntype = 'tmpfs'\n"
            "guest_only = true\n")
    sandbox.sh(f"cat > /tmp/r.toml <<'EOF'\n{text}EOF")
    dry = sandbox.mm("create", "c1", "--recipe", "/tmp/r.toml", "--dry-run")
    assert dry.returncode == 0 and "mirrormount mount c1 hidden /mnt -t tmpfs --guest-only" \
        in dry.stdout
    create(sandbox, "c1", "--recipe", "/tmp/r.toml")
    assert guest_sh(sandbox, "c1", "hostname").stdout.strip() == "fromrecipe"
    gm = guest_mountpoints(sandbox, "c1")
    assert "/srv" in gm and "/mnt" in gm
    host = host_mountpoints(sandbox)
    assert "/container/c1/srv" in host and "/container/c1/mnt" not in host
    assert sandbox.mm("--json", "list").json[0]["guest_only"] == ["/mnt"]


def test_recipe_mount_failure_leaves_no_guest(sandbox):
    # A device that is not there: nothing before the mount itself can know (the kernel
    # opens the source only when the filesystem is created).
    sandbox.sh("printf '[[mount]]\\nsource = \"/dev/no-such-disk\"\\ntarget = \"/mnt\"\\n"
               "type = \"ext4\"\\n' > /tmp/bad.toml")
    before = sandbox.mountinfo()
    r = sandbox.mm("create", "c1", "--recipe", "/tmp/bad.toml")
    assert r.returncode == 1, r.stderr
    assert sandbox.mm("--json", "list").json == []
    # nothing remains: the guest was the last one, so BASE, STATE and the nursery went too
    assert sandbox.mountinfo() == before


@pytest.mark.parametrize("mount, why", [
    ('source = "s"\ntarget = "/no/such/dir"\ntype = "tmpfs"', "add mkdir = true"),
    ('source = "s"\ntarget = "/mnt"\ntype = "tmpfs"\noptions = "bogus"', "bogus"),
    ('source = "/no/such/src"\ntarget = "/mnt"\nbind = true', "does not exist"),
    ('source = "s"\ntarget = "/mnt"\ntype = "nosuchfs"', "nosuchfs"),
])
def test_a_recipe_mount_that_cannot_work_is_refused_before_anything_changes(sandbox, mount,
                                                                            why):
    """Everything a recipe's mount can be judged on before the guest exists is judged then:
    exit 2 (an unknown filesystem type: 1, as for mount), nothing made, with --dry-run too;
    the message names the file and the [[mount]]."""
    sandbox.sh(f"printf '[[mount]]\\n{mount}\\n' > /tmp/r.toml")
    before = sandbox.mountinfo()
    for extra in (["--dry-run"], []):
        r = sandbox.mm("create", "c1", "--recipe", "/tmp/r.toml", *extra)
        assert r.returncode == (1 if "nosuchfs" in mount else 2), (extra, r.stderr)
        assert why in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
        if "nosuchfs" not in mount:
            assert "/tmp/r.toml [[mount]] #1" in r.stderr, r.stderr
        assert sandbox.mountinfo() == before
    assert sandbox.mm("--json", "list").json == []


def test_a_recipe_mount_with_mkdir_makes_its_target(sandbox):
    sandbox.sh("printf '[[mount]]\\nsource = \"s\"\\ntarget = \"/srv/new/dir\"\\n"
               "type = \"tmpfs\"\\nmkdir = true\\n"
               "[[mount]]\\nsource = \"t\"\\ntarget = \"/srv/new/dir/under\"\\n"
               "type = \"tmpfs\"\\nmkdir = true\\n' > /tmp/r.toml")
    dry = sandbox.mm("create", "c1", "--recipe", "/tmp/r.toml", "--dry-run")
    assert dry.returncode == 0 and "/srv/new/dir -t tmpfs --mkdir" in dry.stdout, dry.stderr
    create(sandbox, "c1", "--recipe", "/tmp/r.toml")
    gm = guest_mountpoints(sandbox, "c1")
    assert "/srv/new/dir" in gm and "/srv/new/dir/under" in gm


# ---------------------------------------------------------------- kernels without statmount
def test_lifecycle_without_statmount(sandbox):
    """Linux < 6.8 (e.g. Debian's 6.1) has no statmount(2): single-mount questions fall back
    to a filtered mountinfo scan. The answers must be the same."""
    sandbox.env["MIRRORMOUNT_NO_STATMOUNT"] = "1"
    create(sandbox, "c1", "--ns", "pid")
    create(sandbox, "c2")
    assert sandbox.mm("create", "c1").returncode == 2          # exists, found without statmount
    listed = sandbox.mm("--json", "list").json
    assert [(g["name"], g["state"]) for g in listed] == [("c1", "stopped"), ("c2", "stopped")]
    assert set(listed[0]["namespaces"]) == {"mnt", "pid"}
    assert sandbox.mm("--json", "status", "c1").json["mirror_intact"] is True
    del sandbox.env["MIRRORMOUNT_NO_STATMOUNT"]
    assert sandbox.mm("--json", "list").json == listed            # same answers either way
    sandbox.env["MIRRORMOUNT_NO_STATMOUNT"] = "1"
    assert sandbox.mm("destroy", "c1", "c2").returncode == 0
    assert not [m for m in host_mountpoints(sandbox) if m.startswith("/container/")]

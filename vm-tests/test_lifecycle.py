"""The guest lifecycle on the real kernel: the thread's two stop protocols (init-based and
init-less), start again, ps with a pid per level, composition (--join), and the reaper's
name. Each test runs in its own sandbox, with / private and rshared."""
from __future__ import annotations

import json

# A process that ignores TERM, started in the guest, its stdio its own (so that nothing
# waits on our pipes): stop must still end it (KILL after the timeout).
STUBBORN = ("trap '' TERM; sleep 1000000 </dev/null >/dev/null 2>&1 & "
            "sleep 1000000 </dev/null >/dev/null 2>&1 &")


def info(sb, name):
    return next(g for g in sb.mm("--json", "list", check=True).json if g["name"] == name)


def pins(sb, name):
    """inode of each nsfs pin of the guest: {kind: inode}."""
    out = sb.sh(f"for f in /run/mirrormount/{name}/ns/*; do echo $(basename $f) "
                "$(stat -L -c %i $f); done").stdout
    return dict(ln.split() for ln in out.splitlines())


def ps(sb, name):
    r = sb.mm("ps", name, "--json")
    assert r.returncode == 0, r.stderr
    return r.json


def test_init_based_stop_start_destroy(sandbox):
    sb = sandbox
    before = sb.mountpoints()
    r = sb.mm("create", "c1", "--init", "sleep 1000000", "--hostname", "box", "--json")
    assert r.returncode == 0, r.stderr
    assert r.json[0]["state"] == "running" and r.json[0]["init"] == ["sleep", "1000000"]
    assert info(sb, "c1")["state"] == "running"
    assert info(sb, "c1")["init"] == ["sleep", "1000000"]
    rows = ps(sb, "c1")
    init = [p for p in rows if p["guest_pid"] == 1]
    assert len(init) == 1 and init[0]["cmd"] == "sleep 1000000" and init[0]["pid"] > 1
    assert init[0]["nspid"][-1] == 1 and init[0]["nspid"][0] == init[0]["pid"]
    assert sb.mm("exec", "c1", "--", "sh", "-c", STUBBORN).returncode == 0
    assert len(ps(sb, "c1")) == 3
    kept = {k: v for k, v in pins(sb, "c1").items() if k != "pid"}
    old_pid = pins(sb, "c1")["pid"]

    # sleep as PID 1 has no TERM handler: the kernel drops TERM from an ancestor namespace
    # (pid_namespaces(7)), so the timeout's KILL ends it, and with it its namespace
    r = sb.mm("stop", "c1", "--timeout", "1")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "SIGTERM" in r.stderr and len(r.stderr.splitlines()) == 1
    assert info(sb, "c1")["state"] == "stopped" and ps(sb, "c1") == []
    assert {k: v for k, v in pins(sb, "c1").items() if k != "pid"} == kept   # survive stop
    r = sb.mm("exec", "c1", "--", "true")
    assert r.returncode == 1 and "init is gone" in r.stderr and "mirrormount start c1" in r.stderr
    assert sb.mm("stop", "c1").stdout.strip() == "c1: stopped already"

    # start: a fresh pid namespace, the same others; its /proc shows its own pids
    r = sb.mm("start", "c1")
    assert r.returncode == 0, r.stderr
    assert info(sb, "c1")["state"] == "running"
    now = pins(sb, "c1")
    assert now["pid"] != old_pid and {k: v for k, v in now.items() if k != "pid"} == kept
    assert sb.mm("exec", "c1", "--", "hostname").stdout.strip() == "box"
    out = sb.mm("exec", "c1", "--", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '").stdout
    assert out.strip() == "sleep 1000000"
    # one /proc, the fresh one (the ended namespace's is detached, not hidden beneath), and
    # the init runs under the guest's confinement, like every process mirrormount starts
    procs = sb.mm("exec", "c1", "--", "sh", "-c", "grep -c ' - proc ' /proc/self/mountinfo")
    assert procs.stdout.strip() == "1", procs
    seccomp = sb.mm("exec", "c1", "--", "grep", "^Seccomp:", "/proc/1/status").stdout
    assert seccomp.split() == ["Seccomp:", "2"]
    assert sb.mm("start", "c1").stdout.strip() == "c1: running already"

    # a running guest still refuses destroy; after stop, destroy leaves nothing
    assert sb.mm("destroy", "c1").returncode == 3
    r = sb.mm("stop", "c1", "--timeout", "0", "--signal", "KILL")
    assert r.returncode == 2 and "KILL" in r.stderr
    assert sb.mm("stop", "c1", "--timeout", "0.5").returncode == 0
    assert sb.mm("destroy", "c1").returncode == 0
    assert sb.mountpoints() == before
    assert "sleep 1000000" not in sb.sh("ps -eo args").stdout


def test_init_that_handles_the_stop_signal_ends_in_time(sandbox):
    sb = sandbox
    init = "sh -c 'trap \"exit 0\" USR1; while :; do sleep 0.1; done'"
    assert sb.mm("create", "c1", "--init", init, "--stop-signal", "USR1",
                 "--confine", "none").returncode == 0
    assert info(sb, "c1")["state"] == "running"
    r = sb.mm("stop", "c1", "--timeout", "30")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert info(sb, "c1")["state"] == "stopped"
    assert sb.mm("destroy", "c1").returncode == 0


def test_init_less_stop_runs_shutdown_then_term_and_kill(sandbox):
    sb = sandbox
    before = sb.mountpoints()
    r = sb.mm("create", "c1", "--ns", "pid",
              "--start", "sleep 1000000 </dev/null >/dev/null 2>&1 &",
              "--shutdown", "echo ran > /tmp/shutdown-ran")
    assert r.returncode == 0, r.stderr
    assert info(sb, "c1")["state"] == "stopped"
    r = sb.mm("start", "c1")
    assert r.returncode == 0, r.stderr
    assert info(sb, "c1")["state"] == "running"
    assert sb.mm("exec", "c1", "--", "sh", "-c", STUBBORN).returncode == 0
    rows = ps(sb, "c1")
    reaper = [p for p in rows if p["guest_pid"] == 1]
    assert reaper and reaper[0]["cmd"] == "mirrormount-reaper c1"
    assert len(rows) == 4
    kept = pins(sb, "c1")

    r = sb.mm("stop", "c1", "--timeout", "1")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "killed" in r.stderr        # the one that ignored TERM
    assert sb.sh("cat /tmp/shutdown-ran").stdout.strip() == "ran"
    rows = ps(sb, "c1")
    assert [p["guest_pid"] for p in rows] == [1]                   # the reaper stays
    assert info(sb, "c1")["state"] == "stopped"
    assert pins(sb, "c1") == kept                                 # every namespace stays
    assert sb.mm("exec", "c1", "--", "true").returncode == 0       # exec still works

    assert sb.mm("start", "c1").returncode == 0
    assert info(sb, "c1")["state"] == "running"
    assert sb.mm("stop", "c1").returncode == 0
    assert sb.mm("destroy", "c1").returncode == 0
    assert sb.mountpoints() == before


def test_a_guest_pid_and_a_host_pid_for_the_same_process(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1", "--ns", "pid").returncode == 0
    assert sb.mm("exec", "c1", "--", "sh", "-c",
                 "sleep 999999 </dev/null >/dev/null 2>&1 &").returncode == 0
    rows = [p for p in ps(sb, "c1") if p["cmd"] == "sleep 999999"]
    assert len(rows) == 1
    row = rows[0]
    assert set(row) >= {"pid", "guest_pid", "user", "cmd", "cgroup", "nspid"}
    assert row["user"] == "root" and row["pid"] != row["guest_pid"]
    # the host's NSpid of the host pid, and the guest's own /proc at the guest pid
    nspid = sb.sh(f"grep NSpid /proc/{row['pid']}/status").stdout.split()[1:]
    assert [int(x) for x in nspid] == row["nspid"] == [row["pid"], row["guest_pid"]]
    inside = sb.mm("exec", "c1", "--", "sh", "-c",
                   f"tr '\\0' ' ' < /proc/{row['guest_pid']}/cmdline").stdout
    assert inside.strip() == "sleep 999999"
    table = sb.mm("ps", "c1").stdout.splitlines()
    assert table[0].split() == ["PID", "GUEST_PID", "USER", "CMD"]
    assert any(ln.split()[:2] == [str(row["pid"]), str(row["guest_pid"])] for ln in table)
    # the reaper says what it is: ps -f shows whose it is
    args = sb.sh("ps -eo args").stdout
    assert "mirrormount-reaper c1" in args
    assert sb.mm("destroy", "c1", "--force", "--grace", "0").returncode == 0


def test_joined_net_namespace_is_shared_and_mount_namespaces_are_not(sandbox):
    sb = sandbox
    before = sb.mountpoints()
    assert sb.mm("create", "c1", "--ns", "net,pid").returncode == 0
    r = sb.mm("create", "c2", "--join", "net=c1", "--ns", "pid")
    assert r.returncode == 0, r.stderr

    def ns(name, kind):
        r = sb.mm("exec", name, "--", "readlink", f"/proc/self/ns/{kind}")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert ns("c1", "net") == ns("c2", "net")
    assert ns("c1", "mnt") != ns("c2", "mnt")
    assert ns("c1", "pid") != ns("c2", "pid")
    host_net = sb.sh("readlink /proc/self/ns/net").stdout.strip()
    assert ns("c2", "net") != host_net
    assert pins(sb, "c1")["net"] == pins(sb, "c2")["net"]
    # a change made in one is seen by the other: lo, down in a new net namespace, set up
    assert ",UP" not in sb.mm("exec", "c2", "--", "ip", "link", "show", "lo").stdout
    assert sb.mm("exec", "c1", "--", "ip", "link", "set", "lo", "up").returncode == 0
    assert ",UP" in sb.mm("exec", "c2", "--", "ip", "link", "show", "lo").stdout

    listed = {g["name"]: g for g in sb.mm("--json", "list").json}
    assert listed["c2"]["joins"] == {"net": "c1"} and listed["c1"]["joins"] == {}
    assert listed["c1"]["joined_by"] == {"c2": ["net"]}
    assert "joined by:     c2 (net)" in sb.mm("status", "c1").stdout
    assert "joins:         net of c1" in sb.mm("status", "c2").stdout

    r = sb.mm("destroy", "c1", "--force")
    assert r.returncode == 3 and "c2 (net)" in r.stderr
    # bad joins: exit 2, nothing made
    for args, why in ((["--join", "mnt=c1"], "cannot be joined"),
                      (["--join", "ipc=c1"], "no ipc namespace"),
                      (["--join", "net=nope"], "no such guest"),
                      (["--join", "net=c1", "--ns", "net"], "not both"),
                      (["--join", "uts=c1", "--hostname", "x"], "hostname")):
        r = sb.mm("create", "c3", *args)
        assert r.returncode == 2 and why in r.stderr, (args, r.stderr)
    assert "c3" not in {g["name"] for g in sb.mm("--json", "list").json}
    # in one batch, in either order: the joiner is destroyed first
    r = sb.mm("destroy", "c1", "c2", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert len(sb.mm("--json", "list").json) == 2
    r = sb.mm("destroy", "c1", "c2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["destroyed c2", "destroyed c1"]
    assert sb.mountpoints() == before


def test_dry_runs_and_bad_input(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1", "--init", "sleep 1000000").returncode == 0
    dry = sb.mm("stop", "c1", "--dry-run")
    assert dry.returncode == 0 and "# step 1:" in dry.stdout and "kill -s TERM" in dry.stdout
    assert info(sb, "c1")["state"] == "running"
    for args in (["create", "c2", "--init", "'unbalanced"], ["create", "c2", "--init", ""],
                 ["create", "c2", "--stop-signal", "NOPE"],
                 ["stop", "c1", "--timeout", "-1"], ["stop", "nope"], ["start", "nope"],
                 ["ps", "nope"]):
        r = sb.mm(*args)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, (args, r.stderr)
    r = sb.mm("create", "c2", "--init", "/no/such/init")
    assert r.returncode == 1 and "not found" in r.stderr
    assert "c2" not in {g["name"] for g in sb.mm("--json", "list").json}
    assert sb.mm("stop", "c1", "--timeout", "0").returncode == 0
    assert sb.mm("destroy", "c1").returncode == 0
    assert json.loads(sb.mm("--json", "list").stdout) == []


def set_init(sb, name: str, argv: list[str]) -> None:
    """Change a stopped guest's init in its record, as a new recipe would (test only)."""
    path = f"/run/mirrormount/{name}/guest.json"
    rec = json.loads(sb.sh(f"cat {path}").stdout)
    rec["init"] = argv
    sb.sh(f"cat > {path} <<'EOF'\n{json.dumps(rec)}\nEOF")


def test_start_of_an_init_that_ends_at_once_fails_and_says_so(sandbox):
    """An init that exits at once (here with status 3) leaves the guest stopped: `start`
    exits 1 saying so, never "started"; a good init afterwards is not affected."""
    sb = sandbox
    assert sb.mm("create", "x5", "--init", "sleep 1000000").returncode == 0
    assert sb.mm("stop", "x5", "--timeout", "1").returncode == 0
    set_init(sb, "x5", ["sh", "-c", "exit 3"])
    r = sb.mm("start", "x5")
    assert r.returncode == 1 and "ended at once" in r.stderr and "started" not in r.stdout, r
    assert info(sb, "x5")["state"] == "stopped"
    set_init(sb, "x5", ["sleep", "1000000"])
    r = sb.mm("start", "x5")
    assert r.returncode == 0 and r.stdout.startswith("started x5"), r
    assert info(sb, "x5")["state"] == "running"

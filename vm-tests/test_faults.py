"""Failure at every point of a create: rollback, a kill (SIGKILL) at every step and inside the
guest-spawn step and the rollback itself, the nsfs quirk's retry path (kernel-findings §6),
and the promise that creating or destroying one guest leaves the others' mirrors intact.

Points come from faults.py: MIRRORMOUNT_FAULT=N fails after step N of `--dry-run`'s
numbering (0 = before the first), N.M at point M inside step N, undoK after the K-th undo
action of a rollback; `:kill` dies by SIGKILL there. Sub-points are discovered, not assumed:
the test walks N.1, N.2, ... until a run completes without reaching one.
"""
from __future__ import annotations

from conftest import wait_for

CREATE = ("c1", "--ns", "pid", "--hostname", "h")


def steps_of(sb, *args: str) -> list[str]:
    """The step lines of `create ARGS --dry-run`, in order."""
    r = sb.mm("create", *args, "--dry-run")
    assert r.returncode == 0, r.stderr
    return [ln for ln in r.stdout.splitlines() if ln.startswith("# step ")]


def spawn_step(steps: list[str]) -> int:
    """The number of the step that builds the guest's namespaces."""
    return next(i for i, ln in enumerate(steps, start=1) if "cloned from the nursery" in ln)


def leftover_processes(sb) -> list[str]:
    """Processes in the sandbox besides its PID 1 and the shell asking (reapers, children
    of a killed CLI). A zombie holds nothing, so zombies do not count."""
    out = sb.sh("ps -eo pid=,stat=,comm=,args=").stdout.splitlines()
    return [ln for ln in out
            if ln.split()[0] != "1" and not ln.split()[1].startswith("Z")
            and ln.split()[2] not in ("ps", "sh")]


def clean_slate(sb) -> None:
    """Back to a sandbox where mirrormount never ran: no guests, no nursery, no BASE/STATE,
    no remembered CPU. Destroys what the CLI knows, then unmounts the set-up."""
    for g in sb.mm("--json", "list").json:
        assert sb.mm("destroy", g["name"], "--force", "--grace", "0").returncode == 0
    sb.sh("umount /run/mirrormount/.nursery/mnt 2>/dev/null; umount /run/mirrormount; "
          "umount /container; rmdir /container; rm -f /run/mirrormount/.nursery/cpu "
          "/run/mirrormount/.nursery/mnt; rmdir /run/mirrormount/.nursery /run/mirrormount",
          check=False)


def recover_with_destroy(sb, point: str) -> None:
    listed = {g["name"]: g for g in sb.mm("--json", "list").json}
    if "c1" in listed:
        assert listed["c1"]["state"] in ("broken", "stopped"), (point, listed["c1"])
        r = sb.mm("destroy", "c1")
        assert r.returncode == 0, (point, r.stderr)


def fault_points(sb, steps: list[str]) -> list[str]:
    """Every point of the plan: 0..N, and every sub-point of the spawn step (discovered by
    running until a sub-point is not reached; each probe is rolled back by the fault)."""
    points = [str(n) for n in range(len(steps) + 1)]
    spawn = spawn_step(steps)
    m = 1
    while True:
        sb.env["MIRRORMOUNT_FAULT"] = f"{spawn}.{m}"
        r = sb.mm("create", *CREATE)
        del sb.env["MIRRORMOUNT_FAULT"]
        if r.returncode == 0:
            assert sb.mm("destroy", "c1").returncode == 0
            break
        assert r.returncode == 1 and "injected fault" in r.stderr, (m, r.stderr)
        points.append(f"{spawn}.{m}")
        m += 1
    assert m >= 5, f"the spawn step should have at least 4 sub-points, found {m - 1}"
    return points


# ---------------------------------------------------------------- rollback at every point
def test_failed_create_undoes_every_point(sandbox):
    before = sandbox.mountinfo()
    steps = steps_of(sandbox, *CREATE)
    assert len(steps) >= 12
    points = fault_points(sandbox, steps)
    clean_slate(sandbox)          # discovery ended with one real create
    for point in points:
        sandbox.env["MIRRORMOUNT_FAULT"] = point
        r = sandbox.mm("create", *CREATE)
        assert r.returncode == 1 and "injected fault" in r.stderr, (point, r.stderr)
        # the very first create also builds BASE, STATE and the nursery: all undone too
        assert sandbox.mountinfo() == before, f"point {point} left mounts behind"
        assert sandbox.sh("ls -A /container /run/mirrormount 2>/dev/null | grep -v : || true"
                          ).stdout.strip() == "", f"point {point} left files behind"
        assert leftover_processes(sandbox) == [], point
    del sandbox.env["MIRRORMOUNT_FAULT"]
    print(f"rollback proven at {len(points)} points ({len(steps)} steps + spawn sub-points)")
    assert sandbox.mm("create", *CREATE).returncode == 0


# ---------------------------------------------------------------- a kill at every point
def test_destroy_recovers_a_create_killed_at_every_point(sandbox):
    assert sandbox.mm("create", "warm").returncode == 0   # a host in use
    before = sandbox.mountinfo()
    procs = leftover_processes(sandbox)
    steps = steps_of(sandbox, *CREATE)
    points = fault_points(sandbox, steps)
    for point in points:
        sandbox.env["MIRRORMOUNT_FAULT"] = f"{point}:kill"
        r = sandbox.mm("create", *CREATE)
        del sandbox.env["MIRRORMOUNT_FAULT"]
        assert r.returncode == -9, (point, r.returncode, r.stderr)
        recover_with_destroy(sandbox, point)
        assert sandbox.mountinfo() == before, f"point {point}: mounts left after destroy"
        # a reaper whose creator died before binding it exits by itself (EOF on its pipe)
        assert wait_for(lambda: leftover_processes(sandbox) == procs), \
            (point, leftover_processes(sandbox))
        assert [g["name"] for g in sandbox.mm("--json", "list").json] == ["warm"], point
    print(f"kill recovery proven at {len(points)} points")
    assert sandbox.mm("create", *CREATE).returncode == 0
    assert sandbox.mm("--json", "status", "c1").json["mirror_intact"] is True


def test_kill_during_rollback_is_recovered_by_destroy(sandbox):
    assert sandbox.mm("create", "warm").returncode == 0
    before = sandbox.mountinfo()
    procs = leftover_processes(sandbox)
    last = len(steps_of(sandbox, *CREATE))
    k = 1
    while True:
        # fail after the last step, then die after k undo actions of the rollback
        sandbox.env["MIRRORMOUNT_FAULT"] = f"{last},undo{k}:kill"
        r = sandbox.mm("create", *CREATE)
        del sandbox.env["MIRRORMOUNT_FAULT"]
        if r.returncode == 1:      # the rollback finished before reaching undo k
            assert "injected fault" in r.stderr
            break
        assert r.returncode == -9, (k, r.returncode, r.stderr)
        recover_with_destroy(sandbox, f"undo{k}")
        assert sandbox.mountinfo() == before, f"undo{k}: mounts left after destroy"
        assert wait_for(lambda: leftover_processes(sandbox) == procs), k
        k += 1
    assert sandbox.mountinfo() == before
    assert k > 5, f"a full create's rollback should have several undo actions, saw {k - 1}"


def test_first_create_killed_at_every_step_is_completed_by_the_next_create(sandbox):
    before = sorted(f[4] for f in sandbox.mountinfo())
    steps = steps_of(sandbox, "c1", "--ns", "pid")
    for n in range(len(steps) + 1):
        sandbox.env["MIRRORMOUNT_FAULT"] = f"{n}:kill"
        assert sandbox.mm("create", "c1", "--ns", "pid").returncode == -9, n
        del sandbox.env["MIRRORMOUNT_FAULT"]
        # The next plain create completes the job: it cleans up a half-made guest (no record:
        # the record is written last) and a half-made BASE/STATE/nursery, then creates. Only
        # a kill after the last step leaves a complete guest, which it then calls existing.
        r = sandbox.mm("create", "c1", "--ns", "pid")
        if n == len(steps):
            assert r.returncode == 2 and "already exists" in r.stderr, (n, r.stderr)
        else:
            assert r.returncode == 0, (n, r.stderr)
        st = sandbox.mm("--json", "status", "c1").json
        assert st["mirror_intact"] is True, (n, st)
        assert sandbox.mm("destroy", "c1").returncode == 0, n
        # the last guest gone, BASE, STATE and the nursery went too: none left, none stacked
        after = sorted(f[4] for f in sandbox.mountinfo())
        assert after == before, (n, after)
        assert leftover_processes(sandbox) == [], n
        clean_slate(sandbox)


# ---------------------------------------------------------------- the nsfs quirk (§6)
def test_nsfs_einval_takes_the_retry_path_each_round_fresh(sandbox):
    """The quirk is forced (MIRRORMOUNT_FORCE_NSFS_EINVAL=K fails the first K binds of a
    mount namespace's nsfs file with EINVAL), so the retry path provably runs: without it
    the create would fail. Every round starts from a clean slate: no nursery, no
    remembered CPU, as on a fresh host."""
    before = sandbox.mountinfo()
    for rnd in range(5):
        # K=2: the nursery's bind and the guest's bind each fail once
        sandbox.env["MIRRORMOUNT_FORCE_NSFS_EINVAL"] = "2" if rnd % 2 else "1"
        r = sandbox.mm("create", "c1", "--ns", "uts,pid")
        del sandbox.env["MIRRORMOUNT_FORCE_NSFS_EINVAL"]
        assert r.returncode == 0, (rnd, r.stderr)
        assert sandbox.mm("--json", "status", "c1").json["mirror_intact"] is True, rnd
        assert "h" != sandbox.mm("exec", "c1", "--", "hostname").stdout.strip()
        clean_slate(sandbox)
        assert sandbox.mountinfo() == before, rnd
        assert leftover_processes(sandbox) == [], rnd


def test_nsfs_einval_every_time_fails_cleanly(sandbox):
    before = sandbox.mountinfo()
    sandbox.env["MIRRORMOUNT_FORCE_NSFS_EINVAL"] = "1000"
    r = sandbox.mm("create", "c1", "--ns", "pid")
    del sandbox.env["MIRRORMOUNT_FORCE_NSFS_EINVAL"]
    assert r.returncode == 1 and "EINVAL" in r.stderr, r.stderr
    assert sandbox.mountinfo() == before
    assert leftover_processes(sandbox) == []
    assert sandbox.mm("--json", "list").json == []


# ---------------------------------------------------------------- other guests stay intact
def _snapshot(sb, names):
    """Per guest: status JSON, the guest's own mount table, and the host's mounts of its
    mirror (mount ids, paths, peer groups)."""
    out = {}
    for n in names:
        st = sb.mm("--json", "status", n).json
        guest = sb.mm("exec", n, "--", "cat", "/proc/self/mountinfo").stdout
        host = [f for f in sb.mountinfo() if f[4] == f"/container/{n}"
                or f[4].startswith(f"/container/{n}/")]
        out[n] = (st, sorted(guest.splitlines()), sorted(map(tuple, host)))
    return out


def test_creating_and_destroying_guest_n_leaves_the_others_intact(sandbox):
    names = ["g1", "g2", "g3"]
    for i, n in enumerate(names):
        assert sandbox.mm("create", n, *(["--ns", "pid"] if i % 2 else [])).returncode == 0
        # each guest has a mount of its own, made in the guest, mirrored on the host
        r = sandbox.mm("exec", n, "--", "/bin/sh", "-c",
                       f"mkdir -p /srv/own && mount -t tmpfs own-{n} /srv/own")
        assert r.returncode == 0, r.stderr
    before = _snapshot(sandbox, names)
    assert all(st["mirror_intact"] for st, _, _ in before.values())
    for extra in ("g4", "g5"):
        assert sandbox.mm("create", extra, "--ns", "pid,uts").returncode == 0
        assert _snapshot(sandbox, names) == before, f"creating {extra} changed the others"
        assert sandbox.mm("destroy", extra).returncode == 0
        assert _snapshot(sandbox, names) == before, f"destroying {extra} changed the others"
    # and the survivors still mirror both ways
    for n in names:
        sandbox.sh(f"mkdir -p /container/{n}/srv/h && mount -t tmpfs h-{n} /container/{n}/srv/h")
        r = sandbox.mm("exec", n, "--", "findmnt", "-n", "-o", "SOURCE", "/srv/h")
        assert r.returncode == 0 and r.stdout.strip() == f"h-{n}", (n, r.stdout, r.stderr)


def test_destroy_detaches_privately_so_shared_copies_elsewhere_survive(sandbox):
    """destroy makes the mirror private before detaching it (findings §3). A host view that
    shares the mirror's peer groups (an rbind of part of it elsewhere) keeps its mounts;
    a shared detach would propagate the unmount into that view too."""
    assert sandbox.mm("create", "c1").returncode == 0
    r = sandbox.mm("exec", "c1", "--", "/bin/sh", "-c",
                   "mkdir -p /srv/own && mount -t tmpfs own /srv/own && echo x > /srv/own/f")
    assert r.returncode == 0, r.stderr
    sandbox.sh("mkdir -p /mnt/view && mount --rbind /container/c1/srv /mnt/view")
    assert sandbox.sh("cat /mnt/view/own/f").stdout == "x\n"
    assert sandbox.mm("destroy", "c1").returncode == 0
    assert "/mnt/view/own" in sandbox.mountpoints(), "destroy's unmount propagated out"
    assert sandbox.sh("cat /mnt/view/own/f").stdout == "x\n"
    sandbox.sh("umount -R /mnt/view")

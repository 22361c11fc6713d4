"""Every verb that changes mounts goes through the one planner and executor: --dry-run prints
numbered steps and changes nothing; a fault at any point rolls back (or, for teardown verbs,
the next plain call completes the job); a kill at any point is recovered by the next plain
call; and at the end the sandbox's mount table is exactly
what it was before the first create. (create itself: vm-tests/test_faults.py.)

Each test prints how many points it covered out of how many exist: every step of the plan,
point 0 (before the first step), and every sub-point of multi-call steps (discovered by
walking N.1, N.2, ... until one is not reached)."""
from __future__ import annotations

import json

import pytest

# verb name -> (set-up shell after `create c1`, CLI arguments, teardown verb?)
VERBS = {
    "mount": ("mkdir -p /tmp/t",
              ["mount", "c1", "scratch", "/tmp/t", "-t", "tmpfs", "-o", "size=1m"], False),
    "mount-bind": ("mkdir -p /tmp/t /srv/src && echo s > /srv/src/f",
                   ["mount", "c1", "/srv/src", "/tmp/t", "--bind", "-o", "ro"], False),
    "mount-guest-only": ("mkdir -p /tmp/t",
                         ["mount", "c1", "hidden", "/tmp/t", "-t", "tmpfs", "--guest-only"],
                         False),
    "umount": ("mkdir -p /tmp/t && python3 -m mirrormount mount c1 s /tmp/t -t tmpfs",
               ["umount", "c1", "/tmp/t"], True),
    "umount-lazy": ("mkdir -p /tmp/t && python3 -m mirrormount mount c1 s /tmp/t -t tmpfs",
                    ["umount", "c1", "/tmp/t", "--lazy"], True),
    "umount-guest-only": ("mkdir -p /tmp/t && python3 -m mirrormount mount c1 s /tmp/t "
                          "-t tmpfs --guest-only", ["umount", "c1", "/tmp/t"], True),
    "destroy": ("", ["destroy", "c1"], True),
    # c1 (unconfined, on the small rootfs below) broke its mirror; a mount made on each
    # side since: repair shares, copies both ways, and re-joins / and /proc
    # the lifecycle: an init-based guest started (after a stop) and stopped; an init-less
    # one (pid namespace: its reaper stays) stopped, a process that ignores TERM inside
    "start": ("python3 -m mirrormount stop c1 --timeout 0", ["start", "c1"], False),
    "stop": ("", ["stop", "c1", "--timeout", "0"], True),
    "stop-init-less": ("python3 -m mirrormount exec c1 -- sh -c \"trap '' TERM; "
                       "sleep 1000000 </dev/null >/dev/null 2>&1 &\"",
                       ["stop", "c1", "--timeout", "0"], True),
    "repair": ("python3 -m mirrormount exec c1 -- mount --make-rprivate / && "
               "python3 -m mirrormount exec c1 -- mount -t tmpfs g /tmp/g && "
               "mount -t tmpfs h /container/c1/mnt/h", ["repair", "c1"], False),
}

# A small rootfs: mount, umount, cat and their libraries, so that repair's plan (one step
# per mount of the guest) stays short enough to fail and kill at every point.
SMALL_ROOTFS = """R=/srv/r; [ -e $R/usr/bin/mount ] || {
  mkdir -p $R/usr/bin $R/usr/lib $R/usr/lib64 $R/proc $R/tmp/g $R/mnt/h
  ln -s usr/bin $R/bin; ln -s usr/lib $R/lib; ln -s usr/lib64 $R/lib64
  for b in mount umount cat; do
    cp /usr/bin/$b $R/usr/bin/
    for l in $(ldd /usr/bin/$b | grep -o '/[^ ]*'); do
      mkdir -p $R$(dirname $l); cp -n $l $R$l
    done
  done; }"""
# verb -> (shell before its `create c1`, more create arguments)
PREPARE = {"repair": (SMALL_ROOTFS, ("--rootfs", "/srv/r", "--confine", "none")),
           "start": ("", ("--init", "sleep 1000000")),
           "stop": ("", ("--init", "sleep 1000000"))}


def snapshot(sb):
    """The host's mount table and, while c1 exists, the guest's (mountpoints, sources)."""
    host = sorted((f[4], f[-2]) for f in sb.mountinfo())
    r = sb.mm("exec", "c1", "--", "cat", "/proc/self/mountinfo")
    guest = sorted((ln.split()[4], ln.split()[-2]) for ln in r.stdout.splitlines()) \
        if r.returncode == 0 else None
    text = sb.sh("cat /run/mirrormount/c1/guest.json 2>/dev/null || true").stdout
    record = json.loads(text) if text else None
    if record:
        record.pop("created")      # c1 is made anew for each point
    # running or stopped: what start and stop change (mounts and record stay)
    states = [g["state"] for g in json.loads(sb.mm("--json", "list").stdout or "[]")
              if g["name"] == "c1"]
    return host, guest, record, states


def setup(sb, verb):
    shell, _, _ = VERBS[verb]
    before, args = PREPARE.get(verb, ("", ()))
    if before:
        sb.sh(before)
    assert sb.mm("create", "c1", "--ns", "pid", *args).returncode == 0
    if shell:
        sb.sh(shell)


def reset(sb, verb):
    """Back to the state before the verb: c1 destroyed and made again, with the set-up."""
    if "c1" in [g["name"] for g in sb.mm("--json", "list").json]:
        r = sb.mm("destroy", "c1", "--force", "--grace", "0")
        assert r.returncode == 0, r.stderr
    sb.sh("rm -f /srv/src/f; rmdir /tmp/t /srv/src 2>/dev/null || true")   # never rm -r
    setup(sb, verb)


def run(sb, argv, fault=None):
    if fault is not None:
        sb.env["MIRRORMOUNT_FAULT"] = fault
    try:
        return sb.mm(*argv)
    finally:
        sb.env.pop("MIRRORMOUNT_FAULT", None)


def points_of(sb, verb, steps):
    """Step points 0..steps plus the sub-points of every step."""
    argv = VERBS[verb][1]
    points = [str(n) for n in range(steps + 1)]
    for n in range(1, steps + 1):
        m = 1
        while True:
            r = run(sb, argv, f"{n}.{m}")
            reset(sb, verb)
            if r.returncode != 1 or "injected fault" not in r.stderr:
                break
            points.append(f"{n}.{m}")
            m += 1
    return points


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_dry_run_rollback_and_kill_at_every_point(sandbox, verb):
    sb = sandbox
    before_all = sb.mountinfo()
    _, argv, teardown = VERBS[verb]
    setup(sb, verb)
    before = snapshot(sb)

    # --dry-run: numbered shell steps, exit 0, nothing changed
    dry = sb.mm(*argv, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    steps = sum(1 for ln in dry.stdout.splitlines() if ln.startswith("# step "))
    assert steps >= 1, dry.stdout
    assert snapshot(sb) == before, "--dry-run changed something"

    # the plain call, to know what "done" looks like
    assert run(sb, argv).returncode == 0
    after = snapshot(sb)
    assert after != before
    reset(sb, verb)
    assert snapshot(sb)[:2] == before[:2]

    points = points_of(sb, verb, steps)
    for point in points:
        # a failure at the point: rolled back, or (teardown) completed by the next call
        r = run(sb, argv, point)
        assert r.returncode == 1 and "injected fault" in r.stderr, (point, r.stderr)
        if not teardown:
            assert snapshot(sb) == before, f"{verb}: fault at {point} was not rolled back"
        elif snapshot(sb)[:2] != after[:2]:
            r = run(sb, argv)
            assert r.returncode == 0, (point, r.stderr)
            assert snapshot(sb)[:2] == after[:2], f"{verb}: {point}: not completed"
        reset(sb, verb)

        # a kill at the point: the next plain call completes or cleans up
        r = run(sb, argv, f"{point}:kill")
        assert r.returncode == -9, (point, r.returncode, r.stderr)
        state = snapshot(sb)
        if state != after:
            r = run(sb, argv)                          # completes the job
            assert r.returncode == 0, (point, r.stderr)
            assert snapshot(sb) == after, f"{verb}: kill at {point}"
        reset(sb, verb)
    print(f"{verb}: dry-run, rollback and kill proven at {len(points)} of {len(points)} "
          f"points ({steps} steps)")

    # at the end: exactly the mount table before the first create (the last destroy takes
    # BASE, STATE and the nursery away too)
    assert sb.mm("destroy", "c1", "--force", "--grace", "0").returncode == 0
    sb.sh("rmdir /tmp/t; rm -f /srv/src/f; rmdir /srv/src 2>/dev/null || true")
    assert sb.mountinfo() == before_all

#!/usr/bin/env python3
"""Benchmark (not a test): mirrormount with 1,000 guests on a host of about 50 mounts.

Part 10 of "Never harm the host": does anything get slower, or unusable, as guests pile up?
Everything runs inside one throwaway sandbox (`python -m mirrormount.sandbox`: a tmpfs-rooted,
private mount + pid namespace, padded with tmpfs mounts under /srv to a host of about 50
mounts); this script re-executes itself inside it. Guests mirror "/" (the default rootfs), so
each mirror holds about 50 mounts, and each guest gets one tmpfs of its own (/mnt/bench-own,
made with Guests.mount) so that `busy --all` has a mount per guest to audit.

Measured, at guest #P for P in 1, 100, 500, 1000 (P-1 guests exist; median of --samples):
  create     in-process Guests.create and CLI `mirrormount create` of a sample guest (made,
             timed, destroyed); every population create is timed too (the series). Flat means
             guest #1000 within 1.5x of guest #1.
  list       CLI `mirrormount list` and `status c1`: wall time and peak RSS (os.wait4 of the
             child), target <= 1 s each at the last point; in-process list_all/status as well.
At the last point only:
  busy --all CLI `mirrormount --json busy --all`, with a camper (a `sleep` whose cwd is on the
             guest's own tmpfs) in every --pin-every'th guest, against what a user would run
             instead: `fuser -m` on each guest's own mount (looped; --fuser-sample of them
             timed and scaled to all), one `fuser -m` on one mirror, and one `lsfd` pass over
             every process (a lower bound: it does not say which guest or namespace).
  profile    cProfile of in-process list_all() and status('c1').
  destroy    every guest, through the CLI in batches of --batch names (time per guest, per
             batch, so a per-guest cost that grows with the population shows).
A full run then does it all again in a second sandbox with every guest given a pid namespace
too (`--ns pid`: one reaper process per guest, so every /proc scan has a thousand more
processes to read); --no-variant skips that.

fs.mount-max (a global sysctl, checked per mount namespace): the sandbox's namespace holds the
host, every mirror and every guest's own mount, about guests x (host mounts + 2); each guest's
namespace holds only its own ~50. If the estimate exceeds fs.mount-max, the outer half raises it
for the run and restores it in a `finally` (only if nobody changed it meanwhile), and says so.
The inner half stops filling early, and says why, if the measured per-guest cost does not fit.

The sandbox always ends: the outer half kills it in a `finally` (Ctrl-C, SIGTERM or SIGHUP
included), and its PID 1 dies with it, taking every guest, reaper and mount along. The code
measured is a snapshot of mirrormount/ taken at the start (as bench_create.py does).

Usage (root):  .venv/bin/python bench/bench_scale.py [--quick] [--guests N] [--samples N]
                   [--source worktree|REV] [--no-write]
A full run (1,000 guests, twice) takes about 4 minutes; --quick (50 guests) about 25 s.
Writes bench/results/scale.md (not with --quick or --no-write) and prints the same.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self, TypeVar

# The sibling benchmark's helpers: the source snapshot, host padding, the CLI's environment.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_create as bc
from sandboxed import outside_sandbox, sandbox_argv, unpack_source

REPO = bc.REPO
RESULTS = REPO / "bench" / "results" / "scale.md"
MOUNT_MAX = "/proc/sys/fs/mount-max"
OWN = "/mnt/bench-own"          # each guest's own tmpfs, as the guest sees it
SRC = "/tmp/bench-src"          # the snapshot, in the sandbox's own tmpfs
MARKER = "/.mirrormount-scale-sandbox"

FULL_GUESTS, FULL_POINTS = 1000, (1, 100, 500, 1000)
QUICK_GUESTS, QUICK_POINTS = 50, (1, 25, 50)
TARGET_SECONDS = 1.0            # list and status at the last point
FLAT_RATIO = 1.5                # create at the last point vs guest #1
T = TypeVar("T")

log, med, mount_count = bc.log, bc.med, bc.mount_count


def timed_child(argv: list[str], env: dict | None = None) -> tuple[float, int, bytes]:
    """(wall seconds, exit status, stdout) of one child."""
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                        check=False)
    return time.perf_counter() - t0, cp.returncode, cp.stdout


def peak_rss_kib(argv: list[str], env: dict | None = None) -> int | None:
    """Peak RSS of argv, from /usr/bin/time. Not os.wait4 on our own child: the kernel keeps
    a process's RSS high-water mark across exec, so a child forked from this (large) process
    would report our size, not the command's."""
    if not os.path.exists("/usr/bin/time"):
        return None
    out = f"/tmp/bench-rss-{os.getpid()}"
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out, *argv], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(out) as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        if os.path.exists(out):
            os.unlink(out)


def repeat(argv: list[str], env: dict, n: int, ok: tuple[int, ...] = (0,)) -> dict:
    """One warm-up run (under /usr/bin/time, for the peak RSS), then n timed runs: each
    wall time, the peak RSS, the last stdout."""
    rss = peak_rss_kib(argv, env)
    walls, out = [], b""
    for _ in range(n):
        dt, code, out = timed_child(argv, env)
        if code not in ok:
            raise RuntimeError(f"{' '.join(argv)} exited {code}")
        walls.append(dt)
    return {"wall": walls, "rss_kib": rss, "stdout": out.decode(errors="replace")}


# ============================================================================ inside the sandbox
def read_mount_max() -> int:
    with open(MOUNT_MAX) as f:
        return int(f.read())


def fits(cost: int, want: int, have: int) -> tuple[int, str | None]:
    """How many guests in all fit under fs.mount-max, given `have` guests now and `cost`
    mounts per guest in this namespace (a margin of 200 is left for samples and the rest)."""
    room = (read_mount_max() - mount_count() - 200) // max(cost, 1)
    if have + room >= want:
        return want, None
    can = have + max(room, 0)
    return can, (f"fs.mount-max ({read_mount_max()}) leaves room for {can} guests at "
                 f"{cost} mounts per guest in the sandbox's namespace")


WAITS: list[str] = []      # each time `patient` waited out a lowered fs.mount-max


def clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def patient(what: str, fn: Callable[[], T]) -> T:
    """fn(), again after a pause while it fails with ENOSPC. fs.mount-max is one global
    sysctl, and a test on this shared machine lowers it for a moment (vm-tests'
    test_host_safety); meanwhile every namespace larger than that limit gets ENOSPC on its
    next mount. A create that fails so is rolled back whole, so the retry starts clean; the
    failed attempt's time is dropped. Each wait is reported."""
    for attempt in range(30):
        try:
            return fn()
        except Exception as exc:
            text = str(exc)
            if attempt == 29 or not (getattr(exc, "errno", None) == errno.ENOSPC
                                     or "ENOSPC" in text or "No space left" in text):
                raise
            WAITS.append(f"{what} (fs.mount-max {read_mount_max()})")
            log(f"{what}: ENOSPC with fs.mount-max at {read_mount_max()}; waiting")
            time.sleep(1)
    raise AssertionError("unreachable")


def add_guest(g, CreateRequest, name: str, kinds: frozenset[str]) -> tuple[float, float]:
    """A population guest: create (timed) and its own tmpfs (timed)."""
    dc = patient(f"create {name}", lambda: clock(lambda: g.create(CreateRequest(name,
                                                                            kinds=kinds))))
    dm = patient(f"mount in {name}",
                 lambda: clock(lambda: g.mount(name, "tmpfs", OWN, "tmpfs", "size=64k")))
    return dc, dm


def profiled(fn) -> dict:
    import cProfile
    import pstats
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(prof)
    rows = []
    raw = st.stats  # type: ignore[attr-defined]
    for (fname, _line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        rows.append([f"{os.path.basename(fname)}:{func}", nc, tt, ct])
    cum = sorted((r for r in rows if "mirrormount" in r[0] or r[0].startswith(
        ("guests.py", "mountquery.py", "procfs.py", "mountinfo.py", "health.py", "state.py",
         "syscalls.py", "nsexec.py", "child.py"))), key=lambda r: -r[3])[:14]
    own = sorted(rows, key=lambda r: -r[2])[:8]
    return {"total": total, "cumulative": [[r[0], r[1], r[3]] for r in cum],
            "own": [[r[0], r[1], r[2]] for r in own]}


def busy_part(g, args: argparse.Namespace, cli: list[str], env: dict, made: int) -> dict:
    """busy --all against the tools a user would loop over instead. Campers are killed in a
    `finally` (and would die with the sandbox anyway)."""
    lay = g.layout
    pinned = [n for n in range(1, made + 1) if n % args.pin_every == 0 or n == 1]
    campers: list[subprocess.Popen] = []
    res: dict = {"pinned": len(pinned)}
    try:
        for n in pinned:
            campers.append(subprocess.Popen(["sleep", "3600"], cwd=f"{lay.mirror(f'c{n}')}{OWN}",
                                            stdin=subprocess.DEVNULL, start_new_session=True))
        res["processes"] = sum(1 for e in os.listdir("/proc") if e.isdigit())
        r = repeat(cli + ["--json", "busy", "--all"], env, args.samples, ok=(0, 3))
        reports = json.loads(r["stdout"])
        flagged = {rep["target"] for rep in reports}
        want = {f"c{n}:{OWN}" for n in pinned}
        res["busy_all"] = {"wall": r["wall"], "rss_kib": r["rss_kib"],
                           "found": len(flagged & want), "extra": len(flagged - want)}
        # What a user would run instead, on the same state.
        own_paths = [f"{lay.mirror(f'c{n}')}{OWN}" for n in range(1, made + 1)]
        step = max(1, len(own_paths) // max(args.fuser_sample, 1))
        # Every step-th guest, from guest #step on: the campers' guests (every pin_every-th)
        # then fall in the sample as often as in the whole.
        sample = own_paths[step - 1::step][:args.fuser_sample]
        hits = 0
        t0 = time.perf_counter()
        for path in sample:
            cp = subprocess.run(["fuser", "-m", path], capture_output=True, text=True,
                                check=False)
            hits += bool(cp.stdout.strip())
        loop = time.perf_counter() - t0
        sampled_pinned = sum(1 for path in sample
                             if int(path.split("/")[-3][1:]) in set(pinned))
        res["fuser_loop"] = {"measured": len(sample), "seconds": loop,
                             "scaled": loop * len(own_paths) / len(sample),
                             "hits": hits, "pinned_in_sample": sampled_pinned}
        r = repeat(["fuser", "-m", lay.mirror("c1")], env, args.samples, ok=(0, 1))
        res["fuser_mirror"] = {"wall": r["wall"],
                               "pids": len(r["stdout"].split())}
        r = repeat(["fuser", "-m", f"{lay.mirror('c1')}{OWN}"], env, args.samples, ok=(0, 1))
        res["fuser_one"] = {"wall": r["wall"], "pids": len(r["stdout"].split())}
        r = repeat(["lsfd", "-n", "-r", "-o", "PID,ASSOC,MNTID,DEV"], env, args.samples)
        res["lsfd"] = {"wall": r["wall"], "rows": r["stdout"].count("\n")}
        r = repeat(["findmnt", "-rn"], env, args.samples)
        res["findmnt"] = {"wall": r["wall"], "rows": r["stdout"].count("\n")}
    finally:
        for camper in campers:
            camper.kill()
        for camper in campers:
            camper.wait()
    return res


def phase(args: argparse.Namespace) -> dict:
    from mirrormount.guest.guests import Guests
    from mirrormount.guest.model import CreateRequest, Layout
    res: dict = {"points": {}, "series": [], "mount_series": [], "stopped": None}
    res["base_mounts"] = mount_count()
    res["host_mounts"] = bc.pad_host(args.host_mounts)
    res["mount_max"] = read_mount_max()
    os.makedirs(OWN, exist_ok=True)     # in the sandbox's /: every guest (rootfs /) has it
    g = Guests(Layout())
    cli, env = bc.cli_argv(), bc.cli_env()
    kinds = frozenset(k for k in args.ns.split(",") if k)
    ns_opt = ["--ns", args.ns] if kinds else []
    log(f"sandbox: {res['host_mounts']} mounts, fs.mount-max {res['mount_max']}; "
        f"target {args.guests} guests")
    t0 = time.perf_counter()
    g.create(CreateRequest("setup"))     # BASE, STATE and the nursery: a one-time cost
    g.destroy("setup")
    res["setup_seconds"] = time.perf_counter() - t0
    res["mounts_after_setup"] = mount_count()
    made, goal, per_guest = 0, args.guests, None
    t_fill = time.perf_counter()
    for p in args.points:
        if p > goal:
            break
        while made < p - 1:
            made += 1
            dc, dm = add_guest(g, CreateRequest, f"c{made}", kinds)
            res["series"].append([made, dc, dm])
            if made % 100 == 0:
                log(f"{made} guests")
        if per_guest is None and made >= 1:
            per_guest = (mount_count() - res["mounts_after_setup"]) // made
            goal, res["stopped"] = fits(per_guest, goal, made)
            if p > goal:
                break
        log(f"{made} guests, {mount_count()} mounts; sampling guest #{p}")
        pt: dict = {"inproc": [], "cli": [], "floor": [], "load": os.getloadavg()[0]}
        for i in range(args.samples):
            t, s_ = f"t{p}x{i}", f"s{p}x{i}"
            pt["inproc"].append(patient(f"create {t}", lambda t=t: clock(
                lambda: g.create(CreateRequest(t, kinds=kinds)))))
            g.destroy(t)
            # The CLI's start-up floor, next to each CLI create: this machine is shared,
            # and a burst of someone else's work moves both alike.
            pt["floor"].append(bc.wall(cli + ["--version"], env=env))
            pt["cli"].append(patient(f"create {s_} (CLI)", lambda s_=s_: bc.wall(
                cli + ["create", s_, *ns_opt], env=env)))
            bc.wall(cli + ["destroy", s_], env=env)
        made += 1
        dc, dm = add_guest(g, CreateRequest, f"c{made}", kinds)
        res["series"].append([made, dc, dm])
        if per_guest is None:
            per_guest = mount_count() - res["mounts_after_setup"]
            goal, res["stopped"] = fits(per_guest, goal, made)
        pt["mounts"] = mount_count()
        rep = g.status("c1")
        pt["c1_intact"] = rep.health.mirror_intact
        pt["c1_mounts"] = [rep.health.mounts_host, rep.health.mounts_guest]
        pt["listed"] = len(json.loads(subprocess.run(
            cli + ["--json", "list"], env=env, check=True, capture_output=True).stdout))
        lst = repeat(cli + ["list"], env, args.samples)      # the table a user reads
        pt["list"], pt["list_rss"] = lst["wall"], lst["rss_kib"]
        st = repeat(cli + ["status", "c1"], env, args.samples)
        pt["status"], pt["status_rss"] = st["wall"], st["rss_kib"]
        if p == args.points[-1]:
            # The /proc fallback, as on kernels without statmount (Debian's 6.1).
            old = dict(env, MIRRORMOUNT_NO_STATMOUNT="1")
            pt["fallback"] = {w: repeat(cli + argv, old, args.samples)["wall"]
                              for w, argv in (("list", ["list"]), ("status", ["status", "c1"]))}
        pt["list_inproc"], pt["status_inproc"] = [], []
        for _ in range(args.samples):
            t0 = time.perf_counter()
            g.list_all()
            pt["list_inproc"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g.status("c1")
            pt["status_inproc"].append(time.perf_counter() - t0)
        res["points"][p] = pt
        log(f"guest #{p}: create {med(pt['inproc']) * 1e3:.1f} ms in-process, "
            f"{med(pt['cli']) * 1e3:.0f} ms CLI; list {med(pt['list']) * 1e3:.0f} ms, "
            f"status {med(pt['status']) * 1e3:.0f} ms; {pt['mounts']} mounts")
    while made < goal:       # points past the last one (--guests beyond the last point)
        made += 1
        dc, dm = add_guest(g, CreateRequest, f"c{made}", kinds)
        res["series"].append([made, dc, dm])
    res["fill_seconds"] = time.perf_counter() - t_fill
    res["made"], res["per_guest_mounts"] = made, per_guest
    res["mounts_full"] = mount_count()
    res["mount_max_used"] = res["mounts_full"] / read_mount_max()
    guest_ns = g.guest_table(g.record("c1"))
    res["guest_ns_mounts"] = len(guest_ns) if guest_ns is not None else None

    log(f"busy --all over {made} guests against fuser/lsfd")
    res["busy"] = busy_part(g, args, cli, env, made)
    log("profiling in-process list_all and status")
    res["profile"] = {"list_all": profiled(g.list_all),
                      "status c1": profiled(lambda: g.status("c1"))}

    log(f"destroying {made} guests through the CLI, {args.batch} per call")
    res["destroy"] = []
    t_all = time.perf_counter()
    names = [f"c{n}" for n in range(made, 0, -1)]
    for i in range(0, len(names), args.batch):
        batch = names[i:i + args.batch]
        before = made - i
        res["destroy"].append([before, len(batch), bc.wall(cli + ["destroy", *batch], env=env)])
        if before % 200 == 0 or i == 0:
            log(f"destroy: {before - len(batch)} guests left")
    res["destroy_seconds"] = time.perf_counter() - t_all
    res["left"] = len(g.list_all())
    res["waits"] = WAITS
    res["mounts_at_end"] = mount_count()
    return res


def inside(args: argparse.Namespace) -> int:
    if outside_sandbox(MARKER):
        return 2
    unpack_source(SRC)
    print(json.dumps(phase(args)))
    return 0


# ============================================================================ outside
class MountMaxRaised:
    """Raise the global fs.mount-max for the run when the estimate needs it; restore it on
    the way out, unless someone else changed it meanwhile (a concurrent test lowers it for a
    moment: writing our saved value back would then undo theirs)."""

    def __init__(self, need: int) -> None:
        self.need = need
        self.saved: int | None = None
        self.set_to: int | None = None

    def __enter__(self) -> Self:
        with open(MOUNT_MAX) as f:
            self.saved = int(f.read())
        if self.need > self.saved:
            with open(MOUNT_MAX, "w") as f:
                f.write(str(self.need))
            self.set_to = self.need
            log(f"fs.mount-max raised from {self.saved} to {self.need} for this run")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.set_to is None:
            return
        with open(MOUNT_MAX) as f:
            now = int(f.read())
        if now == self.set_to:
            with open(MOUNT_MAX, "w") as f:
                f.write(str(self.saved))
            log(f"fs.mount-max restored to {self.saved}")
        else:
            log(f"fs.mount-max is {now}, not our {self.set_to}: someone changed it; left alone")


def run_sandbox(args: argparse.Namespace, ns: str) -> dict:
    inner = [sys.executable, str(Path(__file__).resolve()), "--inside",
             "--guests", str(args.guests), "--points", ",".join(map(str, args.points)),
             "--samples", str(args.samples), "--host-mounts", str(args.host_mounts),
             "--pin-every", str(args.pin_every), "--fuser-sample", str(args.fuser_sample),
             "--batch", str(args.batch), "--ns", ns]
    # The marker is created in the sandbox's own tmpfs root, never on this machine.
    cmd = sandbox_argv(MARKER, inner, args.propagation)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        out, _ = p.communicate(args.snapshot)
    finally:
        # Ctrl-C, SIGTERM, any error: the launcher's death kills the sandbox's PID 1
        # (parent-death signal), and with it every guest, reaper and mount inside.
        if p.poll() is None:
            p.kill()
            p.wait()
    if p.returncode != 0:
        raise SystemExit(f"bench: the sandbox failed (exit {p.returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])


def facts_now() -> dict:
    up = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"load": os.getloadavg(), "uptime": up.strip()}


def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench: needs root (it builds a sandbox with new namespaces)", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)     # run every `finally`: sandbox, fs.mount-max

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    before = bc.host_mounts_snapshot()
    facts = bc.machine_facts(args)
    facts["start"] = facts_now()
    args.snapshot, facts["source_hash"] = bc.source_snapshot(args.source)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                            "mirrormount"], capture_output=True, text=True,
                           check=False).stdout.strip()
    facts["source"] = (f"work tree at commit {facts['git']}"
                       + (" plus uncommitted changes to mirrormount/" if dirty else "")
                       if args.source == "worktree" else f"`--source {args.source}`")
    # The sandbox's namespace holds the host, every mirror (~host mounts each) and each
    # guest's /proc and own tmpfs; the margin covers samples and set-up.
    need = args.host_mounts + args.guests * (args.host_mounts + 4) + 2000
    t0 = time.perf_counter()
    with MountMaxRaised(need) as mm_max:
        log(f"measuring {facts['source']} (mirrormount/ sha256 {facts['source_hash']}); "
            f"load {facts['start']['load'][0]:.2f}")
        runs = [(args.ns, run_sandbox(args, args.ns))]
        if args.variant:
            log("the variant: every guest with a pid namespace (a reaper each)")
            runs.append(("pid", run_sandbox(args, "pid")))
    facts["mount_max"] = {"saved": mm_max.saved, "raised_to": mm_max.set_to, "need": need}
    facts["elapsed"] = time.perf_counter() - t0
    facts["end"] = facts_now()
    after = bc.host_mounts_snapshot()
    facts["host_unchanged"] = before == after
    facts["host_mounts"] = len(after)
    md = render(facts, runs, args)
    print(md)
    if not (args.no_write or args.quick):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(md)
        log(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


# ============================================================================ the report
def ms(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x * 1e3:,.{digits}f}"


def mib(kib: int | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def secs(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} s"


def render(facts: dict, runs: list[tuple[str, dict]], args: argparse.Namespace) -> str:
    """The whole report: the machine, then one body per sandbox run (the first is the main
    configuration; a second, if any, is the --ns pid variant)."""
    made = runs[0][1]["made"]
    out = [f"# Scale: {made:,} guests on a {runs[0][1]['host_mounts']}-mount host"
           + (" (--quick)" if args.quick else "") + "\n"]
    flags = (" --quick" if args.quick else "") + (f" --ns {args.ns}" if args.ns else "") \
        + (f" --samples {args.samples}" if args.samples != 3 else "")
    out.append(f"Generated by `bench/bench_scale.py{flags}` on {facts['date']} (whole run "
               f"{facts['elapsed']:.0f} s). Code measured: {facts['source']}, mirrormount/ "
               f"sha256 `{facts['source_hash']}`.\n")
    ld0, ld1 = facts["start"]["load"], facts["end"]["load"]
    out.append(f"- kernel {facts['kernel']}, {facts['cpus']} CPUs ({facts['cpu_model']}, shared "
               f"with other engineers' work), Python {facts['python']}, util-linux "
               f"{facts['util_linux']}")
    out.append(f"- load average (1/5/15 min) {ld0[0]:.2f}/{ld0[1]:.2f}/{ld0[2]:.2f} at the "
               f"start, {ld1[0]:.2f}/{ld1[1]:.2f}/{ld1[2]:.2f} at the end (`uptime`; other "
               "engineers' work shows up as noise)")
    out.append(f"- each run in one sandbox (`mirrormount.sandbox`, / {facts['propagation']}), "
               f"padded with tmpfs mounts under /srv to a host of {runs[0][1]['host_mounts']} "
               f"mounts; rootfs `/`; each guest has one tmpfs of its own at {OWN}; "
               f"{args.samples} runs per timing (after one warm-up for CLI timings), median "
               "shown")
    out.append(f"- this machine's own mount table was "
               f"{'unchanged' if facts['host_unchanged'] else 'CHANGED'} by the run "
               f"({facts['host_mounts']} mounts)")
    for i, (ns, res) in enumerate(runs):
        if i:
            out.append(f"\n# Variant: every guest with a pid namespace too (`--ns {ns}`)\n")
            out.append("Each guest then has a reaper process (PID 1 of its pid namespace), so "
                       "the sandbox holds a thousand more processes for every /proc scan.\n")
        out.extend(body(facts, res, ns, args))
    return "\n".join(out)


def body(facts: dict, res: dict, ns: str, args: argparse.Namespace) -> list[str]:
    P = [p for p in res["points"]]          # JSON keys: strings
    pts = res["points"]
    last, first = P[-1], P[0]
    out = ["- guests: " + (f"namespaces mnt,{ns} (`--ns {ns}`)" if ns else
                            "only a mount namespace (create's default)")
           + "; 1-min load at each point: "
           + ", ".join(f"#{p} {pts[p]['load']:.2f}" for p in P)]
    mmx = facts["mount_max"]
    used = (f"the sandbox's namespace held {res['mounts_full']:,} mounts at {res['made']:,} "
            f"guests ({res['per_guest_mounts']} per guest, {res['mount_max_used']:.0%} of "
            f"fs.mount-max); a guest's namespace holds {res['guest_ns_mounts']}")
    if mmx["raised_to"]:
        out.append(f"- fs.mount-max was raised from {mmx['saved']:,} to {mmx['raised_to']:,} for "
                   f"the run and restored after it; {used}")
    else:
        out.append(f"- fs.mount-max {mmx['saved']:,} (estimated need {mmx['need']:,}) was "
                   f"left alone: the limit counts each mount namespace on its own, and {used}. "
                   "(1,000 × 50 × 2 counts the host's and the guests' namespaces together.)")
    if res["stopped"]:
        out.append(f"- **stopped early**: {res['stopped']}")
    if res["waits"]:
        out.append(f"- someone lowered fs.mount-max during the run (a test on this shared "
                   f"machine): {len(res['waits'])} mount(s) met ENOSPC, waited and were retried "
                   f"(their times dropped): " + "; ".join(res["waits"][:5])
                   + ("…" if len(res["waits"]) > 5 else ""))
    out.append("")

    def row(label: str, key: str, fmt=ms, ratio: bool = True, pick=med) -> str:
        vals = [pick(pts[p][key]) if isinstance(pts[p][key], list) else pts[p][key] for p in P]
        r = f"{vals[-1] / vals[0]:.2f}×" if ratio and vals[0] else ""
        return f"| {label} | " + " | ".join(fmt(v) for v in vals) + f" | {r} |"

    out.append("| | " + " | ".join(f"guest #{int(p):,}" for p in P)
               + f" | #{last} / #{first} |")
    out.append("|---|" + "---:|" * (len(P) + 1))
    out.append(row("in-process `Guests.create` (ms)", "inproc", lambda v: ms(v, 1)))
    out.append(row("CLI `mirrormount create`, wall (ms)", "cli"))
    out.append(row("… the CLI's start-up floor then (`mirrormount --version`, ms)", "floor"))
    out.append(row("… fastest CLI create of the samples (ms)", "cli", lambda v: ms(v),
                   pick=min))
    out.append(row("CLI `mirrormount list`, wall (ms)", "list"))
    out.append(row("CLI `mirrormount status c1`, wall (ms)", "status"))
    out.append(row("in-process `list_all()` (ms)", "list_inproc", lambda v: ms(v, 1)))
    out.append(row("in-process `status('c1')` (ms)", "status_inproc", lambda v: ms(v, 1)))
    out.append(row("peak RSS of `list` (MiB)", "list_rss", mib))
    out.append(row("peak RSS of `status c1` (MiB)", "status_rss", mib))
    out.append(row("mounts in the sandbox's namespace", "mounts", lambda v: f"{v:,}", False))
    out.append("")

    # ------------------------------------------------------------------ verdicts
    inproc = [med(pts[p]["inproc"]) for p in P]
    cli = [med(pts[p]["cli"]) for p in P]
    lst, stt = med(pts[last]["list"]), med(pts[last]["status"])

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out.append("## Targets\n")
    flat_i, flat_c = inproc[-1] / inproc[0], cli[-1] / cli[0]
    fast = [min(pts[p]["cli"]) for p in P]
    flat_f = fast[-1] / fast[0]
    flat = flat_i <= FLAT_RATIO and (flat_c <= FLAT_RATIO or flat_f <= FLAT_RATIO)
    out.append(f"- create is flat (guest #{last} within {FLAT_RATIO}× of guest #{first}): "
               f"in-process {flat_i:.2f}× ({ms(inproc[0], 1)} → {ms(inproc[-1], 1)} ms), CLI "
               f"{flat_c:.2f}× by the median ({ms(cli[0])} → {ms(cli[-1])} ms), "
               f"{flat_f:.2f}× by the fastest sample ({ms(fast[0])} → {ms(fast[-1])} ms) → "
               f"**{verdict(flat)}**: it {'does not grow' if flat else 'GROWS'} with the "
               "number of guests."
               + ("" if flat_c <= FLAT_RATIO or not flat else
                  " (The CLI median moved with the machine's load: see the start-up floor.)"))
    out.append(f"- `list` ≤ 1 s at {int(last):,} guests: {ms(lst)} ms → "
               f"**{verdict(lst <= TARGET_SECONDS)}**")
    out.append(f"- `status c1` ≤ 1 s at {int(last):,} guests: {ms(stt)} ms → "
               f"**{verdict(stt <= TARGET_SECONDS)}**")
    fb = pts[last]["fallback"]
    out.append(f"- the same without statmount (`MIRRORMOUNT_NO_STATMOUNT=1`, the /proc "
               f"fallback kernels before 6.8 take): `list` {ms(med(fb['list']))} ms, "
               f"`status c1` {ms(med(fb['status']))} ms")
    out.append("")

    # ------------------------------------------------------------------ busy
    b = res["busy"]
    ba = med(b["busy_all"]["wall"])
    fl = b["fuser_loop"]
    out.append(f"## `busy --all` over {res['made']:,} guests\n")
    out.append(f"State: {b['processes']:,} processes in the sandbox's pid namespace (among them "
               f"{b['pinned']} campers: a `sleep` whose cwd is on the own tmpfs of guest c1 and "
               f"every {args.pin_every}th guest); {res['made']:,} guest mounts to audit.\n")
    out.append("| what | wall | vs `busy --all` | answer |")
    out.append("|---|---:|---:|---|")
    out.append(f"| `mirrormount busy --all` (CLI; peak RSS "
               f"{mib(b['busy_all']['rss_kib'])} MiB) | {secs(ba)} | 1× | "
               f"{b['busy_all']['found']}/{b['pinned']} pinned mounts, "
               f"{b['busy_all']['extra']} other(s) flagged |")
    out.append(f"| `fuser -m` on each guest's own mount, looped ({fl['measured']} of "
               f"{res['made']:,} timed, scaled) | {secs(fl['scaled'])} | "
               f"{fl['scaled'] / ba:.1f}× | {fl['hits']}/{fl['pinned_in_sample']} pinned mounts "
               "in the sample |")
    out.append(f"| one `fuser -m` on one guest's own mount | {secs(med(b['fuser_one']['wall']))} |"
               f" {med(b['fuser_one']['wall']) / ba:.2f}× | one mount of one guest |")
    out.append(f"| one `fuser -m /container/c1` (one mirror) | "
               f"{secs(med(b['fuser_mirror']['wall']))} | "
               f"{med(b['fuser_mirror']['wall']) / ba:.2f}× | {b['fuser_mirror']['pids']} pids: "
               "everything on the sandbox's root filesystem, which the mirror shares |")
    out.append(f"| one `lsfd -o PID,ASSOC,MNTID,DEV` pass | {secs(med(b['lsfd']['wall']))} | "
               f"{med(b['lsfd']['wall']) / ba:.2f}× | {b['lsfd']['rows']:,} rows, not joined to "
               "guests or namespaces (a lower bound for a one-pass tool) |")
    out.append(f"| one `findmnt -rn` (the host table alone) | "
               f"{secs(med(b['findmnt']['wall']))} | {med(b['findmnt']['wall']) / ba:.2f}× | "
               f"{b['findmnt']['rows']:,} mounts |")
    out.append("")

    # ------------------------------------------------------------------ destroy
    d = res["destroy"]
    per = [(before, t / n) for before, n, t in d]
    out.append(f"## Destroying all {res['made']:,} guests\n")
    out.append(f"CLI `mirrormount destroy` with {args.batch} names per call: "
               f"{res['destroy_seconds']:.1f} s in all, "
               f"{res['destroy_seconds'] / max(res['made'], 1) * 1e3:.0f} ms per guest. Per "
               "guest by population at the start of each call: "
               + ", ".join(f"{b_:,} → {ms(t)} ms" for b_, t in per) + ".")
    out.append(f"Left: {res['left']} guests, {res['mounts_at_end']:,} mounts (after set-up "
               f"{res['mounts_after_setup']:,}).\n")

    # ------------------------------------------------------------------ whole run
    ser = {n: (c, m) for n, c, m in res["series"]}
    picks = sorted({1, *[n for n in ser if n % max(1, res['made'] // 5) == 0], res["made"]})
    out.append("## Whole run\n")
    out.append(f"- first create (BASE, STATE, nursery): {ms(res['setup_seconds'])} ms; filling "
               f"{res['made']:,} guests, each with its own tmpfs, plus the samples: "
               f"{res['fill_seconds']:.1f} s")
    out.append("- population creates, in-process (guest n: create / own tmpfs mount, ms): "
               + ", ".join(f"#{n} {ser[n][0] * 1e3:.1f}/{ser[n][1] * 1e3:.1f}"
                           for n in picks if n in ser))
    out.append("- sanity: " + "; ".join(
        f"#{p}: listed {pts[p]['listed']}, c1 intact {pts[p]['c1_intact']}, c1 mounts "
        f"host/guest {pts[p]['c1_mounts'][0]}/{pts[p]['c1_mounts'][1]}" for p in P))
    out.append("")

    # ------------------------------------------------------------------ profile
    out.append(f"## Where list and status spend their time (cProfile, in-process, "
               f"{res['made']:,} guests)\n")
    for what, pr in res["profile"].items():
        out.append(f"`{what}`: {ms(pr['total'])} ms under the profiler. Cumulative: "
                   + ", ".join(f"{f} ×{n} {ct * 1e3:.0f} ms" for f, n, ct in pr["cumulative"][:9])
                   + ". Own time: "
                   + ", ".join(f"{f} ×{n} {tt * 1e3:.0f} ms" for f, n, tt in pr["own"][:5])
                   + ".\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK_GUESTS} guests, points {QUICK_POINTS}")
    ap.add_argument("--guests", type=int, help=f"guests in all (default {FULL_GUESTS})")
    ap.add_argument("--points", help="comma-separated guest numbers to sample at "
                                     "(default 1,100,500,1000)")
    ap.add_argument("--samples", type=int, default=3, help="runs per timing (median; >= 3)")
    ap.add_argument("--host-mounts", type=int, default=50)
    ap.add_argument("--propagation", choices=("rshared", "private"), default="rshared")
    ap.add_argument("--pin-every", type=int, help="a camper in every Nth guest (default 100; "
                                                  "--quick 10)")
    ap.add_argument("--fuser-sample", type=int, default=20,
                    help="guest mounts `fuser -m` is timed on (scaled to all)")
    ap.add_argument("--batch", type=int, help="names per `destroy` call (default 100; --quick 10)")
    ap.add_argument("--ns", default="", help="extra namespace kinds for every guest, as "
                    "`create --ns` takes them (pid: a reaper process per guest); default none")
    ap.add_argument("--no-variant", dest="variant", action="store_false",
                    help="skip the second run with --ns pid (done by default in a full run "
                         "without --ns)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--source", default="worktree", help="worktree (default) or a git revision")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.guests = args.guests or (QUICK_GUESTS if args.quick else FULL_GUESTS)
    if args.points:
        args.points = tuple(int(x) for x in args.points.split(","))
    else:
        base = QUICK_POINTS if args.quick else FULL_POINTS
        args.points = tuple(p for p in base if p < args.guests) + (args.guests,)
    args.variant = args.variant and not (args.quick or args.ns or args.inside)
    args.pin_every = args.pin_every or (10 if args.quick else 100)
    args.batch = args.batch or (10 if args.quick else 100)
    if args.samples < 3:
        ap.error("--samples must be at least 3 (medians of fewer say little here)")
    if args.points[0] != 1 or list(args.points) != sorted(set(args.points)) \
            or args.points[-1] > args.guests:
        ap.error("--points must start at 1, increase, and stay within --guests")
    if args.inside:
        return inside(args)
    try:
        return outside(args)
    except KeyboardInterrupt:
        # The `finally`s have run: the sandbox is gone and fs.mount-max is as it was.
        log("interrupted; the sandbox and everything in it are gone")
        return 130


if __name__ == "__main__":
    sys.exit(main())

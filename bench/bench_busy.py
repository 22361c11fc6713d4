#!/usr/bin/env python3
"""Benchmark (not a test): `mirrormount busy` against fuser -m, lsof and lsfd on one machine state.

It builds the state kernel-findings §9 measured: about 1,000 processes holding about 100k fds
between them, plus needles on one guest mount:
  cwd      a host process whose working directory is in the mount (via the host mirror)
  fd       a host process holding a file of the mount open
  mmap     a host process that mapped a file of the mount and closed every fd to it
  guest    a process inside the guest whose working directory is the mount
  leak     a process in a private mount namespace copied from the host: its copy of the mount
           is one the guest's umount cannot remove (no process *uses* a file there)
  fanotify a host process with a fanotify mount mark on the mirror and an unread event
  io_uring a host process that registered a file of the mount with an io_uring and closed it
  binfmt   a binfmt_misc entry with flag F whose interpreter lies on the mount (no process:
           the kernel holds it; found when a tool names it)
The fanotify and io_uring needles come from vm-tests/pinmakers.py (test-only ctypes).
Then it times each tool on that one mount (median of several rounds, one run of each tool per
round) and says which needles each found. Second part: `busy --all` over 100 guest mounts against `fuser -m` looped over them.

Everything runs inside a throwaway sandbox (python -m mirrormount.sandbox): the mounts die with
it. Every process the script spawns is killed in a `finally`, and the sandbox's PID 1 kills any
straggler when it exits. Results: printed as markdown and written to bench/results/busy.md.

Usage (root):  .venv/bin/python bench/bench_busy.py [--procs N] [--fds N] [--mounts N]
                                                    [--runs N] [--fuser-sample N]
                                                    [--quick] [--no-write]
--quick: a small state (200 processes, 50 fds each, 20 mounts, one run): seconds, for a smoke
run. --no-write: print the results only, do not write bench/results/busy.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "busy.md"
INNER_ENV = "MIRRORMOUNT_BENCH_INNER"
NEEDLES = ("cwd", "fd", "mmap", "guest", "leak", "fanotify", "io_uring", "binfmt")
PINMAKERS = REPO / "vm-tests" / "pinmakers.py"
BINFMT = "/proc/sys/fs/binfmt_misc"


def mm_argv() -> list[str]:
    script = Path(sys.executable).parent / "mirrormount"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mirrormount"]


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, **kw)
    if cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


# ----------------------------------------------------------------------------- the state
@dataclass
class State:
    procs: list[subprocess.Popen] = field(default_factory=list)   # needles and helpers
    ballast: list[int] = field(default_factory=list)               # posix_spawn'd sleepers
    needles: dict[str, int] = field(default_factory=dict)          # needle -> pid
    target_host: str = ""
    target_guest: str = ""
    majmin: str = ""
    audit_paths: list[str] = field(default_factory=list)
    audit_pinned: set[str] = field(default_factory=set)            # host paths with a camper
    binfmt: str = ""                                               # entry to remove at the end

    def kill_all(self) -> None:
        if self.binfmt:
            # global to the machine: remove it before anything else
            try:
                Path(BINFMT, self.binfmt).write_text("-1")
            except OSError:
                pass
            self.binfmt = ""
        for pid in self.ballast:
            _kill(pid)
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)   # each helper leads its own group
            except ProcessLookupError:
                pass
        for pid in self.ballast:
            _reap(pid)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.ballast.clear()
        self.procs.clear()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def spawn_ballast(state: State, procs: int, fds: int) -> int:
    """`procs` sleepers, each inheriting `fds` descriptors of mixed kinds (files on several
    filesystems, pipes, sockets), none on the target: the haystack every tool must sift."""
    import socket
    held: list[int] = []
    files = [p for p in Path("/usr/lib/x86_64-linux-gnu").glob("*.so*") if p.is_file()][:40] \
        or [Path("/etc/passwd")]
    scratch = Path("/tmp/bench-ballast")
    scratch.mkdir(exist_ok=True)
    keep = []
    for i in range(fds):
        kind = i % 5
        if kind == 0:
            fd = os.open(files[i % len(files)], os.O_RDONLY)
        elif kind == 1:
            fd = os.open(scratch / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600)
        elif kind == 2:
            r, w = os.pipe()
            held.append(w)
            fd = r
        elif kind == 3:
            a, b = socket.socketpair()
            keep.append(b)
            fd = a.detach()
        else:
            fd = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(fd, True)
        held.append(fd)
    for s in keep:
        held.append(s.detach())
    sleep = shutil.which("sleep") or "/bin/sleep"
    try:
        for _ in range(procs):
            state.ballast.append(os.posix_spawn(sleep, ["sleep", "3600"], dict(os.environ)))
    finally:
        for fd in held:
            os.close(fd)
    return len(held)


def popen(argv: list[str], **kw) -> subprocess.Popen:
    # Own process group each, so the cleanup can kill a helper together with its children.
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, text=True, **kw)


def first_line_pid(p: subprocess.Popen) -> int:
    line = p.stdout.readline() if p.stdout else ""
    if not line.strip().isdigit():
        raise RuntimeError(f"helper did not start: {line!r}")
    return int(line)


MMAP_NEEDLE = """
import mmap, os, sys, time
f = open(sys.argv[1], "r+b")
m = mmap.mmap(f.fileno(), 0)
f.close()
# Python's mmap keeps a dup of the fd: close every fd to the file, so only the mapping pins it.
for name in os.listdir("/proc/self/fd"):
    try:
        if os.readlink(f"/proc/self/fd/{name}") == sys.argv[1]:
            os.close(int(name))
    except OSError:
        pass
print(os.getpid(), flush=True)
time.sleep(3600)
"""


def build(state: State, args: argparse.Namespace) -> None:
    mm = mm_argv()
    guests = max(1, (args.mounts + args.per_guest - 1) // args.per_guest)
    names = ["t"] + [f"g{i}" for i in range(guests)]
    sh(mm + ["create", *names])
    os.makedirs("/container/t/mnt/target", exist_ok=True)   # through the mirror: the guest sees it
    # The single target: a tmpfs in guest t (loop devices are global to the machine; a tmpfs
    # dies with the sandbox).
    sh(mm + ["mount", "t", "tmpfs", "/mnt/target", "-t", "tmpfs", "-o", "size=16m"])
    host = "/container/t/mnt/target"
    state.target_host, state.target_guest = host, "t:/mnt/target"
    with open("/proc/self/mountinfo") as f:
        state.majmin = next(line.split()[2] for line in f if line.split()[4] == host)
    Path(host, "file").write_bytes(b"x" * 65536)
    # Needles on the host side, through the mirror.
    p = popen(["sh", "-c", 'echo $$; exec sleep 3600'], cwd=host)
    state.procs.append(p)
    state.needles["cwd"] = first_line_pid(p)
    p = popen(["sh", "-c", f'exec 3<{host}/file; echo $$; exec sleep 3600'], cwd="/")
    state.procs.append(p)
    state.needles["fd"] = first_line_pid(p)
    p = popen([sys.executable, "-c", MMAP_NEEDLE, f"{host}/file"], cwd="/")
    state.procs.append(p)
    state.needles["mmap"] = first_line_pid(p)
    # Inside the guest: report the host pid, which is what every tool prints.
    p = popen(mm + ["exec", "t", "--", "sh", "-c",
                    "cd /mnt/target && exec sleep 3600"], cwd="/")
    state.procs.append(p)
    state.needles["guest"] = _wait_guest_pid(host)
    p = popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
               "echo $$; exec sleep 3600"], cwd="/")
    state.procs.append(p)
    state.needles["leak"] = first_line_pid(p)
    p = popen([sys.executable, str(PINMAKERS), "fanotify", host, f"{host}/file"], cwd="/")
    state.procs.append(p)
    state.needles["fanotify"] = first_line_pid(p)
    Path(host, "ring").write_bytes(b"r")
    p = popen([sys.executable, str(PINMAKERS), "io_uring", f"{host}/ring"], cwd="/")
    state.procs.append(p)
    state.needles["io_uring"] = first_line_pid(p)
    shutil.copy("/bin/true", f"{host}/interp")
    if not os.path.ismount(BINFMT):
        sh(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
    name = f"mmbench{os.getpid()}"
    state.binfmt = name
    Path(BINFMT, "register").write_text(f":{name}:M::MMBENCH{os.getpid():x}::{host}/interp:F")
    state.needles["binfmt"] = 0        # no pid: found when a tool reports it at all
    # The --all part: `mounts` tmpfs mounts spread over the g* guests, mounted through the
    # mirrors (they propagate into the guests); a camper on every tenth.
    for i in range(args.mounts):
        g = f"g{i // args.per_guest}"
        path = f"/container/{g}/mnt/m{i % args.per_guest}"
        os.makedirs(path, exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "size=1m", f"bench{i}", path])
        state.audit_paths.append(path)
        if i % 10 == 0:
            p = popen(["sh", "-c", 'echo $$; exec sleep 3600'], cwd=path)
            state.procs.append(p)
            first_line_pid(p)
            state.audit_pinned.add(path)


def _wait_guest_pid(host_path: str, timeout: float = 10.0) -> int:
    """The host pid of the sleep whose cwd is the guest's /mnt/target (found by its cwd link,
    which the kernel prints relative to the process's own root)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                if (os.readlink(f"/proc/{name}/cwd") == "/mnt/target"
                        and open(f"/proc/{name}/comm").read().strip() == "sleep"):
                    return int(name)
            except OSError:
                continue
        time.sleep(0.05)
    raise RuntimeError("the guest needle did not start")


# ----------------------------------------------------------------------------- the tools
def timed(argv: list[str], runs: int) -> tuple[float, subprocess.CompletedProcess]:
    times, cp = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        cp = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
    assert cp is not None
    return statistics.median(times), cp


def pids_fuser(cp: subprocess.CompletedProcess) -> set[int]:
    # fuser prints the pids (with access letters) on stdout, the -v table on stderr.
    out = set()
    for tok in cp.stdout.split():
        digits = "".join(ch for ch in tok if ch.isdigit())
        if digits:
            out.add(int(digits))
    return out


def pids_lsof(cp: subprocess.CompletedProcess) -> set[int]:
    return {int(line[1:]) for line in cp.stdout.splitlines() if line.startswith("p")}


def pids_lsfd(cp: subprocess.CompletedProcess) -> set[int]:
    return {int(line.split()[0]) for line in cp.stdout.splitlines() if line.strip()}


def pids_busy(cp: subprocess.CompletedProcess) -> set[int]:
    pins = json.loads(cp.stdout)["pins"]
    # the kernel-held needle stands as pid 0 when its kind is reported
    return {p["pid"] for p in pins if p["pid"] is not None} | \
        ({0} if any(p["how"] == "binfmt" for p in pins) else set())


def found(pids: set[int], needles: dict[str, int]) -> tuple[list[str], list[str]]:
    """Needles whose pid a tool printed. A kernel-held needle (binfmt) stands as pid 0, which
    only busy reports (its binfmt pin): fuser -v lists what the kernel holds as the pseudo
    process `kernel`, and for a mount that is only the mount itself (ACCESS `mount`), with or
    without a binfmt entry holding a file there (checked by hand on this kernel); lsof and
    lsfd look at processes only."""
    hit = [n for n in NEEDLES if n in needles and needles[n] in pids]
    return hit, [n for n in NEEDLES if n in needles and n not in hit]


FINDER_ONLY = """
import json, sys, time
t0 = time.perf_counter()
from mirrormount.busy import finder
from mirrormount.guest.model import Layout
rep = finder.find_pins(sys.argv[1], Layout("/container", "/run/mirrormount"))
print(json.dumps(rep.to_json()))
print(time.perf_counter() - t0, file=sys.stderr)
"""


def run_single(state: State, runs: int) -> list[dict]:
    # Where the CLI's time goes: interpreter and CLI start-up, then the finder itself (timed
    # inside the process, from its import to its answer).
    startup, _ = timed(mm_argv() + ["--version"], runs)
    inner = []
    for _ in range(runs):
        cp = subprocess.run([sys.executable, "-c", FINDER_ONLY, state.target_guest],
                            capture_output=True, text=True)
        inner.append(float(cp.stderr.strip().splitlines()[-1]))
    hit, miss = found(pids_busy(cp), state.needles)
    prof = os.environ.get("MIRRORMOUNT_BENCH_PROFILE")
    if prof:
        # cProfile of the finder in-process (its forked scan workers are not profiled)
        # into the sandbox's /tmp, then its top printed on stderr: the sandbox's / is a tmpfs
        # that dies with it, so MIRRORMOUNT_BENCH_PROFILE=1 is enough to ask for it.
        Path("/tmp/finder_only.py").write_text(FINDER_ONLY)
        cp = subprocess.run([sys.executable, "-m", "cProfile", "-o", "/tmp/finder.prof",
                             "/tmp/finder_only.py", state.target_guest],
                            capture_output=True, text=True)
        if cp.returncode != 0:
            print(f"profile run failed: {cp.stderr[-2000:]}", file=sys.stderr)
        else:
            import pstats
            stats = pstats.Stats("/tmp/finder.prof", stream=sys.stderr)
            stats.sort_stats("cumulative").print_stats(30)
            stats.sort_stats("tottime").print_stats(15)
    rows = [{"tool": "(CLI start-up: mirrormount --version)", "secs": startup, "found": [],
             "missed": []},
            {"tool": "(finder alone, in-process: import + find_pins)",
             "secs": statistics.median(inner), "found": hit, "missed": miss}]
    tools = [
        ("mirrormount busy", mm_argv() + ["busy", "--json", state.target_guest], pids_busy),
        ("fuser -vm", ["fuser", "-vm", state.target_host], pids_fuser),
        ("lsof", ["lsof", "-w", "-n", "-F", "pf", state.target_host], pids_lsof),
        ("lsfd -Q DEV", ["lsfd", "-n", "-r", "-o", "PID,ASSOC",
                         "-Q", f'DEV == "{state.majmin}"'], pids_lsfd),
    ]
    # Interleaved, one run of each tool per round, so that a change of load during the
    # measurement weighs on every tool alike (each tool's median over the rounds); the
    # order rotates from round to round, so that no tool always runs right after the same
    # other one (lsof and lsfd walk every fd's fdinfo, which changes what the kernel has
    # cached for the next tool).
    times: dict[str, list[float]] = {label: [] for label, _, _ in tools}
    last: dict[str, subprocess.CompletedProcess] = {}
    for r in range(runs):
        for label, argv, _ in tools[r % len(tools):] + tools[:r % len(tools)]:
            secs, last[label] = timed(argv, 1)
            times[label].append(secs)
    for label, _, parse in tools:
        hit, miss = found(parse(last[label]), state.needles)
        rows.append({"tool": label, "secs": statistics.median(times[label]), "found": hit,
                     "missed": miss})
    # The target's ratio, paired: each round's busy over the same round's fuser (the two
    # ran seconds apart, under the same load), then the median over the rounds.
    ratios = [m / f for m, f in zip(times["mirrormount busy"], times["fuser -vm"])]
    next(r for r in rows if r["tool"] == "mirrormount busy")["paired"] = (
        statistics.median(ratios), min(ratios), max(ratios), len(ratios))
    return rows


def run_all(state: State, runs: int, fuser_sample: int) -> list[dict]:
    secs, cp = timed(mm_argv() + ["busy", "--all", "--json"], runs)
    flagged = {r["target"] for r in json.loads(cp.stdout)}
    want = {f"{p.split('/')[2]}:/{'/'.join(p.split('/')[3:])}" for p in state.audit_pinned}
    want.add(state.target_guest)    # the single target's needles pin it too
    rows = [{"tool": "mirrormount busy --all", "secs": secs,
             "found": f"{len(flagged & want)}/{len(want)} pinned mounts",
             "note": f"{len(flagged - want)} other mount(s) flagged"}]
    paths = state.audit_paths
    sample = paths if fuser_sample <= 0 else paths[:fuser_sample]
    hits = 0
    t0 = time.perf_counter()
    for p in sample:
        cp = subprocess.run(["fuser", "-m", p], capture_output=True, text=True)
        hits += p in state.audit_pinned and bool(pids_fuser(cp))
    loop = time.perf_counter() - t0
    est = loop * len(paths) / len(sample)
    rows.append({"tool": f"fuser -m x {len(paths)}", "secs": est,
                 "found": f"{hits}/{len(state.audit_pinned & set(sample))} pinned mounts",
                 "note": "measured" if len(sample) == len(paths)
                 else f"{len(sample)} runs measured, scaled to {len(paths)}"})
    return rows


def count_fds() -> tuple[int, int]:
    procs = fds = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            procs += 1
            try:
                fds += len(os.listdir(f"/proc/{name}/fd"))
            except OSError:
                pass
    return procs, fds


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages (/proc/loadavg): the machine may be shared."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def render(single: list[dict], audit: list[dict], procs: int, fds: int,
           needles: dict[str, int], load: tuple[str, str] = ("?", "?")) -> str:
    base = next(r["secs"] for r in single if r["tool"] == "fuser -vm")
    out = [f"# busy benchmark ({time.strftime('%Y-%m-%d')}, kernel {os.uname().release}, "
           f"{os.cpu_count()} CPUs)", "",
           f"Machine state: {procs} processes, {fds} fds; needles: {', '.join(NEEDLES)} "
           "(see bench/bench_busy.py).", "",
           f"Load average (1, 5, 15 min) before the timings: {load[0]}; after: {load[1]}.", "",
           "## One guest mount", "",
           "| tool | wall time | vs fuser | found | missed |", "| --- | --- | --- | --- | --- |"]
    for r in single:
        missed = ", ".join(r["missed"]) or "-"
        if r["tool"].startswith("(CLI"):
            missed = "-"
        out.append(f"| {r['tool']} | {r['secs']:.3f} s | {r['secs'] / base:.2f}x | "
                   f"{', '.join(r['found']) or '-'} | {missed} |")
    out += ["", "Needles: " + "; ".join(f"{n} = pid {pid}" if pid else f"{n} = the kernel"
                                        for n, pid in needles.items())
            + ". `leak` holds no file on the mount: it lives in a namespace with a private "
            "copy of it, which the guest's umount cannot remove; only the finder reports it "
            "(how: leaked-copy)."]
    loop = next(r["secs"] for r in audit if r["tool"].startswith("fuser"))
    out += ["", f"## Every guest mount ({len(audit) and audit[1]['tool'].split('x ')[-1]} "
            "mounts)", "", "| method | wall time | speed-up | found | note |",
            "| --- | --- | --- | --- | --- |"]
    for r in audit:
        out.append(f"| {r['tool']} | {r['secs']:.3f} s | {loop / r['secs']:.1f}x | "
                   f"{r['found']} | {r['note']} |")
    cli = next(r for r in single if r["tool"] == "mirrormount busy")
    alone = next(r for r in single if r["tool"].startswith("(finder alone"))
    allr = next(r for r in audit if r["tool"].startswith("mirrormount"))
    speedup = loop / allr["secs"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    med, lo, hi, n = cli["paired"]
    out += ["", "Targets:",
            f"- one mount <= 0.8x fuser with every needle found: the CLI takes "
            f"{med:.2f}x, the median of {n} rounds' ratios (each round's busy over its fuser; "
            f"{lo:.2f}-{hi:.2f}x; the medians above: {cli['secs'] / base:.2f}x) "
            f"({verdict(med <= 0.8 and not cli['missed'])})"
            f"; the finder alone {alone['secs'] / base:.2f}x "
            f"({verdict(alone['secs'] <= 0.8 * base and not alone['missed'])}).",
            f"- busy --all >= 10x faster than fuser -m looped: {speedup:.1f}x "
            f"({verdict(speedup >= 10)})."]
    return "\n".join(out) + "\n"


def inner(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, args.fds + 256)
    if want > hard:
        hard = want   # root may raise the hard limit up to fs.nr_open
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    state = State()
    try:
        spawn_ballast(state, args.procs, args.fds)
        build(state, args)
        procs, fds = count_fds()
        print(f"state: {procs} processes, {fds} fds; timing...", file=sys.stderr)
        before = loadavg()
        single = run_single(state, args.runs)
        audit = run_all(state, args.runs, args.fuser_sample)
        text = render(single, audit, procs, fds, state.needles, (before, loadavg()))
        print(text)
        if not args.no_write:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(text)
        return 0
    finally:
        state.kill_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--procs", type=int, default=1000)
    ap.add_argument("--fds", type=int, default=100, help="fds held by each ballast process")
    ap.add_argument("--mounts", type=int, default=100, help="guest mounts for busy --all")
    ap.add_argument("--per-guest", type=int, default=5, help="mounts per guest")
    ap.add_argument("--runs", type=int, default=5,
                    help="rounds, one run of each tool per round (median)")
    ap.add_argument("--fuser-sample", type=int, default=0,
                    help="time fuser on only this many mounts and scale (0: all)")
    ap.add_argument("--quick", action="store_true",
                    help="a small state and one run: seconds (a smoke run)")
    ap.add_argument("--no-write", action="store_true",
                    help="print the results only; do not write bench/results/busy.md")
    args = ap.parse_args()
    if args.quick:
        args.procs, args.fds, args.mounts, args.runs = 200, 50, 20, 1
        args.fuser_sample = args.fuser_sample or 5
    if os.geteuid() != 0:
        print("bench_busy: needs root", file=sys.stderr)
        return 2
    if os.environ.get(INNER_ENV):
        return inner(args)
    # Re-run ourselves inside a throwaway sandbox: nothing we mount can reach the machine.
    env = dict(os.environ, **{INNER_ENV: "1", "PYTHONPATH": str(REPO)})
    return subprocess.call([sys.executable, "-m", "mirrormount.sandbox", "--",
                            sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
                           cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())

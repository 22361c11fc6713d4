#!/usr/bin/env python3
"""Benchmark (not a test): what creating a guest costs at 1, 100 and 500 guests.

Everything runs inside throwaway sandboxes (`python -m mirrormount.sandbox`: a tmpfs-rooted,
private mount + pid namespace); this script re-executes itself inside one per phase:

  mm     mirrormount: guests created in-process (Guests.create, timed with perf_counter, plus
         the SpawnGuest step from Outcome.seconds) and through the CLI (`mirrormount create`
         wall time); `mirrormount list` / `status c1` times; host mount counts; destroy times.
  shell  the corrected shell recipe of kernel-findings §2 (bench/recipe.sh: mount(8),
         unshare(1), pivot_root(8), the guest cloned from the host namespace).

Each sandbox is padded with tmpfs mounts to a host of about 50 mounts (--host-mounts), and
guests mirror "/" (the default rootfs), so each mirror holds about 50 mounts, as on a real host.

At each point P, P-1 guests exist; "guest #P" is the next create. It is measured --samples
times (create a sample guest, measure, destroy it; in-process, CLI and shell samples alike) and
the median is reported. Then population guest cP is created and list/status are timed with P
guests. At the last point one in-process and one CLI create are profiled (cProfile).

The code measured is a snapshot of mirrormount/ taken at the start (--source worktree, the
default, or a git revision such as HEAD), extracted into each sandbox's /tmp, so a work tree that
changes during the run cannot mix versions; the CLI runs it with bytecode cached under /tmp.

Usage (root):  .venv/bin/python bench/bench_create.py [--quick] [--source worktree|REV]
                   [--propagation rshared|private] [--host-mounts 50] [--no-write]
A full run takes about 5 minutes (longer while create or destroy is O(mounts)); --quick
(1/20/50 guests, 3 samples) about 25 s. Writes bench/results/create.md, prints the same.
"""
from __future__ import annotations

import argparse
import importlib.util
import datetime
import io
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandboxed import outside_sandbox, sandbox_argv, unpack_source  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
RESULTS = BENCH / "results" / "create.md"
RECIPE = BENCH / "recipe.sh"
PAD_DIR = "/srv/bench-pad"

FULL_POINTS = (1, 100, 500)
QUICK_POINTS = (1, 20, 50)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def mount_count() -> int:
    with open("/proc/self/mountinfo", "rb") as f:
        return f.read().count(b"\n")


def wall(argv: list[str], env: dict | None = None, check: bool = True) -> float:
    t0 = time.perf_counter()
    cp = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({cp.returncode}): "
                           f"{cp.stderr.decode(errors='replace').strip()}")
    return dt


# ============================================================================ inside a sandbox
def pad_host(target: int) -> int:
    """Add small tmpfs mounts until the namespace has `target` mounts (a ~50-mount host)."""
    os.makedirs(PAD_DIR, exist_ok=True)
    i = 0
    while mount_count() < target:
        d = f"{PAD_DIR}/m{i:02d}"
        os.makedirs(d, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", f"bench-pad{i}", d], check=True)
        i += 1
    return mount_count()


def cli_argv() -> list[str]:
    exe = Path(sys.executable).parent / "mirrormount"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mirrormount"]


def cli_env() -> dict:
    """The CLI's environment: bytecode cached, as for any installed tool. The cache lives in
    the sandbox's /tmp (PYTHONPYCACHEPREFIX), so the run writes nothing into the work tree."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = "/tmp/bench-pycache"
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/sbin:/usr/bin')}"
    return env


def importtime(argv: list[str], env: dict, top: int = 12) -> list:
    """python -X importtime: the modules with the largest cumulative import time (depth 0-1)."""
    cp = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env,
                        capture_output=True, text=True)
    tops = []
    for line in cp.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and len(m.group(3)) <= 2:    # depth 0 and 1
            tops.append((int(m.group(2)) / 1e6, m.group(4), len(m.group(3)) // 2))
    tops.sort(reverse=True)
    return [[name, depth, sec] for sec, name, depth in tops[:top]]


def startup_floor(samples: int, env: dict) -> dict:
    """Process start-up cost, which every CLI call pays before doing any work."""
    py = sys.executable
    res: dict = {}
    inherited = dict(env)
    inherited.pop("PYTHONPYCACHEPREFIX")
    inherited["PYTHONDONTWRITEBYTECODE"] = "1"
    cli_import = [py, "-c", "import mirrormount.cli"]
    floors = [
        ("python -c pass", [py, "-c", "pass"], env),
        ("python -c 'import typer'", [py, "-c", "import typer"], env),
        ("python -c 'import mirrormount.cli'", cli_import, env),
        ("python -c 'import mirrormount.cli', no bytecode cache for mirrormount/ "
         "(PYTHONDONTWRITEBYTECODE=1, as this workplace's shell sets)", cli_import, inherited),
        ("mirrormount --version", cli_argv() + ["--version"], env),
        ("mirrormount --help", cli_argv() + ["--help"], env)]
    # pydantic is no dependency: typer >= 0.21 would pull it in. Measured only where present.
    if importlib.util.find_spec("pydantic") is not None:
        floors.insert(2, ("python -c 'import pydantic'", [py, "-c", "import pydantic"], env))
    for key, argv, e in floors:
        wall(argv, env=e)  # warm the page cache and the bytecode cache
    # Round-robin, not one command's samples in a row: on a shared machine the load moves
    # within seconds, and each ratio (`--version` vs `python -c pass`) should see the same.
    walls: dict[str, list[float]] = {key: [] for key, _a, _e in floors}
    for _ in range(max(samples, 5)):
        for key, argv, e in floors:
            walls[key].append(wall(argv, env=e))
    for key in walls:
        res[key] = med(walls[key])
    res["importtime"] = importtime(["-c", "import mirrormount.cli"], env)
    return res


# ---------------------------------------------------------------- an O(1) alternative, measured
# The planner only asks a handful of questions about specific paths (is BASE a private,
# unbindable mount? is the nursery holder an nsfs mount? is the mirror mounted?). statx() gives
# the path's mount id and whether it is a mount root; statmount(2) (Linux 6.8+) then gives that
# one mount's propagation and filesystem magic, without generating or parsing the whole table.
_SYSCALLS = {"x86_64": (332, 457), "aarch64": (291, 457)}   # statx, statmount
STATX_MNT_ID_UNIQUE = 0x4000
STATX_ATTR_MOUNT_ROOT = 0x2000
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
NSFS_MAGIC, TMPFS_MAGIC = 0x6E736673, 0x01021994


def statmount_probe(path: str) -> dict | None:
    """{'mount_root', 'propagation', 'magic'} for the topmost mount at path, or None."""
    import ctypes
    import struct
    nums = _SYSCALLS.get(platform.machine())
    if nums is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    stx = ctypes.create_string_buffer(256)
    if libc.syscall(ctypes.c_long(nums[0]), ctypes.c_int(-100), path.encode(),
                    ctypes.c_int(0x100), ctypes.c_uint(STATX_MNT_ID_UNIQUE), stx) != 0:
        return None
    attrs = struct.unpack_from("<Q", stx, 8)[0]
    mnt_id = struct.unpack_from("<Q", stx, 144)[0]
    req = struct.pack("<IIQQ", 24, 0, mnt_id, 0x1 | 0x2)   # SB_BASIC | MNT_BASIC
    buf = ctypes.create_string_buffer(512)
    if libc.syscall(ctypes.c_long(nums[1]), req, buf, ctypes.c_size_t(512), ctypes.c_uint(0)):
        return None
    magic = struct.unpack_from("<Q", buf, 24)[0]
    prop = struct.unpack_from("<Q", buf, 72)[0]
    words = [w for bit, w in ((MS_SHARED, "shared"), (MS_SLAVE, "slave"),
                              (MS_UNBINDABLE, "unbindable")) if prop & bit]
    return {"mount_root": bool(attrs & STATX_ATTR_MOUNT_ROOT),
            "propagation": ",".join(words) or "private", "magic": magic}


def components(layout, samples: int) -> dict:
    """The pieces create/list/destroy are made of, timed alone at the current population."""
    from mirrormount.guest import state
    from mirrormount.kernel import mountinfo, procfs

    def t(fn) -> float:
        xs = []
        for _ in range(samples):
            t0 = time.perf_counter()
            fn()
            xs.append(time.perf_counter() - t0)
        return med(xs)

    def read() -> str:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()

    text = read()
    parsed = mountinfo.parse(text)
    table = mountinfo.MountTable.of(parsed)
    probe_paths = (layout.base, layout.state, layout.nursery_file, layout.mirror("c1"))
    out = {
        "read": t(read),
        "parse": t(lambda: mountinfo.parse(text)),
        "table_of": t(lambda: mountinfo.MountTable.of(parsed)),
        "at": t(lambda: table.at(layout.mirror("c1"))),
        "guest_names": t(lambda: state.guest_names(layout)),
        "pids_by_mnt_ns": t(procfs.pids_by_mnt_ns),
        "statmount4": t(lambda: [statmount_probe(p) for p in probe_paths]),
        "mounts_at": None,
        "bytes": len(text),
    }
    try:
        from mirrormount.kernel.mountquery import mounts_at
        out["mounts_at"] = t(lambda: mounts_at(probe_paths[:3]))
    except ImportError:
        pass
    # Does statmount agree with mountinfo on what the planner asks?
    agree = True
    for path in probe_paths:
        m, pr = table.at(path), statmount_probe(path)
        if pr is None:
            out["statmount4"] = None
            agree = False
            break
        if m is None:
            agree &= not pr["mount_root"]
        else:
            agree &= pr["mount_root"] and pr["propagation"] == m.propagation and (
                (pr["magic"] == NSFS_MAGIC) == (m.fstype == "nsfs"))
    out["statmount_agrees"] = agree
    return out


def summarize_profile(stats: pstats.Stats, total: float) -> dict:
    """The functions that matter for create, by cumulative time, plus the top by own time."""
    interesting = {
        ("mountinfo.py", "read"), ("mountinfo.py", "parse"), ("mountinfo.py", "parse_line"),
        ("mountinfo.py", "at"), ("mountinfo.py", "unescape"), ("guests.py", "host_table"),
        ("guests.py", "plan"), ("guests.py", "info"), ("guests.py", "facts"),
        ("guests.py", "create"), ("state.py", "guest_names"), ("state.py", "write_atomic"),
        ("procfs.py", "pids_by_mnt_ns"), ("nursery.py", "spawn_guest"),
        ("nursery.py", "build_and_hold"), ("nursery.py", "bind_ns_file"),
        ("child.py", "ready"), ("apply.py", "run"), ("plan.py", "plan_create"),
        ("plan.py", "plan_base"), ("guests.py", "create"), ("guests.py", "validate_create"),
        ("~", "<built-in method posix.fork>"), ("~", "<built-in method posix.waitpid>"),
        ("~", "<built-in method posix.read>"), ("~", "<built-in method posix.fsync>"),
        ("mountquery.py", "mounts_at"), ("mountquery.py", "_via_statmount"),
        ("mountquery.py", "_via_mountinfo"), ("syscalls.py", "statmount"),
        ("procfs.py", "ns_id"), ("guests.py", "destroy"), ("guests.py", "list_all"),
        ("guests.py", "status"), ("guests.py", "guest_table"), ("health.py", "assess"),
        ("guests.py", "record"), ("nsexec.py", "in_namespaces"), ("apply.py", "detach"),
        ("nursery.py", "release_ns_file"), ("guests.py", "stop_processes"),
        ("procfs.py", "wait_gone"), ("mountinfo.py", "under"), ("mountinfo.py", "peer_groups"),
    }
    rows, own = [], []
    for (fname, _line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        base = os.path.basename(fname) if fname != "~" else "~"
        if (base, func) in interesting:
            rows.append([f"{base}:{func}", nc, ct])
        if fname != "~" or func.startswith("<built-in method posix"):
            own.append([f"{base}:{func}", nc, tt])
    rows.sort(key=lambda r: -r[2])
    own.sort(key=lambda r: -r[2])
    return {"total": total, "cumulative": rows, "own": own[:10]}


def profiled(fn) -> dict:
    import cProfile
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    return summarize_profile(pstats.Stats(prof), time.perf_counter() - t0)


def profile_inprocess(guests, CreateRequest, name: str) -> dict:
    out = profiled(lambda: guests.create(CreateRequest(name)))
    out["others"] = {"destroy": profiled(lambda: guests.destroy(name)),
                     "list": profiled(guests.list_all),
                     "status c1": profiled(lambda: guests.status("c1"))}
    return out


def profile_cli(env: dict, name: str) -> dict:
    path = f"/tmp/bench-cli-{os.getpid()}.prof"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cProfile", "-o", path, "-m", "mirrormount",
                    "create", name], env=env, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    stats = pstats.Stats(path, stream=io.StringIO())
    out = summarize_profile(stats, total)
    # typer's per-parameter coercion (pydantic TypeAdapters), which --version never reaches.
    for (fname, _line, func), (cc, nc, tt, ct, _c) in stats.stats.items():  # type: ignore[attr-defined]
        if fname.endswith("typer/_coercion.py") and func == "build_runtime_param":
            out["cumulative"].append(["typer/_coercion.py:build_runtime_param", nc, ct])
        if fname.endswith("typer/_adapters.py") and func == "<module>":
            out["cumulative"].append(["typer/_adapters.py:<module> (imports pydantic)", nc, ct])
    out["cumulative"].sort(key=lambda r: -r[2])
    os.unlink(path)
    wall(cli_argv() + ["destroy", name], env=env)
    # The same command under -X importtime: what a real `create` imports.
    out["importtime"] = importtime(["-m", "mirrormount", "create", name + "i"], env)
    wall(cli_argv() + ["destroy", name + "i"], env=env)
    return out


def phase_mm(args: argparse.Namespace) -> dict:
    from mirrormount.guest.guests import Guests
    from mirrormount.guest.model import Layout
    from mirrormount.guest.plan import CreateRequest

    res: dict = {"phase": "mm", "points": {}, "series": [], "destroy_series": []}
    res["base_mounts"] = mount_count()
    res["host_mounts"] = pad_host(args.host_mounts)
    env = cli_env()
    cli = cli_argv()
    import mirrormount
    probe = subprocess.run([sys.executable, "-c",
                            "import mirrormount.cli.guests as c; print(c.__file__)"],
                           env=env, capture_output=True, text=True)
    where = probe.stdout.strip()
    if not (mirrormount.__file__.startswith(SRC) and where.startswith(SRC)):
        raise RuntimeError(f"not measuring the snapshot: {mirrormount.__file__}, {where}: "
                           f"{probe.stderr.strip()[-500:]}")
    log(f"mm: sandbox host has {res['host_mounts']} mounts; measuring start-up floors")
    res["startup"] = startup_floor(args.samples, env)

    g = Guests(Layout())
    t0 = time.perf_counter()
    g.create(CreateRequest("warmup"))
    res["setup_first_create"] = time.perf_counter() - t0   # BASE, STATE and the nursery too
    g.destroy("warmup")
    res["mounts_after_setup"] = mount_count()
    wall(cli + ["--version"], env=env)

    made = 0
    t_start = time.perf_counter()
    for p in args.points:
        log(f"mm: filling to {p - 1} guests")
        while made < p - 1:
            made += 1
            t0 = time.perf_counter()
            _, oc = g.create(CreateRequest(f"c{made}"))
            res["series"].append([made, time.perf_counter() - t0,
                                  oc.seconds.get("SpawnGuest", 0.0), oc.attempts])
        log(f"mm: {made} guests, {mount_count()} mounts; sampling guest #{p}")
        pt: dict = {"inproc": [], "spawn": [], "attempts": [], "steps": [], "cli": [],
                    "inproc_destroy": [], "cli_destroy": [], "mounts_with_p": None}
        for i in range(args.samples):
            name = f"t{p}x{i}"
            t0 = time.perf_counter()
            _, oc = g.create(CreateRequest(name))
            pt["inproc"].append(time.perf_counter() - t0)
            pt["spawn"].append(oc.seconds.get("SpawnGuest", 0.0))
            pt["attempts"].append(oc.attempts)
            pt["steps"].append(dict(oc.seconds))
            pt["mounts_with_p"] = mount_count()
            t0 = time.perf_counter()
            g.destroy(name)
            pt["inproc_destroy"].append(time.perf_counter() - t0)
            name = f"s{p}x{i}"
            pt["cli"].append(wall(cli + ["create", name], env=env))
            pt["cli_destroy"].append(wall(cli + ["destroy", name], env=env))
        made += 1
        t0 = time.perf_counter()
        _, oc = g.create(CreateRequest(f"c{made}"))
        res["series"].append([made, time.perf_counter() - t0, oc.seconds.get("SpawnGuest", 0.0),
                              oc.attempts])
        pt["mounts"] = mount_count()
        rep = g.status("c1")
        pt["c1_intact"] = rep.health.mirror_intact
        pt["c1_mounts_host"], pt["c1_mounts_guest"] = rep.health.mounts_host, rep.health.mounts_guest
        listed = json.loads(subprocess.run(cli + ["--json", "list"], env=env, check=True,
                                           capture_output=True, text=True).stdout)
        pt["listed"] = len(listed)
        pt["list"] = [wall(cli + ["list"], env=env) for _ in range(args.samples)]
        pt["status"] = [wall(cli + ["status", "c1"], env=env) for _ in range(args.samples)]
        pt["list_inproc"], pt["status_inproc"] = [], []
        for _ in range(args.samples):
            t0 = time.perf_counter()
            g.list_all()
            pt["list_inproc"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g.status("c1")
            pt["status_inproc"].append(time.perf_counter() - t0)
        pt["components"] = components(g.layout, args.samples)
        res["points"][p] = pt
        log(f"mm: guest #{p}: in-process {med(pt['inproc']) * 1e3:.1f} ms, "
            f"CLI {med(pt['cli']) * 1e3:.1f} ms, {pt['mounts']} mounts")
    res["fill_seconds"] = time.perf_counter() - t_start

    log(f"mm: profiling one in-process and one CLI create at {made} guests")
    res["profile_inproc"] = profile_inprocess(g, CreateRequest, "prof1")
    res["profile_cli"] = profile_cli(env, "prof2")
    res["profile_at"] = made + 1

    log(f"mm: destroying {made} guests")
    t_start = time.perf_counter()
    for n in range(made, 0, -1):
        t0 = time.perf_counter()
        g.destroy(f"c{n}")
        res["destroy_series"].append([n, time.perf_counter() - t0])
    res["destroy_all_seconds"] = time.perf_counter() - t_start
    res["mounts_at_end"] = mount_count()
    res["left"] = len(g.list_all())
    return res


def phase_shell(args: argparse.Namespace) -> dict:
    res: dict = {"phase": "shell", "points": {}, "series": []}
    res["base_mounts"] = mount_count()
    res["host_mounts"] = pad_host(args.host_mounts)
    bash = shutil.which("bash") or "/bin/bash"
    recipe = [bash, str(RECIPE)]
    res["setup"] = wall(recipe + ["setup"])
    stderr_lines: list[str] = []
    made = 0
    t_start = time.perf_counter()
    for p in args.points:
        log(f"shell: filling to {p - 1} guests")
        if made < p - 1:
            cp = subprocess.run(recipe + ["fill", "c", str(made + 1), str(p - 1)],
                                capture_output=True, text=True)
            stderr_lines += cp.stderr.splitlines()
            if cp.returncode != 0:
                raise RuntimeError(f"recipe fill failed: {cp.stderr.strip()}")
            for line in cp.stdout.splitlines():
                name, sec = line.split()
                res["series"].append([int(name[1:]), float(sec)])
            made = p - 1
        log(f"shell: {made} guests, {mount_count()} mounts; sampling guest #{p}")
        pt: dict = {"create": [], "destroy": [], "mounts_with_p": None}
        for i in range(args.samples):
            name = f"s{p}x{i}"
            pt["create"].append(wall(recipe + ["create", name]))
            pt["mounts_with_p"] = mount_count()
            pt["destroy"].append(wall(recipe + ["destroy", name]))
        made += 1
        res["series"].append([made, wall(recipe + ["create", f"c{made}"])])
        pt["mounts"] = mount_count()
        res["points"][p] = pt
        log(f"shell: guest #{p}: {med(pt['create']) * 1e3:.1f} ms, {pt['mounts']} mounts")
    res["fill_seconds"] = time.perf_counter() - t_start
    res["nsfs_retries"] = sum(1 for line in stderr_lines if "attempts" in line)
    log(f"shell: destroying {made} guests")
    t0 = time.perf_counter()
    subprocess.run(recipe + ["destroy"] + [f"c{n}" for n in range(made, 0, -1)], check=True)
    res["destroy_all_seconds"] = time.perf_counter() - t0
    res["mounts_at_end"] = mount_count()
    return res


SRC = "/tmp/bench-src"     # in the sandbox's own tmpfs
MARKER = "/.mirrormount-bench-sandbox"


def inside(args: argparse.Namespace) -> int:
    if outside_sandbox(MARKER):
        return 2
    unpack_source(SRC)
    res = phase_mm(args) if args.inside == "mm" else phase_shell(args)
    print(json.dumps(res))
    return 0


# ============================================================================ outside
def source_snapshot(source: str) -> tuple[bytes, str]:
    """The mirrormount package as a tar, taken once, so that every phase, the in-process calls
    and every CLI process measure the same code even if the work tree changes during the run.
    `worktree` is the package as it is now (uncommitted edits included); anything else is a
    git revision."""
    import hashlib
    import tarfile
    if source != "worktree":
        cp = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", source,
                             "mirrormount"], capture_output=True)
        if cp.returncode != 0:
            raise SystemExit(f"bench: git archive {source}: {cp.stderr.decode().strip()}")
        data = cp.stdout
    else:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in sorted((REPO / "mirrormount").rglob("*.py")):
                tar.add(str(f), arcname=str(f.relative_to(REPO)))
        data = buf.getvalue()
    h = hashlib.sha256()
    import tarfile as _t
    with _t.open(fileobj=io.BytesIO(data)) as tar:
        for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
            h.update(m.name.encode() + b"\0" + tar.extractfile(m).read() + b"\0")
    return data, h.hexdigest()[:12]


def host_mounts_snapshot() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(" ".join(line.split()[3:5]) for line in f)


def run_phase(phase: str, args: argparse.Namespace) -> dict:
    # The marker file makes `--inside` refuse to run outside a sandbox: it is created in the
    # sandbox's own tmpfs root by the shell line below, never on this machine.
    inner = [sys.executable, str(Path(__file__).resolve()), "--inside", phase,
             "--points", ",".join(map(str, args.points)), "--samples", str(args.samples),
             "--host-mounts", str(args.host_mounts)]
    cmd = sandbox_argv(MARKER, inner, args.propagation)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log(f"starting sandbox for phase {phase} (/ {args.propagation})")
    cp = subprocess.run(cmd, cwd=REPO, env=env, input=args.snapshot, stdout=subprocess.PIPE)
    if cp.returncode != 0:
        raise SystemExit(f"bench: phase {phase} failed (exit {cp.returncode})")
    return json.loads(cp.stdout.decode().strip().splitlines()[-1])


def machine_facts(args: argparse.Namespace) -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ul = subprocess.run(["unshare", "--version"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "kernel": platform.release(), "cpus": os.cpu_count(), "cpu_model": cpu,
            "python": platform.python_version(), "util_linux": ul.split()[-1] if ul else "?",
            "propagation": args.propagation, "load_start": os.getloadavg()[0],
            "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()}


def ms(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x * 1e3:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    return "–" if not a or not b else f"{a / b:.2f}×"


def render(facts: dict, mm: dict, sh: dict, args: argparse.Namespace, elapsed: float) -> str:
    P = [str(p) for p in args.points]
    p1, pmid, plast = P[0], P[1], P[-1]
    mp, sp = mm["points"], sh["points"]

    def row(label: str, vals: list, last_ratio: bool = True, fmt=ms) -> str:
        cells = [fmt(v) for v in vals]
        r = ratio(vals[-1], vals[0]) if last_ratio else ""
        return f"| {label} | " + " | ".join(cells) + f" | {r} |"

    def m(d: dict, key: str) -> list:
        return [med(d[p][key]) for p in P]

    inproc, spawn, cli = m(mp, "inproc"), m(mp, "spawn"), m(mp, "cli")
    shell = m(sp, "create")
    out = []
    out.append("# Guest creation cost: mirrormount vs the corrected shell recipe\n")
    flags = (" --quick" if args.quick else "") + (
        f" --source {args.source}" if args.source != "worktree" else "")
    out.append(f"Generated by `bench/bench_create.py{flags}` on {facts['date']} "
               f"(whole run {elapsed:.0f} s). Code measured: {facts['source']}, "
               f"mirrormount/ sha256 `{facts['source_hash']}` (snapshotted at the start; "
               "every in-process and CLI call ran that snapshot).\n")
    out.append(f"- kernel {facts['kernel']}, {facts['cpus']} CPUs ({facts['cpu_model']}), "
               f"Python {facts['python']}, util-linux {facts['util_linux']}; 1-min load "
               f"average {facts['load_start']:.2f} at the start, {facts['load_end']:.2f} at the "
               "end (anything else running on the machine shows up as noise here)")
    out.append(f"- each phase in its own sandbox (`mirrormount.sandbox`, / "
               f"{facts['propagation']}), padded to a host of {mm['host_mounts']} mounts "
               f"(shell phase: {sh['host_mounts']}); rootfs `/`; {args.samples} samples per "
               "point, median shown; times in ms")
    out.append("- guest #P = the create made while P-1 guests exist (sample guests are "
               "created, measured, destroyed; then population guest cP is added)\n")
    hdr = "| | " + " | ".join(f"guest #{p}" for p in P) + f" | #{plast} / #{p1} |"
    out.append(hdr)
    out.append("|---|" + "---:|" * (len(P) + 1))
    out.append(row("in-process `Guests.create` (ms)", inproc))
    out.append(row("… of which the SpawnGuest step (ms)", spawn))
    out.append(row("… everything else: facts, plan, other steps, result (ms)",
                   [a - b for a, b in zip(inproc, spawn)]))
    out.append(row("CLI `mirrormount create cN`, wall (ms)", cli))
    out.append(row("shell recipe `recipe.sh create`, wall (ms)", shell))
    out.append(row("CLI / shell recipe", [a / b for a, b in zip(cli, shell)], False,
                   lambda v: f"{v:.2f}×"))
    out.append(row("host mounts, mirrormount, with P guests",
                   [mp[p]["mounts"] for p in P], False, str))
    out.append(row("host mounts, shell recipe, with P guests",
                   [sp[p]["mounts"] for p in P], False, str))
    out.append(row("`mirrormount list`, wall (ms)", m(mp, "list")))
    out.append(row("`mirrormount status c1`, wall (ms)", m(mp, "status")))
    out.append(row("in-process `list()` (ms)", m(mp, "list_inproc")))
    out.append(row("in-process `status('c1')` (ms)", m(mp, "status_inproc")))
    out.append(row("in-process `destroy` (ms)", m(mp, "inproc_destroy")))
    out.append(row("CLI `mirrormount destroy`, wall (ms)", m(mp, "cli_destroy")))
    out.append(row("shell recipe `recipe.sh destroy`, wall (ms)", m(sp, "destroy")))
    att = [statistics.mean(mp[p]["attempts"]) for p in P]
    out.append(row("mirrormount nsfs-bind attempts per create (mean)", att, False,
                   lambda v: f"{v:.1f}"))
    out.append("")
    out.append("In-process create, by step (median ms; Executor's Outcome.seconds, the rest is "
               "what create does around the plan):\n")
    out.append("| step | " + " | ".join(f"guest #{p}" for p in P) + " |")
    out.append("|---|" + "---:|" * len(P))
    keys = sorted({k for p in P for st_ in mp[p]["steps"] for k in st_},
                  key=lambda k: -statistics.median(
                      [st_.get(k, 0.0) for st_ in mp[P[-1]]["steps"]]))
    for k in keys:
        vals = [statistics.median([st_.get(k, 0.0) for st_ in mp[p]["steps"]]) for p in P]
        out.append(f"| {k} | " + " | ".join(f"{v * 1e3:.2f}" for v in vals) + " |")
    rest = [statistics.median([tot - sum(st_.values()) for tot, st_ in
                               zip(mp[p]["inproc"], mp[p]["steps"])]) for p in P]
    out.append("| (outside the executor: facts for the plan, planning, the result) | "
               + " | ".join(f"{v * 1e3:.2f}" for v in rest) + " |")
    out.append("")
    out.append("Building blocks alone, at the same populations (median ms):\n")
    out.append("| | " + " | ".join(f"{p} guests" for p in P) + " |")
    out.append("|---|" + "---:|" * len(P))
    comp = [mp[p]["components"] for p in P]
    for key, label in (("read", "read /proc/self/mountinfo (kernel generates the text)"),
                       ("parse", "mountinfo.parse of it (Python)"),
                       ("table_of", "MountTable.of (index)"),
                       ("at", "MountTable.at(mirror)"),
                       ("guest_names", "state.guest_names (scandir STATE + BASE)"),
                       ("pids_by_mnt_ns", "procfs.pids_by_mnt_ns (stat every /proc/PID/ns/mnt)"),
                       ("statmount4", "statx + statmount(2) for BASE, STATE, nursery, mirror "
                                      "(bench's own probe: the O(1) alternative)"),
                       ("mounts_at", "mountquery.mounts_at(BASE, STATE, nursery), if the code "
                                     "has it")):
        out.append(f"| {label} | " + " | ".join(ms(c[key], 2) for c in comp) + " |")
    out.append("| mountinfo size (KiB) | " + " | ".join(f"{c['bytes'] / 1024:.0f}" for c in comp)
               + " |")
    def calls(pr: dict, fn: str) -> int:
        return sum(nc for f, nc, _ct in pr["cumulative"] if f == fn)

    pin = mm["profile_inproc"]
    reads = {"create": calls(pin, "mountinfo.py:read"),
             **{k: calls(v, "mountinfo.py:read") for k, v in pin["others"].items()}}
    out.append(f"\nstatmount answers agree with mountinfo (mount root, propagation, nsfs): "
               f"{all(c['statmount_agrees'] for c in comp)}. Whole-table reads+parses of the "
               "host's mountinfo per call (profiled at the last point): "
               + ", ".join(f"`{k}` {v}" for k, v in reads.items()) + ".\n")
    out.append(f"CLI vs shell recipe at guest #{pmid}: **{ratio(cli[1], shell[1])}** "
               f"(CLI {ms(cli[1])} ms, recipe {ms(shell[1])} ms).\n")

    # ------------------------------------------------------------------ targets
    st = mm["startup"]
    floor = st["mirrormount --version"]
    out.append("## Targets\n")
    t1 = inproc[-1] / inproc[0] <= 1.5
    t1c = cli[-1] / cli[0] <= 1.5
    out.append(f"- guest #{plast} within 1.5× of guest #{p1}: in-process "
               f"{ratio(inproc[-1], inproc[0])} → **{'met' if t1 else 'NOT met'}**; "
               f"CLI {ratio(cli[-1], cli[0])} → **{'met' if t1c else 'NOT met'}**; "
               f"SpawnGuest step alone {ratio(spawn[-1], spawn[0])}.")
    t2 = inproc[0] <= 0.005
    allc = statistics.median([t_ for _n, t_, _s, _a in mm["series"]])
    out.append(f"- in-process create ≤ 5 ms on a {mm['host_mounts']}-mount host: guest #{p1} "
               f"{ms(inproc[0], 2)} ms → **{'met' if t2 else 'NOT met'}** "
               f"(guest #{plast}: {ms(inproc[-1], 2)} ms"
               f"{', met' if inproc[-1] <= 0.005 else ', not met'}; median of all "
               f"{len(mm['series'])} population creates: {ms(allc, 2)} ms).")
    t3 = cli[1] <= shell[1]
    out.append(f"- CLI no slower than the shell recipe once {pmid} guests exist: "
               f"{ms(cli[1])} vs {ms(shell[1])} ms → **{'met' if t3 else 'NOT met'}**"
               f" (CLI start-up floor, `mirrormount --version`: {ms(floor)} ms).")
    bare = st.get("python -c pass")
    out.append(f"- `mirrormount --version` against `python -c pass` (the interpreter alone): "
               f"{ms(floor)} vs {ms(bare)} ms, {ratio(floor, bare)}; `--version` and a plain "
               "`create` are answered without importing typer (mirrormount/cli/fastpath.py).")
    out.append("")

    # ------------------------------------------------------------------ whole runs
    out.append("## Whole runs\n")
    out.append(f"- first-ever create (sets up BASE, STATE and the nursery): "
               f"{ms(mm['setup_first_create'])} ms; recipe setup {ms(sh['setup'])} ms")
    out.append(f"- building {plast} guests plus samples: mirrormount {mm['fill_seconds']:.1f} s "
               f"(in-process, CLI samples included), shell recipe {sh['fill_seconds']:.1f} s")
    out.append(f"- destroying all {plast} guests: mirrormount in-process "
               f"{mm['destroy_all_seconds']:.1f} s, recipe {sh['destroy_all_seconds']:.1f} s")
    ser = {n: (t, s) for n, t, s, _a in mm["series"]}
    picks = sorted({1, *[n for n in ser if n % max(1, int(plast) // 5) == 0], int(plast)})
    out.append("- in-process population series (guest n: total / SpawnGuest ms): "
               + ", ".join(f"#{n} {ser[n][0] * 1e3:.1f}/{ser[n][1] * 1e3:.1f}"
                           for n in picks if n in ser))
    by_att: dict[int, list[float]] = {}
    for _n, _t, sp_, a in mm["series"]:
        by_att.setdefault(min(a, 3), []).append(sp_)
    out.append("- SpawnGuest by nsfs-bind attempts (findings §6 retry; population series): "
               + ", ".join(f"{a}{'+' if a == 3 else ''} attempt(s): {len(v)} creates, median "
                           f"{statistics.median(v) * 1e3:.1f} ms" for a, v in sorted(by_att.items())))
    sser = dict(sh["series"])
    out.append("- shell recipe series (guest n: ms): "
               + ", ".join(f"#{n} {sser[n] * 1e3:.0f}" for n in picks if n in sser))
    dser = dict(mm["destroy_series"])
    out.append("- in-process destroy series (while n guests exist: ms): "
               + ", ".join(f"{n} {dser[n] * 1e3:.1f}" for n in picks if n in dser))
    out.append(f"- mounts after all destroyed: mirrormount {mm['mounts_at_end']} "
               f"(set-up {mm['mounts_after_setup']}), recipe {sh['mounts_at_end']}; "
               f"guests left: {mm['left']}; recipe creates that needed an nsfs-bind retry "
               f"(population fill): {sh['nsfs_retries']}")
    chk = [f"{p}: list={mp[p]['listed']} intact={mp[p]['c1_intact']} "
           f"c1 mounts host/guest={mp[p]['c1_mounts_host']}/{mp[p]['c1_mounts_guest']}"
           for p in P]
    out.append("- sanity: " + "; ".join(chk))
    out.append("")

    # ------------------------------------------------------------------ where the time goes
    out.append("## Where the time goes\n")
    out.append("CLI start-up (median wall):\n")
    for k, v in st.items():
        if k != "importtime":
            cmd, _, note = k.partition(", ")
            out.append(f"- `{cmd}`{', ' + note if note else ''}: {ms(v)} ms")
    out.append("\n`python -X importtime -c 'import mirrormount.cli'`, largest cumulative "
               "(depth 0-1):\n")
    out.append("| module | depth | ms |\n|---|---:|---:|")
    for name, depth, sec in st["importtime"]:
        out.append(f"| {name} | {depth} | {sec * 1e3:.1f} |")
    for key, title in (("profile_inproc", "in-process create"),
                       ("profile_cli", "CLI `python -m cProfile -m mirrormount create`")):
        pr = mm[key]
        out.append(f"\ncProfile of one {title} with {mm['profile_at'] - 1} guests existing "
                   f"(total {ms(pr['total'])} ms wall, profiler overhead included):\n")
        out.append("| function | calls | cumulative ms |\n|---|---:|---:|")
        for fn, nc, ct in pr["cumulative"]:
            out.append(f"| {fn} | {nc} | {ct * 1e3:.1f} |")
        out.append("\nTop own time:\n\n| function | calls | own ms |\n|---|---:|---:|")
        for fn, nc, tt in pr["own"]:
            out.append(f"| {fn} | {nc} | {tt * 1e3:.1f} |")
        for what, sub in pr.get("others", {}).items():
            out.append(f"\nIn-process `{what}` (total {ms(sub['total'])} ms under cProfile): "
                       + ", ".join(f"{fn} ×{nc} {ct * 1e3:.1f} ms"
                                   for fn, nc, ct in sub["cumulative"][:9]))
        if "importtime" in pr:
            out.append("\n`python -X importtime -m mirrormount create NAME` (what a real "
                       "command imports), largest cumulative (depth 0-1):\n")
            out.append("| module | depth | ms |\n|---|---:|---:|")
            for name, depth, sec in pr["importtime"]:
                out.append(f"| {name} | {depth} | {sec * 1e3:.1f} |")
    out.append("")
    return "\n".join(out)


def outside(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench: needs root (it builds sandboxes with new mount namespaces)", file=sys.stderr)
        return 1
    before = host_mounts_snapshot()
    t0 = time.perf_counter()
    facts = machine_facts(args)
    args.snapshot, facts["source_hash"] = source_snapshot(args.source)
    if args.source == "worktree":
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "mirrormount"], capture_output=True, text=True).stdout.strip()
        facts["source"] = (f"work tree at commit {facts['git']}"
                           + (" plus uncommitted changes to mirrormount/" if dirty else ""))
    else:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.source],
                             capture_output=True, text=True).stdout.strip()
        facts["source"] = f"commit {rev} (`--source {args.source}`)"
    log(f"measuring {facts['source']} (mirrormount/ sha256 {facts['source_hash']})")
    mm = run_phase("mm", args)
    sh = run_phase("shell", args)
    elapsed = time.perf_counter() - t0
    facts["load_end"] = os.getloadavg()[0]
    after = host_mounts_snapshot()
    if before != after:
        print("bench: WARNING: this machine's mount table changed during the run",
              file=sys.stderr)
    # JSON round-trips turned the point keys into strings.
    md = render(facts, mm, sh, args, elapsed)
    md += (f"\nThis machine's own mount table was {'unchanged' if before == after else 'CHANGED'} "
           f"by the run ({len(after)} mounts).\n")
    print(md)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(md)
        log(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 1/20/50 guests, 3 samples")
    ap.add_argument("--points", help="comma-separated guest numbers (default 1,100,500)")
    ap.add_argument("--samples", type=int, help="samples per point (default 5; --quick 3)")
    ap.add_argument("--host-mounts", type=int, default=50,
                    help="pad each sandbox to this many mounts (default 50)")
    ap.add_argument("--propagation", choices=("rshared", "private"), default="rshared",
                    help="propagation of the sandbox's / (rshared is what systemd hosts have)")
    ap.add_argument("--no-write", action="store_true", help="print only; keep create.md")
    ap.add_argument("--source", default="worktree",
                    help="code to measure: worktree (default: mirrormount/ as it is now) or a "
                         "git revision (e.g. HEAD)")
    ap.add_argument("--inside", choices=("mm", "shell"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.points:
        args.points = tuple(int(x) for x in args.points.split(","))
    else:
        args.points = QUICK_POINTS if args.quick else FULL_POINTS
    if args.samples is None:
        args.samples = 3 if args.quick else 5
    if len(args.points) < 2 or args.points[0] != 1 or list(args.points) != sorted(args.points):
        ap.error("--points must start at 1 and increase, e.g. 1,100,500")
    return inside(args) if args.inside else outside(args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Mutation check: prove that the test suite catches a one-line break of each critical line.

What it does. For every entry of MUTATIONS below (name, file, old text, new text, the pytest
selection that should catch it, why the line matters):

1. take a copy of the repository's working tree (tracked plus untracked-but-not-ignored files,
   `git ls-files -co --exclude-standard`, read once at start-up so every run sees the same
   tree) in a fresh directory under /tmp;
2. replace OLD by NEW in FILE of that copy. OLD must occur exactly once, or the mutation is
   STALE (the code moved: update the table) and the check fails;
3. run `python -m pytest -x -q -p no:cacheprovider SELECTION` with the copy as cwd and
   PYTHONPATH, with this script's own interpreter (sys.executable: the repo's .venv);
4. CAUGHT if pytest exits 1 because a test failed, MISSED if it passes, ERROR for anything
   else (collection error, usage error, no tests selected, timeout, a failure of the session
   leak check alone, a pass after baseline-failing tests were deselected): an ERROR proves
   nothing either way;
5. delete the copy with mirrormount.kernel.removal.remove_tree (it refuses to delete anything
   when something is mounted inside).

Before the mutations, a baseline runs every selected test once on an unmutated copy. A test
that fails there would "catch" every mutation, so it is deselected from the mutation runs and
reported (use --no-baseline to skip this).

Run it as root, from anywhere (3 to 5 minutes here, more while other tests run):

    .venv/bin/python tests/mutation_check.py               # every mutation
    .venv/bin/python tests/mutation_check.py --list        # the table; STALE entries flagged
    .venv/bin/python tests/mutation_check.py --only name-fullmatch 'finder-*'
    .venv/bin/python tests/mutation_check.py --keep-going  # no -x: list every catching test
    .venv/bin/python tests/mutation_check.py --markdown /tmp/mutations.md

It prints one line per mutation and a summary, then a Markdown table for the README (to stdout,
or to --markdown FILE). Exit status 0 only if every mutation was caught; 1 otherwise; 2 for a
usage error.

Why it is not part of `make test`: it runs the privileged selections once per mutation (about
25 pytest sessions, minutes of sandboxes and loop devices), and what it checks is the suite
itself, not the product: it is worth running when a critical line or its tests change, not on
every commit. It is not a pytest module either (nothing here is named test_*), so `pytest tests`
never collects it.

Safety. Vm-test selections make their sandboxes as usual (vm-tests/conftest.py). Mutations
marked `caged` (name validation: a NAME_RE.match once let a test rbind the machine's / into a
scratch directory that shutil.rmtree then emptied, /etc included) run their pytest inside a
cage: a private mount namespace in which every mount is read-only except a fresh tmpfs on /tmp
and the copy itself. Such a mutation is run without -x, so that every test of the selection,
the dangerous ones included, meets it; if anything tried to write outside the copy and /tmp
anyway, the report says so (EROFS seen) instead of the machine losing files. Never apply that
mutation by hand to the live tree.

Concurrent test runs on the same machine (loop devices, swaps and processes are global) can
trip the session leak check (tests/plugins/leakcheck.py) and make vm-tests fail. A failure of
the leak check alone is retried once and, if it repeats, reported as an ERROR, never as a
catch; tests that fail in the baseline are deselected, and a mutation that then passes is an
ERROR (inconclusive), not a MISS. Run it on a quiet machine for a clean table.
"""
from __future__ import annotations

import argparse
import ctypes
import fnmatch
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELF = "tests/mutation_check.py"     # this file, as the snapshot names it


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str                    # relative to the repository root
    old: str                     # must occur exactly once in file
    new: str
    tests: tuple[str, ...]       # pytest arguments: paths, node ids, -k EXPR
    why: str
    # Used when a path of `tests` is missing or its -k selects nothing (e.g. a test file
    # that another change has not landed yet); the report says so.
    fallback: tuple[str, ...] = ()
    caged: bool = False          # run pytest in the read-only cage (see the docstring)
    stop_first: bool = True      # pytest -x; False: every selected test meets the mutation
    # Known gap, shown when the mutation is not caught: why the suite cannot tell, or the
    # test it would take. A known gap still fails the check: it is a hole, written down.
    if_missed: str = ""


def M(name: str, file: str, old: str, new: str, tests: Iterable[str], why: str,
      **kw) -> Mutation:
    return Mutation(name, file, old, new, tuple(tests), why, **kw)


# Process pins are produced by the /proc pass and judged on a real kernel by this vm-test.
PROCESS_PINS = ("tests/test_finder.py", "vm-tests/test_busy.py::test_process_pins_host_and_guest")
MOUNT_PINS = ("tests/test_finder.py", "vm-tests/test_busy.py::test_submounts_and_leaked_copies")
FILE_PINS = ("tests/test_finder.py", "vm-tests/test_busy.py::test_loop_and_swap")
CORE = "vm-tests/test_core.py"
PLAN = "mirrormount/guest/plan.py"
APPLY = "mirrormount/guest/apply.py"
SCAN = "mirrormount/busy/scan.py"      # the /proc pass: process pins
JUDGE = "mirrormount/busy/judge.py"    # pins from the tables and the system facts
WORLD = "mirrormount/busy/world.py"    # which namespaces are found at all
# ============================================================================ the mutations
MUTATIONS: list[Mutation] = [
    # ---------------------------------------------------------------- 1. propagation order
    M("mirror-rprivate-dropped", PLAN,
      "\"host's groups, and make-rshared alone would keep them\", mirror, \"private\",",
      "\"host's groups, and make-rshared alone would keep them\", mirror, \"shared\",",
      [CORE, "-k", "rshared and (host_mount_elsewhere or status_intact or guests_do_not_see)"],
      "mirror mode makes the mirror rprivate before rshared: on an rshared host the rbind "
      "copies are in the host's peer groups, and rshared alone keeps them (findings §2)"),
    M("mirror-rprivate-not-recursive", PLAN,
      "make-rshared alone would keep them\", mirror, \"private\",\n            recursive=True))",
      "make-rshared alone would keep them\", mirror, \"private\",\n            recursive=False))",
      [CORE, "-k", "rshared and (host_mount_elsewhere or status_intact or guests_do_not_see)"],
      "only the mirror's top mount made private: its submounts (/tmp, /usr, ...) stay in the "
      "host's peer groups"),
    # ---------------------------------------------------------------- 2. RESOLVE_IN_ROOT
    M("mount-resolve-in-root", APPLY,
      "sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS)",
      "sc.RESOLVE_NO_MAGICLINKS)",
      [f"{CORE}::test_mount_is_symlink_safe"],
      "`mount` resolves TARGET with the mirror as root: a guest's absolute or '..' symlink "
      "must not send a host mount outside the guest"),
    M("guest-only-resolve-in-root", "mirrormount/guest/guestonly.py",
      "RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS",
      "RESOLVE = sc.RESOLVE_NO_MAGICLINKS",
      ["vm-tests/test_guest_only.py::"
       "test_guest_only_bind_is_host_resolved_read_only_and_recorded_canonically"],
      "guest-only mounts resolve TARGET inside the guest with RESOLVE_IN_ROOT",
      if_missed="equivalent today: every guest-only resolve runs in a child that setns()ed "
      "into the guest, and setns sets the child's root to the guest's /, where absolute "
      "symlinks and '..' stop anyway; no behaviour test can tell, the flag is defence in "
      "depth for a caller whose root is not the guest's"),
    # ---------------------------------------------------------------- 3. unbindable BASE/STATE
    M("base-state-unbindable", PLAN,
      "path, \"unbindable\"))",
      "path, \"private\"))",
      [f"{CORE}::test_guests_do_not_see_each_other_or_state"],
      "BASE and STATE unbindable: an rbind of / prunes them, so guests never see other guests "
      "or nsfs files (findings §5)"),
    # ---------------------------------------------------------------- 4. name validation
    M("name-fullmatch", "mirrormount/guest/model.py",
      "if not NAME_RE.fullmatch(name or \"\"):",
      "if not NAME_RE.match(name or \"\"):",
      ["tests/test_plan.py", "tests/test_cli.py"],
      "a name like 'bad/name' or '../x' must never reach create; this mutation once made the "
      "suite delete a machine's /etc (caged, and run without -x so every test meets it)",
      caged=True, stop_first=False),
    # ---------------------------------------------------------------- 5. busy finder pin kinds
    M("finder-cwd", SCAN,
      "for how in (\"cwd\", \"root\", \"exe\"):", "for how in (\"root\", \"exe\"):",
      PROCESS_PINS, "pin kind cwd: a process whose working directory is on the mount"),
    M("finder-root", SCAN,
      "for how in (\"cwd\", \"root\", \"exe\"):", "for how in (\"cwd\", \"exe\"):",
      PROCESS_PINS, "pin kind root: a chrooted process"),
    M("finder-exe", SCAN,
      "for how in (\"cwd\", \"root\", \"exe\"):", "for how in (\"cwd\", \"root\"):",
      PROCESS_PINS, "pin kind exe: a process running a program from the mount"),
    M("finder-fd", SCAN,
      "keep(pid, \"fd\", fdname, dfd, dev)", "pass",
      PROCESS_PINS, "pin kind fd: an open file"),
    M("finder-mmap", SCAN,
      "_scan_maps(pid, name, proc_fd, devlist, out)", "pass",
      PROCESS_PINS, "pin kind mmap: a file mapped in memory, no fd left"),
    M("finder-submount", JUDGE,
      "out.append(self._submount(v, k))", "pass",
      MOUNT_PINS, "pin kind submount: a mount beneath the target (what makes umount EBUSY)"),
    M("finder-leaked-copy", JUDGE,
      "out.append(self._leak(v, m, why))", "pass",
      MOUNT_PINS, "pin kind leaked-copy: a copy that umount propagation will not remove"),
    M("finder-leaked-copy-nsfs-file", WORLD,
      "if m.fstype != \"nsfs\":", "if True:",
      MOUNT_PINS, "leaked-copy in a namespace that only an nsfs bind keeps alive (found by "
      "walking nsfs mounts)"),
    M("finder-leaked-copy-open-fd", WORLD,
      "for pid, fdname, ino in scan.nsfs_fds:", "for pid, fdname, ino in ():",
      MOUNT_PINS, "leaked-copy in a namespace that only an open fd keeps alive"),
    M("finder-detached", JUDGE,
      "elif r.mnt_id not in self.index.by_id and r.dev == dev:", "elif False:",
      ("tests/test_finder.py",
       "vm-tests/test_busy.py::test_umount_explains_waits_and_detaches"),
      "pin kind detached: a process on a lazily detached copy (after umount --lazy)"),
    M("finder-swap", JUDGE,
      "for s in self.facts.swaps:", "for s in ():",
      FILE_PINS, "pin kind swap: a swap file on the mount"),
    M("finder-loop", JUDGE,
      "for lo in self.facts.loops:", "for lo in ():",
      FILE_PINS, "pin kind loop: a loop device's backing file on the mount"),
    M("finder-nfsd-export", JUDGE,
      "for path in self.facts.exports:", "for path in ():",
      ("tests/test_finder.py",),
      "pin kind nfsd-export (no nfsd on this kernel: fixtures only)",
      if_missed="needs a judge test in tests/test_finder.py: Facts with exports=(the "
      "fixture's /container/c1/mnt/x,) and the judge's stat of it stubbed to device 7:0, "
      "expecting an nfsd-export pin; today exports are only parsed (test_parse_exports)"),
    M("finder-holder", JUDGE,
      "for h in (block_holders(*t.dev) if t.major else [])]",
      "for h in ([] if t.major else [])]",
      ("tests/test_finder.py",),
      "pin kind holder: a dm/md device stacked on the target's device (no device-mapper "
      "here: fixtures only)",
      if_missed="needs a judge test with block_holders stubbed to ['dm-0'] (the judge "
      "fixture stubs it to []) expecting a holder pin for /dev/dm-0; today only the sysfs "
      "reader is tested (test_block_holders_from_a_sysfs_tree)"),
    # ---------------------------------------------------------------- 6. the old root
    M("old-root-rprivate", "mirrormount/guest/nursery.py",
      "    sc.mount(None, put_old, None, sc.MS_REC | sc.MS_PRIVATE)\n", "",
      ["vm-tests/test_faults.py", "-k", "intact"],
      "the guest child makes the old root rprivate before detaching it, or the detach "
      "propagates unmounts into other guests' mirrors (findings §3)",
      fallback=(CORE, "-k", "guests_do_not_see or lifecycle_without_statmount or "
                            "destroy_leaves_nothing"),
      if_missed="equivalent today: the old root is the nursery's tmpfs copy, private and "
      "with nothing beneath it (seen: no shared: field, no child mount), because guests are "
      "cloned from the nursery, not from the host, so its detach cannot propagate with or "
      "without the line; only a unit test of the guest child's syscall order (a recording "
      "fake of kernel.syscalls) could catch its removal"),
    # ---------------------------------------------------------------- 7. mirror+host
    M("mirror-host-rslave", PLAN,
      "mirror, \"slave\", recursive=True))", "mirror, \"private\", recursive=True))",
      [CORE, "-k", "host_mount_elsewhere and mirror+host"],
      "mirror+host: the mirror is a slave of the host (receives its mounts) before rshared"),
    M("mirror-host-refuses-private", PLAN,
      "        if top.shared is None:\n            out.append(path)",
      "        if False:\n            out.append(path)",
      ["vm-tests/test_host_safety.py", "-k", "mirror_host_on_a_private"],
      "mirror+host on a private host mount is refused, naming the mount to make shared: "
      "the mirror would silently receive nothing, and mirrormount never shares a host "
      "mount itself"),
    # ---------------------------------------------------------------- 8. private before detach
    M("detach-private-first", APPLY,
      "    sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)\n", "",
      [CORE, "vm-tests/test_faults.py", "-k",
       "destroy_leaves_nothing or leaves_the_others_intact or "
       "(failed_create_undoes and rshared)"],
      "apply.detach (destroy, and the rollback of a failed create) makes a tree private "
      "before detaching it: a shared tree's detach propagates into every peer (findings §3)"),
    M("destroy-private-first", APPLY,
      "detach(op.path)",
      "sc.umount2(op.path, sc.MNT_DETACH)",
      [CORE, "vm-tests/test_faults.py", "-k",
       "destroy_leaves_nothing or leaves_the_others_intact or destroy_refuses or privately"],
      "destroy alone: the mirror detached while still shared with its peers",
      if_missed="needs a vm-test where something outside BASE shares the mirror when "
      "`destroy` runs, e.g. a guest mount at /srv/own and `mount --rbind /container/c1/srv "
      "/mnt/view` on the host, asserting /mnt/view/own survives the destroy (seen: the "
      "mutation unmounts it, the real code does not). A foreign namespace's copy of "
      "/container/c1 cannot tell: rmdir of the mirror directory detaches it either way"),
]


# ============================================================================ the work tree
@dataclass(frozen=True)
class Entry:
    path: str
    mode: int
    data: bytes | None     # None: a symlink
    link: str = ""


def snapshot(repo: Path) -> list[Entry]:
    """The working tree's files (tracked + untracked-but-not-ignored), read once."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                         capture_output=True, check=True).stdout.decode("utf-8",
                                                                        "surrogateescape")
    entries = []
    for rel in sorted(set(filter(None, out.split("\0")))):
        p = repo / rel
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue          # tracked but deleted in the working tree
        if os.path.islink(p):
            entries.append(Entry(rel, 0o777, None, os.readlink(p)))
        elif p.is_file():
            entries.append(Entry(rel, st.st_mode & 0o7777, p.read_bytes()))
    return entries


def materialize(entries: list[Entry], what: str) -> Path:
    """A fresh copy of the snapshot under /tmp (0755, as a checkout is: the CLI tests run
    `python -m mirrormount` from it as nobody too)."""
    root = Path(tempfile.mkdtemp(prefix=f"mirrormount-mutation-{what}-", dir="/tmp"))
    os.chmod(root, 0o755)
    for e in entries:
        dest = root / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if e.data is None:
            os.symlink(e.link, dest)
        else:
            dest.write_bytes(e.data)
            os.chmod(dest, e.mode)
    return root


_remove_tree: Callable[[str], None] | None = None


def discard(root: Path) -> str:
    """Delete a copy with the repository's remove_tree (imported once, at start-up, from the
    original tree: never a mutated one); '' or the reason the copy was kept."""
    global _remove_tree
    if _remove_tree is None:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        try:
            from mirrormount.kernel.removal import remove_tree
        except ImportError:                       # the layout before kernel/
            from mirrormount.removal import remove_tree  # type: ignore[no-redef]
        _remove_tree = remove_tree
    try:
        _remove_tree(str(root))
    except OSError as exc:
        return f"copy kept at {root}: {exc}"
    return ""


def occurrences(entries: list[Entry], m: Mutation) -> tuple[int, list[str]]:
    """How often m.old occurs in m.file (-1: no such file), and the other .py files that
    contain it too (a hint for updating the table when code moves)."""
    count, elsewhere = -1, []
    for e in entries:
        if e.data is None or (not e.path.endswith(".py") and e.path != m.file):
            continue
        text = e.data.decode("utf-8", "surrogateescape")
        if e.path == m.file:
            count = text.count(m.old)
        elif m.old.strip() and m.old in text and e.path != SELF:
            elsewhere.append(e.path)
    return count, elsewhere


def mutated(entries: list[Entry], m: Mutation) -> list[Entry]:
    out = []
    for e in entries:
        if e.path == m.file and e.data is not None:
            text = e.data.decode("utf-8", "surrogateescape").replace(m.old, m.new, 1)
            e = Entry(e.path, e.mode, text.encode("utf-8", "surrogateescape"))
        out.append(e)
    return out


# ============================================================================ the cage
CLONE_NEWNS = 0x00020000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 0x1
NR_MOUNT_SETATTR = 442     # the same on every architecture (the new mount API)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def cage(copy: Path) -> Callable[[], None]:
    """A preexec_fn: in the child, before pytest starts, a private mount namespace where every
    mount is read-only except a fresh tmpfs on /tmp and a bind of the copy at its own path.
    Its own ctypes, so no mutation of mirrormount.kernel.syscalls can weaken it."""
    where = str(copy)
    assert where.startswith("/tmp/"), where

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                               ctypes.c_ulong, ctypes.c_char_p]
        libc.syscall.restype = ctypes.c_long

        def check(ret: int, what: str) -> None:
            if ret != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mutation cage: {what}: {os.strerror(err)}")

        def setattr_(path: str, recursive: bool, attr_set: int = 0, attr_clr: int = 0) -> None:
            attr = _MountAttr(attr_set, attr_clr, 0, 0)
            check(libc.syscall(ctypes.c_long(NR_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD),
                               path.encode(), ctypes.c_uint(AT_RECURSIVE if recursive else 0),
                               ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
                  f"mount_setattr {path}")

        check(libc.unshare(CLONE_NEWNS), "unshare")
        # First: nothing done in here may propagate to the machine's namespace.
        check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / rprivate")
        fd = os.open(where, os.O_PATH | os.O_DIRECTORY)
        check(libc.mount(b"mutation-cage", b"/tmp", b"tmpfs", 0, b"mode=1777"), "tmpfs /tmp")
        os.makedirs(where)
        check(libc.mount(f"/proc/self/fd/{fd}".encode(), where.encode(), None, MS_BIND, None),
              f"bind {where}")
        os.close(fd)
        # Every mount read-only (binds made later keep the flag, so an rbind of / made by a
        # regressed test is read-only too), then the two scratch places writable again.
        setattr_("/", True, attr_set=MOUNT_ATTR_RDONLY)
        setattr_("/tmp", False, attr_clr=MOUNT_ATTR_RDONLY)
        setattr_(where, False, attr_clr=MOUNT_ATTR_RDONLY)
        os.chdir(where)

    return enter


# ============================================================================ running pytest
SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) (.+?)(?: - .*)?$", re.M)
LEAK_BANNER = "the test run changed this machine"
EROFS_SIGNS = ("Read-only file system", "[Errno 30]", "EROFS")


@dataclass
class Run:
    code: int | None          # None: timed out
    output: str
    seconds: float

    @property
    def failing(self) -> list[str]:
        return [m.group(2) for m in SUMMARY_LINE.finditer(self.output)
                if "::" in m.group(2)]

    @property
    def summary(self) -> list[str]:
        """pytest's short summary lines (FAILED/ERROR id - message)."""
        return [m.group(0) for m in SUMMARY_LINE.finditer(self.output)
                if "::" in m.group(2)]

    @property
    def leak_only(self) -> bool:
        return self.code == 1 and not self.failing and LEAK_BANNER in self.output

    def leak_lines(self) -> list[str]:
        lines = self.output.split(LEAK_BANNER, 1)[-1].splitlines()[1:]
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("=")][:3]

    def tail(self, n: int = 6) -> str:
        return " | ".join(ln.strip() for ln in self.output.strip().splitlines()[-n:])


def pytest_env(copy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MIRRORMOUNT_", "PYTEST_")) and k != "PYTHONPATH"}
    # COLUMNS: wide enough that the short summary keeps each failure's message
    env.update(PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1", COLUMNS="300")
    return env


def run_pytest(copy: Path, args: list[str], *, caged: bool, timeout: float) -> Run:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *args]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=copy, env=pytest_env(copy), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True,
                            preexec_fn=cage(copy) if caged else None)
    try:
        out, _ = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # our own pytest's process group only
        out, _ = proc.communicate()
        code = None
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return Run(code, out, time.monotonic() - t0)


def collect(copy: Path, args: tuple[str, ...], caged: bool, timeout: float
            ) -> tuple[list[str] | None, str]:
    """Node ids a selection picks on the unmutated copy; None and why if it cannot."""
    run = run_pytest(copy, ["--collect-only", *args], caged=caged, timeout=timeout)
    ids = [ln.strip() for ln in run.output.splitlines() if "::" in ln and " " not in
           ln.split("::", 1)[0] and not ln.startswith(("FAILED", "ERROR"))]
    if run.code == 0:
        return ids, ""
    if run.code == 5:
        return [], "selects no test"
    return None, f"does not collect (pytest exit {run.code}): {run.tail(3)}"


# ============================================================================ the check
@dataclass
class Result:
    mutation: Mutation
    status: str                       # CAUGHT | MISSED | STALE | ERROR
    seconds: float = 0.0
    caught_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    selection: tuple[str, ...] = ()
    details: list[str] = field(default_factory=list)   # pytest's summary lines (--verbose)


@dataclass
class Plan:
    selection: tuple[str, ...]
    ids: list[str]
    notes: list[str]


def path_args(args: Iterable[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-k", "-m"):
            skip = True
        elif not a.startswith("-"):
            out.append(a.split("::", 1)[0])
    return out


def plan_selection(m: Mutation, copy: Path, timeout: float) -> Plan | str:
    """The selection to use (primary, else fallback) and its node ids; or why none works."""
    notes: list[str] = []
    for label, sel in (("primary", m.tests), ("fallback", m.fallback)):
        if not sel:
            continue
        missing = [p for p in path_args(sel) if not (copy / p).exists()]
        if missing:
            notes.append(f"{label} selection unusable: {', '.join(missing)} missing")
            continue
        ids, why = collect(copy, sel, m.caged, timeout)
        if ids is None:
            return f"selection {' '.join(sel)} {why}"
        if not ids:
            notes.append(f"{label} selection unusable: {' '.join(sel)} {why}")
            continue
        if label == "fallback":
            notes.append(f"FELL BACK to {' '.join(sel)}")
        return Plan(sel, ids, notes)
    return "; ".join(notes) or "no selection"


@dataclass
class Baseline:
    bad: dict[str, str] = field(default_factory=dict)   # node id -> how it failed unmutated
    leak_dirty: bool = False     # the leak check fails unmutated too: it cannot catch anything


def baseline(copy: Path, plans: dict[str, Plan], mutations: list[Mutation],
             timeout: float, say: Callable[[str], None]) -> Baseline:
    """Run every selected test once, unmutated (caged ones in the cage)."""
    out = Baseline()
    for caged in (False, True):
        ids = sorted({i for m in mutations if m.name in plans and m.caged == caged
                      for i in plans[m.name].ids})
        if not ids:
            continue
        where = "in the cage" if caged else "as is"
        for attempt in (1, 2):
            run = run_pytest(copy, ids, caged=caged, timeout=timeout * 3)
            say(f"baseline {where}: {len(ids)} tests, pytest exit {run.code}, "
                f"{run.seconds:.1f}s")
            if not (run.leak_only and attempt == 1):
                break
            say(f"  leak check only: {'; '.join(run.leak_lines())}; once more")
        for i in run.failing:
            out.bad[i] = f"fails unmutated ({where})"
            say(f"  fails unmutated, deselected from mutation runs: {i}")
        if run.leak_only:
            out.leak_dirty = True
            say(f"  the leak check fails unmutated too ({'; '.join(run.leak_lines())}): a "
                "mutation caught by it alone will count as an ERROR")
        elif run.code not in (0, 1) or (run.code == 1 and not run.failing):
            why = "timed out" if run.code is None else f"pytest exit {run.code}: {run.tail(4)}"
            say(f"  baseline {where} is not clean: {why}")
            for i in ids:
                out.bad.setdefault(i, f"baseline run not clean ({why})")
    return out


def check_one(m: Mutation, entries: list[Entry], plan: Plan, base: Baseline,
              keep_going: bool, timeout: float) -> Result:
    res = Result(m, "ERROR", selection=plan.selection, notes=list(plan.notes))
    bad = base.bad
    usable = [i for i in plan.ids if i not in bad]
    if not usable:
        res.notes.append("every selected test fails unmutated")
        return res
    deselect = [a for i in plan.ids if i in bad for a in ("--deselect", i)]
    if deselect:
        res.notes.append(f"{len(deselect) // 2} test(s) deselected (fail unmutated)")
    args = [*(["-x"] if m.stop_first and not keep_going else []), *plan.selection, *deselect]
    for attempt in (1, 2):
        copy = materialize(mutated(entries, m), m.name)
        try:
            run = run_pytest(copy, args, caged=m.caged, timeout=timeout)
        finally:
            kept = discard(copy)
            if kept:
                res.notes.append(kept)
        res.seconds += run.seconds
        if m.caged and any(s in run.output for s in EROFS_SIGNS):
            res.notes.append("cage: EROFS seen: something tried to write outside the copy "
                             "and /tmp, which only the cage prevented")
        elif m.caged and attempt == 1:
            res.notes.append("cage: no write outside the copy and /tmp was seen")
        if run.code is None:
            res.notes.append(f"timed out after {timeout:.0f}s")
            return res
        if run.code == 0:
            if deselect:
                # The deselected tests may be the very ones that would catch it.
                res.notes.append("passed without the deselected tests: inconclusive")
                return res
            res.status = "MISSED"
            if attempt == 2:
                res.notes.append("a leak-check failure did not repeat (concurrent activity?)")
            return res
        if run.code == 1 and run.failing:
            res.status, res.caught_by, res.details = "CAUGHT", run.failing, run.summary
            return res
        if run.leak_only:
            if base.leak_dirty:
                res.notes.append("only the leak check failed, and it fails unmutated too")
                return res
            if attempt == 1:
                continue            # maybe another run on this machine: once more
            # Loop devices, swaps and processes are the machine's: another test run at the
            # same time trips the leak check just the same, so this is not counted as a catch.
            res.notes.append("no test failed; only the session leak check did, twice: "
                             + "; ".join(run.leak_lines()) + " (a leak of this run, or "
                             "another run on the machine: rerun when it is quiet)")
            return res
        res.notes.append(f"pytest exit {run.code}: {run.tail()}")
        return res
    return res


# ============================================================================ reporting
def short_by(r: Result, n: int = 2) -> str:
    if not r.caught_by:
        return ""
    shown = ", ".join(r.caught_by[:n])
    return shown + (f" (+{len(r.caught_by) - n} more)" if len(r.caught_by) > n else "")


def line(r: Result, index: int, total: int) -> str:
    by = f" by {short_by(r)}" if r.caught_by else ""
    notes = f"  [{'; '.join(r.notes)}]" if r.notes else ""
    return (f"[{index:2d}/{total}] {r.status:6s} {r.mutation.name:34s} {r.mutation.file:30s} "
            f"{r.seconds:6.1f}s{by}{notes}")


def markdown(results: list[Result], total_seconds: float) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = [f"Mutation check ({time.strftime('%Y-%m-%d')}, `tests/mutation_check.py`, "
           f"{total_seconds / 60:.1f} min): each row is a one-line break of a critical line "
           "and the test that failed because of it.", "",
           "| mutation | file | result | caught by (or the gap) | time | why the line matters |",
           "|---|---|---|---|---:|---|"]
    for r in results:
        gap = r.mutation.if_missed if r.status == "MISSED" else ""
        by = short_by(r, 1) or gap or ("; ".join(r.notes) if r.status != "CAUGHT" else "")
        out.append(f"| `{r.mutation.name}` | {r.mutation.file} | **{r.status}** | "
                   f"{cell(by)} | {r.seconds:.1f} s | {cell(r.mutation.why)} |")
    return "\n".join(out) + "\n"


def select(names: list[str] | None) -> list[Mutation]:
    """The mutations named (fnmatch globs), in table order; ValueError for an unknown one."""
    if not names:
        return list(MUTATIONS)
    for pat in names:
        if not any(fnmatch.fnmatchcase(m.name, pat) for m in MUTATIONS):
            raise ValueError(f"no mutation named {pat!r} (see --list)")
    return [m for m in MUTATIONS if any(fnmatch.fnmatchcase(m.name, p) for p in names)]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="Prove the test suite catches one-line breaks "
                                             "of mirrormount's critical lines.")
    ap.add_argument("--list", action="store_true",
                    help="list the mutations (and whether each still applies); run nothing")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="these mutations (globs ok)")
    ap.add_argument("--keep-going", action="store_true",
                    help="run each selection to the end (no -x), listing every catching test")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated baseline run")
    ap.add_argument("--markdown", metavar="FILE", help="write the Markdown table here")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="after each mutation, list every failing test")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per pytest run (default 300)")
    opts = ap.parse_args(argv)
    try:
        mutations = select(opts.only)
    except ValueError as exc:
        ap.error(str(exc))
    entries = snapshot(REPO)

    if opts.list:
        stale = 0
        for m in mutations:
            count, elsewhere = occurrences(entries, m)
            ok = "ok" if count == 1 else "STALE (" + (f"{count} occurrences" if count >= 0
                                                      else "no such file") + ")"
            stale += count != 1
            extra = f" (also in {', '.join(elsewhere)})" if elsewhere else ""
            print(f"{m.name:34s} {m.file:30s} {ok}{extra}")
            print(f"    {' '.join(m.tests)}" + (f"   [fallback: {' '.join(m.fallback)}]"
                                                 if m.fallback else "")
                  + ("   [caged, no -x]" if m.caged else ""))
        return 1 if stale else 0

    if os.geteuid() != 0:
        print("mutation_check: run as root (the vm-tests need it)", file=sys.stderr)
        return 2

    def say(text: str) -> None:
        print(text, flush=True)

    t_start = time.monotonic()
    say(f"mutation check of {REPO} ({len(entries)} files), {len(mutations)} mutations, "
        f"{sys.executable}")
    results: dict[str, Result] = {}
    plans: dict[str, Plan] = {}
    clean = materialize(entries, "baseline")
    try:
        for m in mutations:
            count, elsewhere = occurrences(entries, m)
            if count != 1:
                results[m.name] = Result(m, "STALE", notes=[
                    (f"old text found {count} times in {m.file}, expected once"
                     if count >= 0 else f"{m.file} does not exist")
                    + (f" (it is in {', '.join(elsewhere)})" if elsewhere else "")])
                continue
            got = plan_selection(m, clean, opts.timeout)
            if isinstance(got, str):
                results[m.name] = Result(m, "ERROR", notes=[got])
                continue
            if elsewhere:
                got.notes.append(f"same text also in {', '.join(elsewhere)}")
            plans[m.name] = got
        base = Baseline() if opts.no_baseline else baseline(clean, plans, mutations,
                                                            opts.timeout, say)
    finally:
        kept = discard(clean)
        if kept:
            say(kept)

    ordered: list[Result] = []
    for index, m in enumerate(mutations, start=1):
        r = results.get(m.name) or check_one(m, entries, plans[m.name], base,
                                             opts.keep_going, opts.timeout)
        ordered.append(r)
        say(line(r, index, len(mutations)))
        if opts.verbose:
            for text in r.details or r.caught_by:
                say(f"          {text[:300]}")

    total = time.monotonic() - t_start
    counts = {s: sum(r.status == s for r in ordered) for s in ("CAUGHT", "MISSED", "STALE",
                                                               "ERROR")}
    say("")
    say(f"{len(ordered)} mutations in {total:.0f}s: " +
        ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    for r in ordered:
        if r.status != "CAUGHT":
            say(f"  {r.status}: {r.mutation.name} ({r.mutation.file}): {r.mutation.why}")
            if r.status == "MISSED" and r.mutation.if_missed:
                say(f"    known gap: {r.mutation.if_missed}")
            elif r.notes:
                say(f"    {'; '.join(r.notes)}")
    table = markdown(ordered, total)
    if opts.markdown:
        Path(opts.markdown).write_text(table)
        say(f"Markdown table written to {opts.markdown}")
    else:
        say("")
        print(table, end="")
    return 0 if counts["CAUGHT"] == len(ordered) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

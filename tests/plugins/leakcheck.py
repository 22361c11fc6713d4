"""A pytest plugin (loaded for every run by pyproject's addopts) that fails the session when
the test run changed the machine it ran on.

It photographs the machine at the start and again at the end:
- the whole mount table of pytest's own mount namespace (/proc/self/mountinfo, every line,
  so a new mount, a vanished one, or a changed option or propagation all count);
- loop devices (/sys/block/loop*, and which of them have a backing file);
- active swaps (/proc/swaps);
- processes left behind: started during the run, still alive (not zombies), and either
  descended from pytest, or orphaned to PID 1 while living in another mount namespace or
  naming mirrormount in their command line (a guest reaper, a sandbox, a camper).

Any difference fails the run (exit 1) with a report. It reads only; it cleans nothing, since
a leak must be fixed in the test that made it. Privileged tests also compare the mount table
around each single test (vm-tests/conftest.py), which names the culprit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError:
        return ""


def mount_lines() -> list[str]:
    """Every mountinfo line, whole: ids, options and propagation fields included."""
    return sorted(_read("/proc/self/mountinfo").splitlines())


def loop_devices() -> dict[str, str]:
    """{loopN: backing file or ''} for every loop device node the kernel has."""
    out = {}
    try:
        names = [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        names = []
    for n in names:
        out[n] = _read(f"/sys/block/{n}/loop/backing_file").strip()
    return out


def swaps() -> list[str]:
    return _read("/proc/swaps").splitlines()[1:]


def _status(pid: str) -> dict[str, str]:
    out = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _start_time(pid: str) -> int:
    stat = _read(f"/proc/{pid}/stat")
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return 0


def processes() -> dict[str, int]:
    """{pid: start time in clock ticks} of every process now."""
    return {p: _start_time(p) for p in os.listdir("/proc") if p.isdigit()}


def _descends_from(pid: str, ancestor: int) -> bool:
    seen = 0
    while pid not in ("0", "1") and seen < 64:
        if pid == str(ancestor):
            return True
        pid = _status(pid).get("PPid", "0")
        seen += 1
    return False


def leftover_processes(before: dict[str, int]) -> list[str]:
    me = os.getpid()
    try:
        my_ns = os.readlink("/proc/self/ns/mnt")
    except OSError:
        my_ns = ""
    found = []
    for pid, started in processes().items():
        if int(pid) == me or before.get(pid) == started:
            continue
        st = _status(pid)
        if not st or st.get("State", "").startswith(("Z", "X")) or st.get("PPid") == "2":
            continue     # gone, a zombie, or a kernel thread
        cmd = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        if not cmd:
            continue     # kernel threads have no command line
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            ns = my_ns
        orphan = st.get("PPid") == "1" and (ns != my_ns or "mirrormount" in cmd)
        if orphan or _descends_from(pid, me):
            found.append(f"pid {pid} ({st.get('Name')}): {cmd[:120]}")
    return found


@dataclass
class Snapshot:
    mounts: list[str] = field(default_factory=mount_lines)
    loops: dict[str, str] = field(default_factory=loop_devices)
    swaps: list[str] = field(default_factory=swaps)
    procs: dict[str, int] = field(default_factory=processes)


def differences(before: Snapshot) -> list[str]:
    after = Snapshot()
    out = []
    added = sorted(set(after.mounts) - set(before.mounts))
    removed = sorted(set(before.mounts) - set(after.mounts))
    out += [f"mount added:   {m}" for m in added]
    out += [f"mount removed: {m}" for m in removed]
    for n in sorted(set(before.loops) | set(after.loops)):
        if before.loops.get(n) != after.loops.get(n):
            out.append(f"loop device {n}: {before.loops.get(n, 'absent')!r} -> "
                       f"{after.loops.get(n, 'absent')!r}")
    if after.swaps != before.swaps:
        out.append(f"swaps changed: {before.swaps} -> {after.swaps}")
    out += [f"process left: {p}" for p in leftover_processes(before.procs)]
    return out


_BEFORE: Snapshot | None = None
_FOUND: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    global _BEFORE
    _BEFORE = Snapshot()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _BEFORE is None:
        return
    _FOUND[:] = differences(_BEFORE)
    if _FOUND and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _FOUND:
        terminalreporter.write_sep("=", "the test run changed this machine", red=True)
        for line in _FOUND:
            terminalreporter.write_line(line)
    else:
        terminalreporter.write_line("leak check: mount table, loop devices, swaps and "
                                    "processes are as they were before the run")

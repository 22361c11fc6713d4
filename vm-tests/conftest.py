"""Privileged tests: each test gets its own throwaway sandbox (mirrormount.sandbox): new mount
and pid namespaces whose / is a tmpfs with read-only binds of /usr, /etc, ... . Every test runs
twice: with the sandbox's / private, and with it rshared as on systemd hosts.

Tests drive the real CLI inside the sandbox through `nsenter -t PID -m -p -r -w`, so nothing
they mount can reach this machine's own namespace, and when the sandbox's PID 1 exits the kernel
kills everything that was left inside (guest reapers included).

These tests need root. Run as root they never skip; run as non-root they fail loudly, because
a skipped privileged suite proves nothing (CI runs as root).
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROPAGATIONS = ("private", "rshared")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self):
        return json.loads(self.stdout)


class Sandbox:
    """A held-open sandbox. `sh` runs a shell snippet inside; `mm` runs the CLI inside."""

    def __init__(self, propagation: str) -> None:
        self.propagation = propagation
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mirrormount.sandbox", "--propagation", propagation, "--hold"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
            text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            err = self.proc.stderr.read()
            raise RuntimeError(f"sandbox did not start: {line!r} {err}")
        self.pid = int(line.split()[1])
        self.env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/sbin:/usr/local/bin:"
                            "/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": "/root", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                    "PYTHONPATH": str(REPO)}

    def enter_argv(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-r", "-w", "--"]

    def run(self, argv: list[str], timeout: float = 60, input: str | None = None,
            check: bool = False, env: dict[str, str] | None = None) -> Result:
        """argv inside the sandbox; env: the whole environment instead of self.env."""
        cp = subprocess.run(self.enter_argv() + argv, capture_output=True, text=True,
                            timeout=timeout, env=self.env if env is None else env,
                            input=input)
        res = Result(cp.returncode, cp.stdout, cp.stderr)
        if check and cp.returncode != 0:
            raise AssertionError(f"{argv} failed ({cp.returncode}): {cp.stderr}{cp.stdout}")
        return res

    def sh(self, script: str, check: bool = True, **kw) -> Result:
        return self.run(["/bin/sh", "-c", script], check=check, **kw)

    def mm(self, *args: str, check: bool = False, **kw) -> Result:
        return self.run([sys.executable, "-m", "mirrormount", *args], check=check, **kw)

    def popen(self, script: str) -> subprocess.Popen:
        """A long-running process inside the sandbox (killed with the sandbox at the end)."""
        return subprocess.Popen(self.enter_argv() + ["/bin/sh", "-c", script], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def mountinfo(self) -> list[list[str]]:
        out = self.sh("cat /proc/self/mountinfo").stdout
        return [line.split() for line in out.splitlines()]

    def mountpoints(self) -> list[str]:
        return [f[4] for f in self.mountinfo()]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # PID 1 sees EOF and exits: the kernel kills the rest
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def _machine_mounts() -> set[str]:
    """The machine's whole mount table (this process's namespace), line by line."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return set(f.read().splitlines())


def pytest_configure(config):
    # `make kernel-test` runs this subset on every kernel under QEMU (README: "Other kernels").
    config.addinivalue_line("markers", "kernels: also run on Debian's 6.1 and 6.12 kernels "
                                       "under QEMU (make kernel-test)")


@pytest.fixture(params=PROPAGATIONS)
def sandbox(request):
    if os.geteuid() != 0:
        pytest.fail("vm-tests need root: run them as root (CI does)")
    before = _machine_mounts()
    sb = Sandbox(request.param)
    try:
        yield sb
    finally:
        sb.close()      # the sandbox removes its guests' cgroups as it ends (sandbox.py)
    # Every line, not just paths that look like ours: a test may leak anything anywhere.
    after = _machine_mounts()
    assert after == before, ("the test changed the machine's mount table: "
                             f"added {sorted(after - before)}, removed {sorted(before - after)}")


LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81

# The guardian: a process of its own session, told on stdin each loop device a test uses
# ("own N": made by the test, detach and delete it; "attached N": detach only) and "done"
# when the test cleaned up itself. If stdin closes without "done", the test process died
# (SIGKILL, a timeout, Ctrl-C twice): the guardian then detaches and deletes what it was
# told, retrying for a minute while the dead test's sandbox, and its mounts, go away.
# Loop devices are global to the machine; a killed test must not leave them behind.
_GUARDIAN = r"""
import fcntl, os, subprocess, sys, time
own, attached = [], []
for line in sys.stdin:
    word, _, n = line.strip().partition(" ")
    if word == "done":
        sys.exit(0)
    (own if word == "own" else attached).append(int(n))
ctl = os.open("/dev/loop-control", os.O_RDWR)
left = set(own) | set(attached)
deadline = time.monotonic() + 60
while left and time.monotonic() < deadline:
    for n in sorted(left):
        subprocess.run(["losetup", "-d", f"/dev/loop{n}"], capture_output=True)
        try:
            if n in own:
                fcntl.ioctl(ctl, 0x4C81, n)
            elif os.path.exists(f"/sys/block/loop{n}/loop"):
                continue
            left.discard(n)
        except OSError:
            pass
    time.sleep(0.2)
"""


class OwnLoops:
    """Loop devices made for one test alone (LOOP_CTL_ADD, numbers drawn from [lo, hi) so
    that test modules never collide), detached and deleted by close(). Loop devices are global
    to the machine: the sandbox dies with the test, they do not. Tear down after the sandbox,
    so no namespace mounts them any more. A guardian process does the same if the test
    process is killed before close() (see _GUARDIAN). `attached(dev)` registers a device the
    test attached with `losetup --find`: detached (not deleted) on a kill as well."""

    def __init__(self, lo: int = 0, hi: int = 0) -> None:
        self.lo, self.hi = lo, hi
        self.ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        self.made: list[int] = []
        self.found: list[str] = []
        self.guardian = subprocess.Popen([sys.executable, "-c", _GUARDIAN],
                                         stdin=subprocess.PIPE, text=True,
                                         start_new_session=True)

    def _tell(self, line: str) -> None:
        assert self.guardian.stdin is not None
        self.guardian.stdin.write(line + "\n")
        self.guardian.stdin.flush()

    def add(self) -> str:
        import random
        for _ in range(50):
            n = random.randrange(self.lo, self.hi)
            try:
                fcntl.ioctl(self.ctl, LOOP_CTL_ADD, n)
                break
            except OSError:      # EEXIST: that number is taken
                continue
        else:
            pytest.fail("could not create a loop device")
        self.made.append(n)
        self._tell(f"own {n}")
        dev = f"/dev/loop{n}"
        assert wait_for(lambda: os.path.exists(dev)), dev
        return dev

    def attached(self, dev: str) -> str:
        """A device attached by `losetup --find` in the test: detached at close (if still
        mounted, that only sets autoclear, and it goes with the sandbox)."""
        self._tell(f"attached {int(dev.removeprefix('/dev/loop'))}")
        self.found.append(dev)
        return dev

    def close(self) -> None:
        try:
            for dev in self.found:
                subprocess.run(["losetup", "-d", dev], capture_output=True)
            for n in self.made:
                subprocess.run(["losetup", "-d", f"/dev/loop{n}"], capture_output=True)
                # The sandbox's namespaces (and their mounts of it) die asynchronously.
                deadline = time.monotonic() + 15
                while True:
                    try:
                        fcntl.ioctl(self.ctl, LOOP_CTL_REMOVE, n)
                        break
                    except OSError as exc:
                        if time.monotonic() > deadline:
                            raise AssertionError(f"could not delete loop{n}: {exc}") from exc
                        time.sleep(0.1)
        finally:
            os.close(self.ctl)
            self._tell("done")
            assert self.guardian.stdin is not None
            self.guardian.stdin.close()
            self.guardian.wait()


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    return pred()


def q(s: str) -> str:
    return shlex.quote(s)

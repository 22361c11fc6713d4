"""One test boot under QEMU: the command line, the run with its deadline, and the verdict.

/dev/kvm on this machine kind cannot run a stock kernel (kernel-findings §12), so the machine
is emulated (TCG). The kernel is the ELF vmlinux, booted through its PVH entry. Two virtio-9p
shares: this machine's / read-only (tag hostroot; init.sh puts a tmpfs overlay on it) and the
job folder read-write (tag job), which carries the command in and the exit status out (`rc`).
multidevs=remap keeps inode numbers unique across the host's mounts under one share.

The verdict comes from the rc file alone: no file means the guest never finished (a panic,
a hang killed at the deadline, a failed init) and counts as exit 125.
"""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NO_REPORT = 125   # the guest never wrote rc: panic, hang or failed init


def argv(vmlinux: Path, initrd: Path, job: Path, cpus: int = 2, memory_mb: int = 3072,
         qemu: str = "qemu-system-x86_64") -> list[str]:
    """The QEMU command line for one boot (pure)."""
    share = "security_model=none,multidevs=remap"
    return [
        qemu, "-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "pc",
        "-smp", str(cpus), "-m", str(memory_mb),
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", "stdio",
        # panic=-1 reboots at once on a panic, and -no-reboot turns that into QEMU's exit.
        "-no-reboot",
        "-kernel", str(vmlinux), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        "-virtfs", f"local,path=/,mount_tag=hostroot,readonly=on,{share}",
        "-virtfs", f"local,path={job},mount_tag=job,{share}",
    ]


@dataclass(frozen=True)
class Outcome:
    code: int             # the guest command's exit status, or NO_REPORT
    why: str              # "" when the guest reported; else what went wrong
    uname: str | None     # the running kernel's `uname -r`, as the guest printed it
    summary: str | None   # pytest's last summary line
    seconds: float        # wall time from QEMU's start to its exit
    boot_seconds: float | None  # wall time until the guest printed its uname line


UNAME = re.compile(r"^kernel-test: uname -r (\S+)")
# "3 failed, 40 passed, 2 deselected in 312.45s (0:05:12)", possibly framed by '=' signs.
SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s(?: \([\d:]+\))?\s*=*$")


def summary_line(lines: list[str]) -> str | None:
    """pytest's final "N passed ... in Xs" line among console lines, stripped of '='."""
    for line in reversed(lines):
        if SUMMARY.match(line.strip()):
            return line.strip().strip("=").strip()
    return None


def verdict(rc_text: str | None, lines: list[str], timed_out: bool, timeout: float) -> tuple[int, str]:
    """(exit code, why) from the job's rc file contents (None: no file) and the console."""
    if rc_text is not None:
        try:
            return int(rc_text.strip()), ""
        except ValueError:
            return NO_REPORT, f"unreadable rc file: {rc_text!r}"
    panic = next((ln.strip() for ln in lines if "Kernel panic" in ln), None)
    if panic:
        return NO_REPORT, f"kernel panic: {panic}"
    if timed_out:
        return NO_REPORT, f"no report within {timeout:.0f} s (the machine was stopped)"
    return NO_REPORT, "the machine stopped without reporting (see the console log)"


def run(cmd: list[str], job: Path, timeout: float, tag: str, log: Path) -> Outcome:
    """Boot, echo the console prefixed by tag, stop QEMU at the deadline, return the verdict.
    The console is also written to log."""
    start = time.monotonic()
    deadline = start + timeout
    lines: list[str] = []
    boot: float | None = None
    uname: str | None = None
    timed_out = False
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    buf = b""
    try:
        with open(log, "w", encoding="utf-8") as out:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 5))
                if not ready:
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                buf += chunk
                *done, buf = buf.split(b"\n")
                for raw in done:
                    line = raw.decode(errors="replace").rstrip("\r")
                    lines.append(line)
                    out.write(line + "\n")
                    m = UNAME.match(line)
                    if m and uname is None:
                        uname, boot = m.group(1), time.monotonic() - start
                    print(f"[{tag}] {line}", flush=True)
            if buf:
                lines.append(buf.decode(errors="replace"))
                out.write(lines[-1] + "\n")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()
        proc.stdout.close()
    rc_file = job / "rc"
    rc_text = rc_file.read_text() if rc_file.exists() else None
    code, why = verdict(rc_text, lines, timed_out, timeout)
    return Outcome(code, why, uname, summary_line(lines), time.monotonic() - start, boot)


if __name__ == "__main__":   # for a look by hand: qemu.py VMLINUX INITRD JOB
    print(" ".join(argv(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))))

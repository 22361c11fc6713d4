"""Race-tolerant readers of /proc: namespace identities, NSpid, and who lives in a namespace.

Processes come and go while we read; every reader skips a pid that vanished (ENOENT/ESRCH) or
that we may not inspect (EACCES: this machine's PID 1 denies /proc/1/fd even to root).
The /proc root is a parameter so tests can point it at fixture trees.

Privilege: none to run; root to see every process.
"""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator

GONE = (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError)


def pids(proc: str = "/proc") -> Iterator[int]:
    with os.scandir(proc) as it:
        for e in it:
            if e.name.isdigit():
                yield int(e.name)


def ns_id(path: str) -> str | None:
    """'mnt:[4026531841]' for an ns link or a bound nsfs file (None if unreadable)."""
    try:
        if os.path.islink(path):
            return os.readlink(path)
        st = os.stat(path)
    except OSError:
        return None
    return f"{os.path.basename(path)}:[{st.st_ino}]"


def ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def parse_nspid(status_text: str) -> tuple[int, ...]:
    """The NSpid line of /proc/PID/status: the pid in each pid namespace, outermost first."""
    for line in status_text.split("\n"):
        if line.startswith("NSpid:"):
            return tuple(int(x) for x in line.split()[1:])
    return ()


def parse_status(status_text: str) -> dict[str, str]:
    out = {}
    for line in filter(None, status_text.split("\n")):
        key, _, val = line.partition(":")
        out[key] = val.strip()
    return out


def read_to_end(fd: int, chunk: int = 1 << 16) -> bytes:
    """Everything left to read on fd, in chunks of `chunk` bytes (a /proc file has no size to
    ask for: st_size is 0). OSError as os.read raises it."""
    parts = []
    while data := os.read(fd, chunk):
        parts.append(data)
    return b"".join(parts)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def pids_by_mnt_ns(proc: str = "/proc") -> dict[int, list[int]]:
    """Map mount-namespace inode -> pids living in it, in one pass over /proc."""
    out: dict[int, list[int]] = defaultdict(list)
    for pid in pids(proc):
        try:
            ino = os.stat(f"{proc}/{pid}/ns/mnt").st_ino
        except (OSError, ValueError):
            continue
        out[ino].append(pid)
    return out


def zombie(pid: int, proc: str = "/proc") -> bool:
    """True for a process that has exited but is not reaped yet (or is gone already)."""
    try:
        with open(f"{proc}/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Poll until every pid has exited (a zombie counts as exited); return the survivors."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in pids if alive(p) and not zombie(p)]
        if not pids or time.monotonic() >= deadline:
            return pids
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

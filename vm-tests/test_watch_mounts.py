"""Issue 9 part 3: `watch --mounts` streams mount attach, detach and move of every guest and
the host, on both paths: fanotify mount events (6.15+, this kernel) and the poll fallback
forced by MIRRORMOUNT_NO_FANOTIFY_MNT=1 (POLLPRI on mountinfo, diffed).

Each test starts the watch inside the sandbox, waits for its banner on stderr (the stream is
then live), makes mount changes with the real CLI or mount(8), and waits for the JSON lines.
A guest's namespace is one listmount cannot read on 6.18 (ENOENT: the kernel finds no root
to start from), so on the fanotify path guests are polled and the host is fanotify's: both
sources are exercised in each run.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
import time

import pytest

from conftest import q

GUEST_NS = "/run/mirrormount/{}/ns/mnt"


@pytest.fixture(params=["fanotify", "poll"])
def path(request):
    return request.param


class Watch:
    def __init__(self, sb, path: str, *extra: str) -> None:
        self.sb = sb
        env = "MIRRORMOUNT_NO_FANOTIFY_MNT=1 " if path == "poll" else ""
        t0 = time.monotonic()
        self.proc = sb.popen(f"echo $$; {env}exec {q(sys.executable)} -m mirrormount watch "
                             f"--mounts --json {' '.join(extra)}")
        self.pid_in_sandbox = int(self.proc.stdout.readline())
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        banner = threading.Event()

        def read_err() -> None:
            for line in self.proc.stderr:
                self.err.append(line)
                banner.set()

        def read_out() -> None:
            for line in self.proc.stdout:
                self.lines.put(json.loads(line))

        threading.Thread(target=read_err, daemon=True).start()
        threading.Thread(target=read_out, daemon=True).start()
        assert banner.wait(30), "no banner"
        self.started_in = time.monotonic() - t0
        assert "watching mounts of the host" in self.err[0], self.err
        self.seen: list[dict] = []

    def expect(self, timeout: float = 20, **want) -> dict:
        """The first event (seen or still to come) whose keys have these values."""
        deadline = time.monotonic() + timeout
        for ev in self.seen:
            if all(ev.get(k) == v for k, v in want.items()):
                return ev
        while time.monotonic() < deadline:
            try:
                ev = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(ev)
            if all(ev.get(k) == v for k, v in want.items()):
                return ev
        raise AssertionError(f"no event {want}; saw {self.seen}; stderr {self.err}")

    def interrupt(self) -> int:
        # To the watch itself (nsenter would not pass it on), as Ctrl-C would send it.
        self.sb.sh(f"kill -INT {self.pid_in_sandbox}")
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.sb.sh(f"kill -9 {self.pid_in_sandbox}", check=False)
            self.proc.kill()
            self.proc.wait()


def keys_ok(ev: dict) -> None:
    assert set(ev) >= {"event", "guest", "path", "mount_id", "source", "fstype"}, ev
    assert isinstance(ev["mount_id"], int) and ev["mount_id"] > 0


def test_guest_mount_and_unmount(sandbox, path):
    sandbox.mm("create", "c1", check=True)
    sandbox.sh("mkdir -p /tmp/x")
    w = Watch(sandbox, path)
    try:
        sandbox.mm("mount", "c1", "tmpfs-x", "/tmp/x", "-t", "tmpfs", check=True)
        ev = w.expect(event="attach", guest="c1", path="/tmp/x")
        keys_ok(ev)
        assert ev["fstype"] == "tmpfs" and ev["source"] == "tmpfs-x"
        # The same mount as the host sees it, in the mirror.
        w.expect(event="attach", guest="host", path="/container/c1/tmp/x", source="tmpfs-x")
        sandbox.mm("umount", "c1", "/tmp/x", check=True)
        gone = w.expect(event="detach", guest="c1", path="/tmp/x")
        assert gone["mount_id"] == ev["mount_id"] and gone["source"] == "tmpfs-x"
        w.expect(event="detach", guest="host", path="/container/c1/tmp/x")
        assert w.interrupt() == 130
        assert "Traceback" not in "".join(w.err)
        assert w.err[-1].strip().endswith("interrupted"), w.err
    finally:
        w.close()


def test_host_mount_arrives_in_mirror(sandbox, path):
    if sandbox.propagation == "private":
        sandbox.sh("mount --make-rshared /")      # mirror+host needs a shared host mount
    sandbox.mm("create", "c1", "--propagation", "mirror+host", check=True)
    w = Watch(sandbox, path)
    try:
        sandbox.sh("mkdir -p /srv/h && mount -t tmpfs host-h /srv/h")
        w.expect(event="attach", guest="host", path="/srv/h", source="host-h")
        w.expect(event="attach", guest="host", path="/container/c1/srv/h", source="host-h")
        w.expect(event="attach", guest="c1", path="/srv/h", source="host-h")
        sandbox.sh("umount /srv/h")
        w.expect(event="detach", guest="c1", path="/srv/h")
        w.expect(event="detach", guest="host", path="/srv/h")
    finally:
        w.close()


def test_move_on_the_host(sandbox, path):
    # A move needs a private parent (moving a mount beneath a shared one is refused).
    sandbox.sh("mkdir -p /srv/p && mount -t tmpfs p /srv/p && mount --make-private /srv/p && "
               "mkdir /srv/p/a /srv/p/b")
    w = Watch(sandbox, path)
    try:
        sandbox.sh("mount -t tmpfs mover /srv/p/a")
        ev = w.expect(event="attach", guest="host", path="/srv/p/a")
        sandbox.sh("mount --move /srv/p/a /srv/p/b")
        mv = w.expect(event="move", guest="host", path="/srv/p/b")
        assert mv["mount_id"] == ev["mount_id"] and mv["old_path"] == "/srv/p/a"
        assert mv["source"] == "mover"
    finally:
        w.close()


def test_guest_created_after_start(sandbox, path):
    w = Watch(sandbox, path, "--timeout", "120")
    try:
        assert "0 guest(s)" in w.err[0]
        sandbox.mm("create", "late", check=True)
        w.expect(event="attach", guest="host", path="/container/late")
        sandbox.sh("mkdir -p /tmp/y")
        # Guests are looked for every 0.5 s: mount until the watch has taken the new one in.
        deadline = time.monotonic() + 20
        while True:
            sandbox.mm("mount", "late", "tmpfs-y", "/tmp/y", "-t", "tmpfs", check=True)
            try:
                w.expect(timeout=2, event="attach", guest="late", path="/tmp/y")
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                sandbox.mm("umount", "late", "/tmp/y", check=True)
        sandbox.mm("destroy", "late", check=True)
        w.expect(event="detach", guest="host", path="/container/late")
        # The watch let the destroyed guest's namespace go (it held none for long).
        assert w.proc.poll() is None
    finally:
        w.close()


def test_starts_within_a_second_and_stops_on_count(sandbox, path):
    sandbox.mm("create", "c1", check=True)
    w = Watch(sandbox, path, "--count", "1")
    try:
        # Banner = sources open and marked; measured from the launch, nsenter and Python's
        # start included (generous: the machine is shared).
        assert w.started_in < 5, w.started_in
        sandbox.sh("mkdir -p /srv/c && mount -t tmpfs counted /srv/c")
        w.expect(event="attach", path="/srv/c")
        assert w.proc.wait(timeout=30) == 0
    finally:
        w.close()


def test_bad_flags(sandbox):
    r = sandbox.mm("watch", "--mounts", "--count", "0")
    assert r.returncode == 2 and "--count" in r.stderr
    r = sandbox.mm("watch", "--mounts", "--device", "7:0")
    assert r.returncode == 2 and "--device" in r.stderr


SOURCE_PROBE = r"""
import json, select, subprocess, time
from mirrormount.kernel.mntevents import FanotifySource
src = FanotifySource("held", "/srv/held/ns")

def inside(script):
    subprocess.run(["nsenter", "--mount=/srv/held/ns", "--", "sh", "-c", script], check=True)

def wait_one():
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        select.select([src.fd], [], [], 0.5)
        got = [e.to_json() for e in src.read()]
        if got:
            return got
    return []

inside("mkdir -p /tmp/f && mount -t tmpfs in-held-f /tmp/f")
events = wait_one()
inside("umount /tmp/f")
events += wait_one()
src.close()
print(json.dumps(events))
"""


def test_fanotify_source_describes_another_namespace(sandbox):
    """The fanotify path for a namespace listmount/statmount can read by its id (one made by
    unshare; a guest's cannot be read on 6.18, so `watch --mounts` polls those): attach and
    detach with the path as that namespace sees it."""
    cmd = ("unshare --mount=/srv/held/ns --propagation private "
           "sh -c 'mount -t tmpfs in-held /tmp'")
    sandbox.sh("mkdir -p /srv/held && mount -t tmpfs held /srv/held && mount --make-private "
               "/srv/held && touch /srv/held/ns && n=$(nproc); i=0; "
               f"until taskset -c $((i % n)) {cmd} 2>/dev/null; do i=$((i + 1)); "
               f"[ $i -lt $((4 * n)) ] || {{ {cmd}; exit 1; }}; done")
    out = sandbox.run([sys.executable, "-c", SOURCE_PROBE], check=True).stdout
    events = json.loads(out)
    assert [(e["event"], e["path"], e["source"], e["fstype"]) for e in events] == [
        ("attach", "/tmp/f", "in-held-f", "tmpfs"), ("detach", "/tmp/f", "in-held-f", "tmpfs")]
    assert events[0]["mount_id"] == events[1]["mount_id"]

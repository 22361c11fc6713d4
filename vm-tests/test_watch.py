"""Issue 3: `mirrormount watch` reports block-device events with who still uses the device.

Designed around what this kernel really sends for loop devices (no udevd, so the watch listens
to kernel uevents; measured with pyudev):
- `losetup -d` while a guest has the filesystem mounted sends nothing: the kernel only sets
  autoclear. The next event (here a resize, `losetup -c`) shows the pending detach, and the
  last unmount clears the device, which sends a change (the device is then unbound).
- A hot-unplug sends `remove` while the filesystem is still mounted. Loop devices cannot be
  unplugged, so that test asks the kernel to send the remove uevent itself (writing "remove"
  to the device's sysfs uevent file, as `udevadm trigger --action=remove` does). That also
  marks the device's kobject "remove already announced", which lasts until the device is
  deleted, so the test uses a loop device of its own (LOOP_CTL_ADD) and deletes it afterwards.

The last test runs a real udevd inside the sandbox, to see the udev side: ID_FS_UUID and
ID_FS_LABEL in reports, and the watch on udev's own event stream.

Loop devices are global to the machine: always detached (and the own one deleted) in finally.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import OwnLoops, q, wait_for

GUEST_NS = "/run/mirrormount/c1/ns/mnt"


def majmin(dev):
    rdev = os.stat(dev).st_rdev
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def make_ext4(sb, dev=None):
    """ext4 on a loop device; attach to `dev`, or to the first free one. Returns the node."""
    attach = f"losetup {q(dev)} /tmp/disk.img && echo {q(dev)}" if dev \
        else "losetup --find --show /tmp/disk.img"
    out = sb.sh(f"truncate -s 16M /tmp/disk.img && mkfs.ext4 -q /tmp/disk.img && {attach}")
    return out.stdout.strip()


@pytest.fixture
def free_loop():
    """Collects the loop devices a test attaches (`free_loop.attached(dev)`); detaches them
    afterwards, whatever happened, even if the test process is killed (OwnLoops' guardian).
    (If one is still mounted, detaching only sets autoclear: it goes with the sandbox.)"""
    own = OwnLoops()
    try:
        yield own
    finally:
        own.close()


@pytest.fixture
def own_loop():
    """A loop device made for this test alone (LOOP_CTL_ADD) and deleted at the end.
    Request it before `sandbox`, so it is torn down after the sandbox (and with it every
    mount of the device) is gone."""
    own = OwnLoops(200, 1000)
    try:
        yield own.add()
    finally:
        own.close()


class Watch:
    """`mirrormount watch` running inside the sandbox, read line by line."""

    def __init__(self, sb, *args: str, source: str = "kernel uevents") -> None:
        self.sb = sb
        argv = " ".join(q(a) for a in (sys.executable, "-m", "mirrormount", "watch", *args))
        self.proc = sb.popen(f"echo $$; exec {argv}")
        self.pid = int(self.proc.stdout.readline())        # its pid inside the sandbox
        ready = self.proc.stderr.readline()
        assert "watching block devices" in ready, ready + self.proc.stderr.read()
        assert source in ready, ready          # which stream it listens to

    def line(self) -> str:
        text = self.proc.stdout.readline()
        assert text, f"watch ended early: {self.proc.stderr.read()}"
        return text

    def event(self) -> dict:
        return json.loads(self.line())

    def signal(self, name: str) -> None:
        self.sb.sh(f"kill -{name} {self.pid}")

    def finish(self) -> tuple[int, str, str]:
        """Wait for the end; (exit status, rest of stdout, stderr)."""
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.sb.sh(f"kill -9 {self.pid}", check=False)
            self.proc.communicate(timeout=30)


def host_camper(sb, path):
    p = sb.popen(f"cd {q(path)} && echo $$ && exec sleep 300")
    return p, int(p.stdout.readline())


def guest_camper(sb, path):
    p = sb.popen(f"nsenter --mount={GUEST_NS} -- /bin/sh -c "
                 f"{q(f'cd {q(path)} && echo $$ && exec sleep 300')}")
    return p, int(p.stdout.readline())


def end(sb, proc, pid):
    sb.sh(f"kill {pid}", check=False)
    proc.communicate(timeout=10)


def test_watch_reports_pending_detach_then_detach_of_a_guest_mounted_loop(sandbox, free_loop):
    sb = sandbox
    dev = make_ext4(sb)
    free_loop.attached(dev)
    assert sb.mm("create", "c1").returncode == 0
    sb.sh("mkdir -p /mnt/x")
    r = sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4")
    assert r.returncode == 0, r.stderr
    camp, camp_pid = host_camper(sb, "/container/c1/mnt/x")
    watch = Watch(sb, "--json", "--device", dev, "--count", "2", "--timeout", "60")
    try:
        # The admin "removes" the device while the guest still uses it: the kernel defers
        # that and sends nothing. The next event (a resize) carries the news.
        sb.sh(f"losetup -d {dev} && truncate -s 32M /tmp/disk.img && losetup -c {dev}")
        ev = watch.event()
        assert (ev["action"], ev["what"]) == ("change", "resized"), ev
        assert ev["removal_pending"] is True
        assert ev["device"]["majmin"] == majmin(dev) and ev["device"]["devnode"] == dev
        assert ev["device"]["fstype"] == "ext4"
        assert ev["device"]["backing_file"] == "/tmp/disk.img"
        # no udevd in this sandbox (its /run is fresh): no udev record, no ID_* keys
        assert ev["device"]["udev"] is False, ev["device"]
        assert (ev["device"]["ID_FS_UUID"], ev["device"]["ID_FS_LABEL"]) == (None, None)
        assert ev["in_use"] is True and ev["guests"] == ["c1"]
        assert {c["guest"] for c in ev["copies"]} >= {"c1"}
        [pin] = [p for p in ev["pins"] if p["pid"] == camp_pid]
        assert (pin["how"], pin["path"]) == ("cwd", "/container/c1/mnt/x")

        # Once the guest lets go, the kernel clears the device: that is the real removal.
        end(sb, camp, camp_pid)
        r = sb.mm("umount", "c1", "/mnt/x")
        assert r.returncode == 0, r.stderr
        ev = watch.event()
        assert (ev["action"], ev["what"]) == ("change", "detached"), ev
        assert ev["in_use"] is False and ev["guests"] == [] and ev["removal_pending"] is False

        code, rest, err = watch.finish()                  # --count 2: done
        assert code == 0 and rest == "" and "Traceback" not in err, err
    finally:
        watch.kill()


def test_watch_reports_hot_removal_of_a_device_a_guest_still_uses(own_loop, sandbox):
    sb, dev = sandbox, own_loop
    make_ext4(sb, dev)
    assert sb.mm("create", "c1").returncode == 0
    sb.sh("mkdir -p /mnt/x")
    r = sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4")
    assert r.returncode == 0, r.stderr
    camp, camp_pid = guest_camper(sb, "/mnt/x")
    watch = Watch(sb, "--json", "--device", dev, "--timeout", "60")
    try:
        sb.sh(f"echo remove > /sys/block/{os.path.basename(dev)}/uevent")
        ev = watch.event()
        assert (ev["action"], ev["what"]) == ("remove", "removed"), ev
        assert ev["device"]["devnode"] == dev and ev["device"]["majmin"] == majmin(dev)
        assert ev["in_use"] is True and ev["guests"] == ["c1"]
        [pin] = [p for p in ev["pins"] if p["pid"] == camp_pid]
        assert (pin["how"], pin["guest"], pin["path"]) == ("cwd", "c1", "/mnt/x")

        # SIGTERM (no --count): a clean exit, status 0, no traceback.
        watch.signal("TERM")
        code, rest, err = watch.finish()
        assert code == 0 and rest == "" and "Traceback" not in err, err
    finally:
        watch.kill()
        end(sb, camp, camp_pid)
        sb.mm("umount", "c1", "/mnt/x")


def test_watch_human_lines_and_ctrl_c(sandbox, free_loop):
    sb = sandbox
    dev = make_ext4(sb)
    free_loop.attached(dev)
    watch = Watch(sb, "--device", majmin(dev), "--timeout", "60")
    try:
        sb.sh(f"truncate -s 32M /tmp/disk.img && losetup -c {dev}")
        line = watch.line()
        assert " resized " in line and f"{dev} ({majmin(dev)}" in line, line
        assert line.rstrip().endswith("not mounted anywhere"), line
        watch.signal("INT")                                # what Ctrl-C sends
        code, rest, err = watch.finish()
        assert code == 0 and rest == "" and "Traceback" not in err, err
    finally:
        watch.kill()


def test_watch_stops_at_timeout_and_rejects_bad_options(sandbox):
    sb = sandbox
    # a watch that ignored --timeout would hit sb.mm's own 60 s timeout and fail
    r = sb.mm("watch", "--timeout", "0.5", "--device", "7:4095")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert sb.mm("watch", "--count", "0").returncode == 2
    assert sb.mm("watch", "--device", "/etc/passwd").returncode == 2
    assert sb.mm("watch", "--device", "/no/such").returncode == 2


# ----------------------------------------------------------------------------- with udevd
@pytest.fixture(scope="session")
def udevd_files(request):
    """(systemd-udevd binary, rules dir or None): the machine's own when the Debian package
    udev is installed; otherwise unpacked from that package into pytest's cache, which the
    sandboxes see. Never installed here: installing starts udevd machine-wide and replays
    every device's add event."""
    if os.path.exists("/lib/systemd/systemd-udevd"):
        return "/lib/systemd/systemd-udevd", None
    cache = request.config.cache.mkdir("mirrormount-udev")
    root = cache / "root"
    if not (root / "bin/udevadm").exists():
        debs = sorted(cache.glob("udev_*.deb"))
        if not debs:
            get = ["apt-get", "download", "udev"]
            r = subprocess.run(get, cwd=cache, capture_output=True, text=True)
            if r.returncode != 0:   # no package lists on a fresh machine
                subprocess.run(["apt-get", "update"], capture_output=True, check=True)
                r = subprocess.run(get, cwd=cache, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            debs = sorted(cache.glob("udev_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(root)], check=True)
    return str(root / "bin/udevadm"), str(root / "lib/udev")


def start_udevd(sb, files, dev):
    """udevd inside the sandbox, writing only there: /dev becomes a private tmpfs holding
    the nodes the test needs (udevd sets modes and adds /dev/disk links), /run is the
    sandbox's already. Returns (Popen, pid inside the sandbox)."""
    binary, rules = files
    n = dev.removeprefix("/dev/loop")
    sb.sh("mount -t tmpfs test-dev /dev && mknod -m 666 /dev/null c 1 3 && "
          "mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 && "
          f"mknod -m 660 {dev} b 7 {n} && mkdir -p /run/udev")
    if rules:
        sb.sh(f"mount --bind {q(rules)} /usr/lib/udev")
    # udevadm acts as udevd when called by that name; run in the foreground, stopped by pid.
    p = sb.popen(f"ln -sf {q(binary)} /tmp/systemd-udevd && echo $$ && "
                 "exec /tmp/systemd-udevd")
    pid = int(p.stdout.readline())
    assert wait_for(lambda: sb.sh("test -S /run/udev/control", check=False).returncode == 0), \
        p.stderr.read() if p.poll() is not None else "udevd did not start"
    return p, pid


def test_with_udevd_reports_carry_uuid_and_label(sandbox, free_loop, udevd_files):
    sb = sandbox
    out = sb.sh("truncate -s 16M /tmp/disk.img && mkfs.ext4 -q -L mm-test /tmp/disk.img && "
                "blkid -s UUID -o value /tmp/disk.img && losetup --find --show /tmp/disk.img")
    uuid, dev = out.stdout.split()
    free_loop.attached(dev)
    udevd, udevd_pid = start_udevd(sb, udevd_files, dev)
    try:
        assert sb.mm("create", "c1").returncode == 0
        sb.sh("mkdir -p /mnt/x")
        assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0

        watch = Watch(sb, "--json", "--device", dev, "--count", "1", "--timeout", "60",
                      source="udev events")
        try:
            # udevd hears the kernel's change, probes the filesystem, then announces it.
            sb.sh(f"truncate -s 32M /tmp/disk.img && losetup -c {dev}")
            ev = watch.event()
            assert ev["what"] == "resized" and ev["guests"] == ["c1"], ev
            d = ev["device"]
            assert d["udev"] is True, d
            assert (d["ID_FS_UUID"], d["ID_FS_LABEL"]) == (uuid, "mm-test")
            code, _, err = watch.finish()
            assert code == 0 and "Traceback" not in err, err
        finally:
            watch.kill()

        d = sb.mm("busy", dev, "--json").json["device"]
        assert (d["ID_FS_UUID"], d["ID_FS_LABEL"], d["udev"]) == (uuid, "mm-test", True)
        assert sb.mm("umount", "c1", "/mnt/x").returncode == 0
    finally:
        sb.sh(f"kill {udevd_pid}", check=False)
        udevd.communicate(timeout=10)

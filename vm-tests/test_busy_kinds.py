"""Issue 9 part 1: pin kinds the finder used to miss (it said "not busy", exit 0, while umount
said EBUSY), pins it used to invent, advice that did not apply, and an umount or destroy that
succeeded while a copy kept the filesystem alive. Each kind is made here on a loop device of
this module's own (numbers 6000-6999) and found, or not found, with the right pid:

  1. a process holding a block device node open, the device not mounted (fd, by st_rdev)
  2. btrfs: a loop device's backing file and a swap file in a subvolume (anonymous st_dev),
     and `busy /dev/loopN` on the mounted btrfs device listing its copies and an overlay on it
  3. a binfmt_misc entry with flag F holding its interpreter (binfmt)
  4. a fanotify mount mark with an unread event (fanotify)
  5. an io_uring registered file whose fd was closed (io_uring)
  6. a stale /var/lib/nfs/etab with no nfsd: not a pin
  7. a loop device held as swap after `losetup -d` set autoclear: the hint says swapoff
  8. umount and destroy that succeed while another namespace or a camper keeps the
     filesystem: a warning on stderr naming the holder, exit 0, and `left` in the JSON

fanotify and io_uring need syscalls Python does not wrap: vm-tests/pinmakers.py makes them.
binfmt_misc entries are global to the machine: the one made here has a unique name and magic
and is removed in a `finally`, before the sandbox and the loop devices go.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from conftest import OwnLoops, q, wait_for
import test_busy
from test_busy import X, busy, kill, ns_label, pins, start

# test_busy's fixtures, shared: long-running campers, and swaps turned off before the sandbox
campers = test_busy.campers
swaps = test_busy.swaps

PINMAKERS = Path(__file__).resolve().parent / "pinmakers.py"


@pytest.fixture
def loops():
    """make(sb, image) -> /dev/loopN of this module's own; request before `sandbox`. Torn down
    last made first: a loop device backed by a file on another one's filesystem goes first."""
    own = OwnLoops(6000, 7000)

    def make(sb, image: str) -> str:
        dev = own.add()
        sb.sh(f"losetup {dev} {q(image)}")
        return dev

    try:
        yield make
    finally:
        own.made.reverse()
        own.close()


def py(sb) -> str:
    return sb.env["PATH"].split(":")[0] + "/python"


def image(sb, size: str = "64M") -> str:
    path = f"/tmp/kinds-{os.getpid()}-{random.randrange(1 << 30)}.img"
    sb.sh(f"truncate -s {size} {path}")
    return path


def guest_fs(sb, loops, fstype: str = "ext4", name: str = "c1") -> str:
    """Guest NAME (own pid namespace) with a FSTYPE filesystem on a fresh loop device at
    /mnt/x; returns the device."""
    r = sb.mm("create", "--ns", "pid", name)
    assert r.returncode == 0, r.stderr
    img = image(sb, "160M" if fstype == "btrfs" else "32M")
    sb.sh(f"mkfs.{fstype} -q {img}" + (" >/dev/null" if fstype == "btrfs" else ""))
    dev = loops(sb, img)
    sb.sh(f"mkdir -p /container/{name}/mnt/x")
    r = sb.mm("mount", name, dev, "/mnt/x", "-t", fstype)
    assert r.returncode == 0, r.stderr
    return dev


def majmin(dev: str) -> str:
    st = os.stat(dev)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


# ----------------------------------------------------------------------------- 1. device nodes
def test_an_open_device_node_keeps_an_unmounted_device_busy(loops, sandbox, campers):
    sb = sandbox
    dev = loops(sb, image(sb, "4M"))
    holder = start(sb, campers, f"exec 3<{dev}; cd /; echo $$; exec sleep 300")
    decoy = start(sb, campers, "exec 3</dev/null; cd /; echo $$; exec sleep 300")
    for target in (dev, majmin(dev)):
        js = busy(sb, target, code=3)
        assert [(p["how"], p["pid"], p["path"], p["comm"]) for p in js["pins"]] == \
            [("fd", holder, dev, "sleep")], js["pins"]
        assert js["copies"] == []
        assert not pins(js, pid=decoy)
    text = sb.mm("busy", dev).stdout
    assert f"host process {holder} (sleep, user root) holds {dev} open" in text
    kill(sb, holder)
    assert busy(sb, dev, code=0)["pins"] == []


# ----------------------------------------------------------------------------- 2. btrfs
def test_btrfs_subvolumes_placed_by_mount_id(loops, sandbox, campers, swaps):
    sb = sandbox
    dev = guest_fs(sb, loops, "btrfs")
    sb.sh(f"btrfs -q subvolume create {X}/sv >/dev/null && mkdir {X}/sv/d {X}/sv/lower "
          f"{X}/up {X}/work && echo data > {X}/sv/lower/f")
    # the subvolume's files have an st_dev of their own, not the one mountinfo shows
    st_sv = sb.sh(f"stat -c %d {X}/sv/d").stdout.strip()
    st_top = sb.sh(f"stat -c %d {X}").stdout.strip()
    assert st_sv != st_top
    sb.sh(f"truncate -s 1M {X}/sv/inner.img")
    inner = loops(sb, f"{X}/sv/inner.img")
    sb.sh(f"btrfs filesystem mkswapfile -s 16m {X}/sv/swapfile >/dev/null && "
          f"swapon {X}/sv/swapfile")
    swaps.append(("host", f"{X}/sv/swapfile"))
    cwd = start(sb, campers, f"cd {X}/sv/d && echo $$ && exec sleep 300")
    host_ns = ns_label(sb)

    js = busy(sb, "c1:/mnt/x", code=3)
    got = {(p["how"], p["pid"], p["path"], p["namespace"]) for p in js["pins"]}
    inner_img = sb.sh(f"cat /sys/block/{inner[5:]}/loop/backing_file").stdout.strip()
    assert ("cwd", cwd, f"{X}/sv/d", host_ns) in got, got
    assert ("swap", None, f"{X}/sv/swapfile", host_ns) in got, got
    assert ("loop", None, inner_img, host_ns) in got, got
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3 and f"backs loop device {inner}" in r.stderr, r.stderr

    # The btrfs block device as a whole: every mount of its filesystem is a copy, an overlay
    # with a layer on it too; the same pins.
    sb.sh(f"mkdir -p /mnt/ov && mount -t overlay ov -o lowerdir={X}/sv/lower,"
          f"upperdir={X}/up,workdir={X}/work /mnt/ov")
    for target in (dev, majmin(dev)):
        js = busy(sb, target, code=3)
        copies = {(c["guest"], c["path"]) for c in js["copies"]}
        assert {("c1", "/mnt/x"), ("host", X), ("host", "/mnt/ov")} <= copies, copies
        got = {(p["how"], p["pid"], p["path"]) for p in js["pins"]}
        assert {("cwd", cwd, f"{X}/sv/d"), ("swap", None, f"{X}/sv/swapfile"),
                ("loop", None, inner_img)} <= got, got
    sb.sh("umount /mnt/ov")
    sb.sh(f"swapoff {X}/sv/swapfile && losetup -d {inner}")
    kill(sb, cwd)
    assert wait_for(lambda: not os.path.exists(f"/sys/block/{inner[5:]}/loop/backing_file"))
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []


# ----------------------------------------------------------------------------- 3. binfmt_misc
def test_binfmt_misc_F_entry_holds_its_interpreter(loops, sandbox):
    sb = sandbox
    guest_fs(sb, loops)
    sb.sh(f"cp /bin/true {X}/interp")
    root = "/proc/sys/fs/binfmt_misc"
    sb.sh(f"mountpoint -q {root} || mount -t binfmt_misc binfmt_misc {root}")
    name = f"mmkinds{os.getpid()}x{random.randrange(1 << 20)}"
    magic = f"MMKINDS{random.randrange(1 << 40):x}"
    try:
        sb.sh(f"printf ':{name}:M::{magic}::{X}/interp:F' > {root}/register")
        js = busy(sb, "c1:/mnt/x", code=3)
        assert [(p["how"], p["pid"], p["path"]) for p in js["pins"]] == \
            [("binfmt", None, f"{X}/interp")], js["pins"]
        r = sb.mm("umount", "c1", "/mnt/x")
        assert r.returncode == 3
        assert f"echo -1 > {root}/{name}" in r.stderr, r.stderr
        # without F the kernel opens the interpreter only when it runs something
        sb.sh(f"echo -1 > {root}/{name} && printf ':{name}:M::{magic}::{X}/interp:' "
              f"> {root}/register")
        assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []
    finally:
        # global to the machine: it must go before the sandbox (and the file system) do
        sb.sh(f"[ ! -e {root}/{name} ] || echo -1 > {root}/{name}", check=False)
    assert not os.path.exists(f"{root}/{name}")


# ----------------------------------------------------------------------------- 4, 5. fdinfo
def test_fanotify_mark_with_unread_events(loops, sandbox, campers):
    sb = sandbox
    guest_fs(sb, loops)
    sb.sh(f"echo data > {X}/file")
    pid = start(sb, campers, f"cd / && exec {py(sb)} {PINMAKERS} fanotify {X} {X}/file")
    js = busy(sb, "c1:/mnt/x", code=3)
    assert [(p["how"], p["pid"], p["path"], p["comm"]) for p in js["pins"]] == \
        [("fanotify", pid, X, "python")], js["pins"]
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3 and f"host process {pid}" in r.stderr and "fanotify" in r.stderr
    kill(sb, pid)
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []


def test_io_uring_registered_file_after_close(loops, sandbox, campers):
    sb = sandbox
    guest_fs(sb, loops)
    sb.sh(f"echo data > {X}/file && echo data > {X}/gfile")
    host = start(sb, campers, f"cd / && exec {py(sb)} {PINMAKERS} io_uring {X}/file")
    guest = start(sb, campers, f"cd / && exec {py(sb)} {PINMAKERS} io_uring /mnt/x/gfile",
                  guest=True)
    js = busy(sb, "c1:/mnt/x", code=3)
    got = {(p["how"], p["guest_pid"], p["guest"], p["path"]) for p in js["pins"]}
    assert got == {("io_uring", host, "host", f"{X}/file"),
                   ("io_uring", guest, "c1", "/mnt/x/gfile")}, js["pins"]
    assert not pins(js, "fd"), "the fds were closed: only the rings hold the files"
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 3 and "io_uring" in r.stderr
    h_guest = next(p["pid"] for p in js["pins"] if p["guest"] == "c1")
    kill(sb, host, h_guest)
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []


# ----------------------------------------------------------------------------- 6. stale etab
def test_a_stale_etab_without_nfsd_is_not_a_pin(loops, sandbox):
    sb = sandbox
    guest_fs(sb, loops)
    sb.sh(f"mkdir -p /var/lib/nfs && printf '{X}\\t*(rw,sync,no_subtree_check)\\n' "
          "> /var/lib/nfs/etab")
    assert not os.path.exists("/proc/fs/nfsd/exports")      # no nfsd on this kernel
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 0 and not r.stderr, r.stderr


# ----------------------------------------------------------------------------- 7. loop hints
def test_loop_hint_reads_the_loop_state(loops, sandbox, swaps):
    sb = sandbox
    guest_fs(sb, loops)
    sb.sh(f"truncate -s 16M {X}/swap.img")
    inner = loops(sb, f"{X}/swap.img")
    sb.sh(f"mkswap {inner} >/dev/null && swapon {inner}")
    swaps.append(("host", inner))
    text = sb.mm("busy", "c1:/mnt/x")
    assert text.returncode == 3
    assert f"backs loop device {inner} (swapoff {inner}; then losetup -d {inner})" \
        in text.stdout, text.stdout
    sb.sh(f"losetup -d {inner}")         # in use: the kernel only sets autoclear
    assert Path(f"/sys/block/{inner[5:]}/loop/autoclear").read_text().strip() == "1"
    text = sb.mm("busy", "c1:/mnt/x")
    assert text.returncode == 3
    assert f"losetup -d was already asked for, and waits for its users: swapoff {inner}" \
        in text.stdout, text.stdout
    assert f"(losetup -d {inner})" not in text.stdout
    sb.sh(f"swapoff {inner}")
    assert wait_for(lambda: not os.path.exists(f"/sys/block/{inner[5:]}/loop/backing_file"))
    assert busy(sb, "c1:/mnt/x", code=0)["pins"] == []


# ----------------------------------------------------------------------------- 8. residue
def test_umount_warns_about_a_copy_left_elsewhere(loops, sandbox, campers):
    sb = sandbox
    dev = guest_fs(sb, loops)
    private = start(sb, campers, "exec unshare -m --propagation private "
                                 "sh -c 'echo $$; exec sleep 300'")
    ns = ns_label(sb, f"/proc/{private}/ns/mnt")
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("mirrormount: warning: unmounted /mnt/x in c1, but the filesystem is "
                               "still held"), r.stderr
    assert f"kept by host process {private} (sleep" in r.stderr and ns in r.stderr, r.stderr
    assert X not in sb.mountpoints()

    # The same in JSON: mount the device again, a second private copy, then --json.
    sb.sh(f"mkdir -p {X}")
    assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0
    second = start(sb, campers, "exec unshare -m --propagation private "
                                "sh -c 'echo $$; exec sleep 300'")
    r = sb.mm("--json", "umount", "c1", "/mnt/x")
    assert r.returncode == 0 and not r.stderr, r.stderr
    left = r.json["left"]
    assert {(x["pid"], x["comm"], x["mnt_ns"]) for x in left} >= \
        {(second, "sleep", ns_label(sb, f"/proc/{second}/ns/mnt"))}, left
    assert r.json["guest"] == "c1" and r.json["target"] == "/mnt/x"

    # Nothing left: no warning, and an empty list.
    kill(sb, private, second)
    assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0
    r = sb.mm("umount", "c1", "/mnt/x")
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert sb.mm("mount", "c1", dev, "/mnt/x", "-t", "ext4").returncode == 0
    r = sb.mm("--json", "umount", "c1", "/mnt/x")
    assert r.returncode == 0 and r.json["left"] == [], r.stdout


def test_a_bind_of_a_filesystem_mounted_elsewhere_leaves_no_residue(sandbox, campers):
    """Unmounting a bind whose filesystem stays mounted where it is meant to be (the host's
    /, another guest's bind of the same directory) is no leak: no warning, `left` empty,
    even while processes hold files there and a private namespace keeps a copy of the
    other guest's bind."""
    sb = sandbox
    sb.sh("mkdir -p /srv/data && mount -t tmpfs data /srv/data && echo x > /srv/data/f")
    for g in ("c1", "c2"):
        assert sb.mm("create", g).returncode == 0
        r = sb.mm("mount", g, "/srv/data", "/mnt/d", "--bind", "--mkdir")
        assert r.returncode == 0, r.stderr
    start(sb, campers, "exec 3</srv/data/f; echo $$; exec sleep 300")
    start(sb, campers, "exec unshare -m --propagation private sh -c 'echo $$; exec sleep 300'")
    r = sb.mm("umount", "c1", "/mnt/d")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    r = sb.mm("--json", "umount", "c2", "/mnt/d")
    assert r.returncode == 0 and not r.stderr and r.json["left"] == [], (r.stdout, r.stderr)
    assert sb.mm("mount", "c1", "/etc", "/mnt/e", "--bind", "--mkdir").returncode == 0
    r = sb.mm("umount", "c1", "/mnt/e")          # /etc: the sandbox's bind of the host's
    assert (r.returncode, r.stderr) == (0, ""), r.stderr


def test_destroy_reports_a_camper_in_the_mirror(loops, sandbox, campers):
    sb = sandbox
    guest_fs(sb, loops, name="c1")
    guest_fs(sb, loops, name="c2")
    one = start(sb, campers, f"cd {X} && echo $$ && exec sleep 300")
    two = start(sb, campers, "cd /container/c2/mnt/x && echo $$ && exec sleep 300")
    r = sb.mm("destroy", "c1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "destroyed c1"
    assert r.stderr.startswith("mirrormount: warning: destroyed c1, but its filesystem at /mnt/x is still "
                               "held"), r.stderr
    assert f"host process {one} (sleep" in r.stderr, r.stderr
    r = sb.mm("--json", "destroy", "c2")
    assert r.returncode == 0 and not r.stderr, r.stderr
    [row] = r.json
    assert row["name"] == "c2"
    assert [(x["pid"], x["comm"], x["guest_path"]) for x in row["left"]] == \
        [(two, "sleep", "/mnt/x")], row
    kill(sb, one, two)

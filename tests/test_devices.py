"""mirrormount.busy.devices (sysfs/udev identity) and the pure parts of mirrormount.busy.watch, on
fixture text. The sysfs trees are built under tmp_path from text captured on this kind of
machine (loop devices, a virtio disk, a SCSI stick); nothing here needs root or udevd, and
nothing depends on whether udevd runs here (the real udevd is in vm-tests/test_watch.py)."""
from __future__ import annotations

import json
import os

import pytest

from mirrormount.busy.devices import (describe_device, device_label, human_size, parse_flag,
                                 parse_majmin, parse_size, parse_text, parse_uevent,
                                 sysfs_facts, udevd_running)
from mirrormount.busy.watch import BlockEvent, classify, event_record, render_line

# Captured from /sys/block/loop0 with /tmp/img (64 MiB) attached and `losetup -d` pending.
LOOP0 = {
    "uevent": "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\nDISKSEQ=13\n",
    "size": "131072\n",
    "ro": "0\n",
    "loop/backing_file": "/tmp/img\n",
    "loop/autoclear": "1\n",
    "loop/offset": "0\n",
}
# A partition of it (losetup -P): loop facts live one level up.
LOOP0P1 = {
    "uevent": "MAJOR=259\nMINOR=0\nDEVNAME=loop0p1\nDEVTYPE=partition\nPARTN=1\n",
    "size": "2048\n",
    "ro": "1\n",
    "partition": "1\n",
}
# /sys/block/loop1 with nothing attached: no loop/ directory at all.
LOOP1 = {"uevent": "MAJOR=7\nMINOR=1\nDEVNAME=loop1\nDEVTYPE=disk\nDISKSEQ=2\n",
         "size": "0\n", "ro": "0\n"}
# A USB stick: SCSI pads model to 16 characters.
SDB = {"uevent": "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n", "size": "60555264\n",
       "ro": "0\n", "device/model": "Cruzer Blade    \n"}
# virtio-blk exposes its serial on the disk itself.
VDA = {"uevent": "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n", "size": "536870912\n",
       "ro": "0\n", "serial": "overlayblk\n"}


def write_tree(top, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def sysroot(tmp_path):
    """A /sys with /sys/dev/block/MAJ:MIN links, laid out like the kernel's."""
    devices = tmp_path / "devices"
    write_tree(devices / "virtual/block/loop0", LOOP0)
    write_tree(devices / "virtual/block/loop0/loop0p1", LOOP0P1)
    write_tree(devices / "virtual/block/loop1", LOOP1)
    write_tree(devices / "pci0000:00/usb1/host6/block/sdb", SDB)
    write_tree(devices / "pci0000:00/virtio1/block/vda", VDA)
    links = tmp_path / "dev/block"
    links.mkdir(parents=True)
    for majmin, rel in (("7:0", "virtual/block/loop0"),
                        ("259:0", "virtual/block/loop0/loop0p1"),
                        ("7:1", "virtual/block/loop1"),
                        ("8:16", "pci0000:00/usb1/host6/block/sdb"),
                        ("254:0", "pci0000:00/virtio1/block/vda")):
        os.symlink(f"../../devices/{rel}", links / majmin)
    return str(tmp_path)


# ----------------------------------------------------------------------------- parsers
def test_parse_majmin():
    assert parse_majmin("7:0") == (7, 0)
    assert parse_majmin(" 259:12\n") == (259, 12)
    for bad in ("7", "7:", ":0", "a:b", "/dev/loop0", "7:0:1", "-1:0"):
        with pytest.raises(ValueError):
            parse_majmin(bad)


def test_parse_size_counts_512_byte_sectors():
    assert parse_size("131072\n") == 64 << 20
    assert parse_size("0\n") == 0
    assert parse_size(None) is None
    assert parse_size("garbage") is None


def test_parse_flag_and_text():
    assert parse_flag("1\n") is True
    assert parse_flag("0\n") is False
    assert parse_flag(None) is None
    assert parse_flag("Y\n") is None
    assert parse_text("Cruzer Blade    \n") == "Cruzer Blade"
    assert parse_text("\n") is None
    assert parse_text(None) is None


def test_parse_uevent():
    assert parse_uevent(LOOP0["uevent"]) == {"MAJOR": "7", "MINOR": "0", "DEVNAME": "loop0",
                                              "DEVTYPE": "disk", "DISKSEQ": "13"}
    assert parse_uevent("") == {}
    assert parse_uevent("NOEQUALS\nA=b=c\n") == {"A": "b=c"}


@pytest.mark.parametrize("n, text", [(0, "0 B"), (512, "512 B"), (1536, "1.5 KiB"),
                                     (64 << 20, "64 MiB"), (256 << 30, "256 GiB"),
                                     (None, "?"), (3 << 50, "3 PiB"), (5 << 60, "5120 PiB")])
def test_human_size(n, text):
    assert human_size(n) == text


# ----------------------------------------------------------------------------- sysfs
def test_sysfs_facts_loop_with_detach_pending(sysroot):
    assert sysfs_facts(7, 0, sysroot) == {
        "devnode": "/dev/loop0", "size": 64 << 20, "readonly": False,
        "backing_file": "/tmp/img", "autoclear": True, "model": None, "serial": None}


def test_sysfs_facts_partition_takes_loop_facts_from_its_disk(sysroot):
    facts = sysfs_facts(259, 0, sysroot)
    assert facts["devnode"] == "/dev/loop0p1"
    assert facts["size"] == 1 << 20 and facts["readonly"] is True   # its own
    assert facts["backing_file"] == "/tmp/img"                       # its disk's


def test_sysfs_facts_unbound_loop_has_no_backing_file(sysroot):
    facts = sysfs_facts(7, 1, sysroot)
    assert facts["backing_file"] is None and facts["autoclear"] is None
    assert facts["size"] == 0


def test_sysfs_facts_model_and_serial(sysroot):
    assert sysfs_facts(8, 16, sysroot)["model"] == "Cruzer Blade"
    assert sysfs_facts(254, 0, sysroot)["serial"] == "overlayblk"


def test_sysfs_facts_unknown_device_is_all_none(sysroot):
    assert set(sysfs_facts(8, 99, sysroot).values()) == {None}


KEYS = {"devnode", "majmin", "fstype", "source", "anonymous", "size", "readonly",
        "backing_file", "autoclear", "model", "serial", "udev", "ID_SERIAL", "ID_MODEL",
        "ID_FS_UUID", "ID_FS_LABEL"}


def test_describe_device_block(sysroot):
    d = describe_device(7, 0, "ext4", "/dev/loop0", sys_root=sysroot, use_udev=False)
    assert set(d) == KEYS
    assert d["devnode"] == "/dev/loop0" and d["majmin"] == "7:0" and d["fstype"] == "ext4"
    assert d["backing_file"] == "/tmp/img" and d["anonymous"] is False
    assert d["udev"] is False and d["ID_FS_UUID"] is None
    json.dumps(d)  # goes straight into --json output


def test_describe_device_anonymous_is_named_from_its_source(sysroot):
    d = describe_device(0, 52, "tmpfs", "scratch", sys_root=sysroot, use_udev=False)
    assert set(d) == KEYS
    assert d["anonymous"] is True and d["devnode"] is None and d["source"] == "scratch"
    assert d["size"] is None
    assert device_label(d) == 'tmpfs "scratch" (0:52)'


def test_describe_device_gone_from_sysfs_keeps_the_mount_source(sysroot):
    # A yanked disk: mountinfo still names it, sysfs no longer has it.
    d = describe_device(8, 32, "vfat", "/dev/sdc1", sys_root=sysroot, use_udev=False)
    assert d["devnode"] == "/dev/sdc1" and d["size"] is None


def test_describe_device_real_machine_is_complete():
    """The real / device through sysfs and pyudev: every key, whatever runs on this machine.
    What udevd adds (ID_FS_UUID, ID_FS_LABEL) is proven against a real udevd in
    vm-tests/test_watch.py; what is reported without it, there too."""
    majmin = os.stat("/").st_dev
    major, minor = os.major(majmin), os.minor(majmin)
    d = describe_device(major, minor, "ext4", "/dev/root")
    assert set(d) == KEYS
    assert d["majmin"] == f"{major}:{minor}" and d["fstype"] == "ext4"
    assert isinstance(d["udev"], bool)
    json.dumps(d)


def fake_udev(monkeypatch, props, initialized):
    """udev_properties as libudev answers: without udevd a device has only the kernel's keys
    and is not initialized; with udevd its database record adds the ID_* keys."""
    import mirrormount.busy.devices as devices
    monkeypatch.setattr(devices, "udev_properties", lambda major, minor: (props, initialized))


KERNEL_ONLY = {"DEVNAME": "/dev/loop0", "MAJOR": "7", "MINOR": "0", "DEVTYPE": "disk"}


def test_describe_device_without_udevd_database(sysroot, monkeypatch):
    fake_udev(monkeypatch, KERNEL_ONLY, False)
    d = describe_device(7, 0, "ext4", "/dev/loop0", sys_root=sysroot)
    assert set(d) == KEYS and d["devnode"] == "/dev/loop0"
    assert d["udev"] is False
    assert [d[k] for k in ("ID_SERIAL", "ID_MODEL", "ID_FS_UUID", "ID_FS_LABEL")] == [None] * 4


def test_describe_device_with_udevd_database(sysroot, monkeypatch):
    fake_udev(monkeypatch, dict(KERNEL_ONLY, ID_FS_UUID="0b5e", ID_FS_LABEL="mm-test",
                                ID_FS_TYPE="ext4"), True)
    d = describe_device(7, 0, "ext4", "/dev/loop0", sys_root=sysroot)
    assert d["udev"] is True
    assert (d["ID_FS_UUID"], d["ID_FS_LABEL"]) == ("0b5e", "mm-test")
    assert d["ID_SERIAL"] is None and d["backing_file"] == "/tmp/img"


def test_describe_device_without_libudev(sysroot, monkeypatch):
    import mirrormount.busy.devices as devices
    monkeypatch.setattr(devices, "udev_properties", lambda major, minor: None)
    d = describe_device(7, 0, "ext4", "/dev/loop0", sys_root=sysroot)
    assert d["udev"] is False and d["ID_FS_UUID"] is None and d["devnode"] == "/dev/loop0"


def test_udevd_running_wants_a_socket(tmp_path):
    assert udevd_running(str(tmp_path / "missing")) is False
    plain = tmp_path / "control"
    plain.write_text("")
    assert udevd_running(str(plain)) is False


@pytest.mark.parametrize("device, label", [
    ({"devnode": "/dev/loop3", "majmin": "7:3", "fstype": "ext4", "size": 64 << 20,
      "backing_file": "/tmp/disk.img", "anonymous": False},
     "/dev/loop3 (7:3, ext4, 64 MiB, file /tmp/disk.img)"),
    ({"devnode": "/dev/sdb1", "majmin": "8:17", "fstype": "vfat", "size": None,
      "ID_FS_LABEL": "STICK", "ID_MODEL": "Cruzer_Blade", "anonymous": False},
     "/dev/sdb1 (8:17, vfat, label STICK, Cruzer_Blade)"),
    ({"devnode": None, "majmin": "0:40", "fstype": "overlay", "source": "overlay",
      "anonymous": True}, "overlay (0:40)"),
    ({"devnode": None, "majmin": "8:32"}, "block device (8:32)"),
])
def test_device_label(device, label):
    assert device_label(device) == label


# ----------------------------------------------------------------------------- watch events
# Properties as pyudev hands them over from the kernel's netlink messages (measured here).
RESIZE = {"ACTION": "change", "DEVPATH": "/devices/virtual/block/loop0", "SUBSYSTEM": "block",
          "RESIZE": "1", "DEVNAME": "/dev/loop0", "DEVTYPE": "disk", "DISKSEQ": "11",
          "SEQNUM": "4242", "MAJOR": "7", "MINOR": "0"}
CLEARED = {"ACTION": "change", "DEVPATH": "/devices/virtual/block/loop0", "SUBSYSTEM": "block",
           "DISK_MEDIA_CHANGE": "1", "DEVNAME": "/dev/loop0", "DEVTYPE": "disk",
           "SEQNUM": "4243", "MAJOR": "7", "MINOR": "0"}
REMOVED = {"ACTION": "remove", "DEVPATH": "/devices/pci0000:00/usb1/host6/block/sdb/sdb1",
           "SUBSYSTEM": "block", "DEVNAME": "sdb1", "DEVTYPE": "partition",
           "SEQNUM": "77", "MAJOR": "8", "MINOR": "17"}


def test_block_event_from_properties():
    e = BlockEvent.from_properties(REMOVED)
    assert e is not None
    assert (e.action, e.majmin, e.sys_name, e.devnode, e.seqnum) == \
        ("remove", "8:17", "sdb1", "/dev/sdb1", 77)
    assert BlockEvent.from_properties({"ACTION": "change", "DEVPATH": "/devices/x"}) is None


@pytest.mark.parametrize("action, props, bound, what", [
    ("remove", REMOVED, None, "removed"),
    ("add", {}, None, "added"),
    ("change", RESIZE, True, "resized"),
    ("change", CLEARED, False, "detached"),
    ("change", {}, False, "detached"),           # the plain change sent just before it
    ("change", CLEARED, None, "media-changed"),  # not a loop device
    ("change", {}, True, "changed"),             # attach
    ("offline", {}, None, "offline"),
])
def test_classify(action, props, bound, what):
    assert classify(action, props, bound) == what


BUSY = {"target": "7:0", "busy": True, "device": {"fstype": "ext4", "source": "/dev/loop0"},
        "copies": [{"namespace": "mnt:[4026532300]", "guest": "c1", "path": "/mnt/x",
                    "mount_id": 391},
                   {"namespace": "mnt:[4026531841]", "guest": "host",
                    "path": "/container/c1/mnt/x", "mount_id": 133}],
        "pins": [{"how": "cwd", "pid": 4242, "guest_pid": 4242, "comm": "bash",
                  "user": "admin", "guest": "host", "path": "/container/c1/mnt/x",
                  "namespace": "mnt:[4026531841]"},
                 {"how": "fd", "pid": 5000, "guest_pid": 7, "comm": "sqlite3",
                  "user": "root", "guest": "c1", "path": "/mnt/x/db",
                  "namespace": "mnt:[4026532300]"}],
        "uninspected": 1}
LOOP_DEVICE = {"devnode": "/dev/loop0", "majmin": "7:0", "fstype": "ext4", "size": 64 << 20,
               "backing_file": "/tmp/img", "autoclear": True, "anonymous": False}


def test_event_record_names_guests_and_pending_removal():
    e = BlockEvent.from_properties(RESIZE)
    rec = event_record(e, dict(LOOP_DEVICE), BUSY, now=0.0)
    assert rec["time"] == "1970-01-01T00:00:00.000Z"
    assert (rec["action"], rec["what"], rec["seqnum"]) == ("change", "resized", 4242)
    assert rec["removal_pending"] is True
    assert rec["guests"] == ["c1"] and rec["in_use"] and rec["busy"]
    assert rec["pins"] == BUSY["pins"] and rec["uninspected"] == 1
    assert json.loads(json.dumps(rec)) == rec


def test_event_record_unbound_loop_is_detached_and_not_pending():
    e = BlockEvent.from_properties(CLEARED)
    device = dict(LOOP_DEVICE, backing_file=None, autoclear=None, size=0)
    rec = event_record(e, device, {"busy": False, "copies": [], "pins": [], "uninspected": 0})
    assert rec["what"] == "detached" and rec["removal_pending"] is False
    assert rec["in_use"] is False and rec["guests"] == []


def test_render_line_explains_in_one_line():
    e = BlockEvent.from_properties(REMOVED)
    device = {"devnode": "/dev/sdb1", "majmin": "8:17", "fstype": "vfat", "anonymous": False}
    line = render_line(event_record(e, device, BUSY, now=3723.0))
    assert "\n" not in line
    assert line.startswith("01:02:03 removed")
    assert "/dev/sdb1 (8:17, vfat)" in line
    assert "still mounted in c1 at /mnt/x, the host at /container/c1/mnt/x" in line
    assert "host process 4242 (bash, user admin): cwd /container/c1/mnt/x" in line
    assert "process 7 in c1 (host pid 5000; sqlite3, user root): fd /mnt/x/db" in line
    assert "1 processes could not be inspected" in line


def test_render_line_not_in_use_and_errors():
    e = BlockEvent.from_properties(CLEARED)
    device = dict(LOOP_DEVICE, backing_file=None, autoclear=None, size=0)
    idle = event_record(e, device, {"busy": False, "copies": [], "pins": []}, now=0.0)
    assert render_line(idle).endswith("/dev/loop0 (7:0, ext4, 0 B): not mounted anywhere")
    failed = event_record(e, device, None, error="no such device: 7:0", now=0.0)
    assert render_line(failed).endswith("could not check who uses it: no such device: 7:0")

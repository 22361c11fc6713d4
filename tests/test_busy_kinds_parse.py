"""Issue 9 part 1, the pure side: the parsers of binfmt_misc entries, fanotify and io_uring
fdinfo and overlay layers; nfsd exports read from the kernel's table only; and the judge's
new pins (binfmt, fanotify, io_uring, open device nodes) and loop hints on the captured
scenario of tests/test_finder.py (guest c1's ext4 on 7:0 at /mnt/x, mirrored on the host).
"""
from __future__ import annotations

import os

import pytest

from mirrormount.busy import judge as judging
from mirrormount.busy.facts import (BinfmtEntry, Facts, FanotifyMark, LoopDevice, SwapEntry,
                                    parse_binfmt, parse_fanotify_fdinfo, parse_io_uring_fdinfo,
                                    read_facts)
from mirrormount.busy.finder import ProcRecord, Scan
from mirrormount.busy.judge import Judge, overlay_layers
from mirrormount.busy.report import describe_pin

from test_finder import HOST, M_HOST, StubWorld, guest_target, views


# ----------------------------------------------------------------------------- parsers
def test_parse_binfmt_entry():
    raw = ("enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: POCF\n"
           "offset 0\nmagic 7f454c46\nmask ffffffff\n")
    assert parse_binfmt("qemu-aarch64", raw) == BinfmtEntry(
        "qemu-aarch64", "/usr/bin/qemu-aarch64-static", "POCF", True)
    assert parse_binfmt("x", "disabled\ninterpreter /i\nflags: \nextension .x\n") == \
        BinfmtEntry("x", "/i", "", False)
    assert parse_binfmt("status", "enabled\n") is None


def test_parse_fanotify_fdinfo_marks():
    # fs/notify/fdinfo.c; sdev is the in-kernel dev_t: major << 20 | minor
    raw = ("pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n"
           "fanotify flags:1 event-flags:8000\n"
           "fanotify mnt_id:1b mflags:0 mask:20 ignored_mask:0\n"
           "fanotify ino:d sdev:700003 mflags:0 mask:20 ignored_mask:0 fhandle-bytes:8 "
           "fhandle-type:1 f_handle:0d000000\n"
           "fanotify sdev:800001 mflags:0 mask:20 ignored_mask:0\n")
    assert parse_fanotify_fdinfo(raw) == [
        FanotifyMark("mount", 0x1b, None, None),
        FanotifyMark("inode", None, os.makedev(7, 3), 13),
        FanotifyMark("sb", None, os.makedev(8, 1), None)]
    assert parse_fanotify_fdinfo("pos:\t0\n") == []


def test_parse_io_uring_fdinfo_files():
    raw = ("SqMask:\t0x3\nCachedCqTail:\t0\nSQEs:\t0\nCQEs:\t0\n"
           "UserFiles:\t3\n    0: /mnt/x/file\n    2: /mnt/my\\040dir/f\\134x\n"
           "UserBufs:\t0\nPollList:\n")
    assert parse_io_uring_fdinfo(raw) == ["/mnt/x/file", "/mnt/my dir/f\\x"]
    assert parse_io_uring_fdinfo("UserFiles:\t0\nUserBufs:\t0\n") == []


def test_overlay_layers_with_escapes():
    opts = (r"rw,lowerdir=/a/l1:/b/with\:colon,upperdir=/c/up\,comma,workdir=/c/work,"
            "redirect_dir=on")
    assert overlay_layers(opts) == ["/a/l1", "/b/with:colon", "/c/up,comma"]
    assert overlay_layers("rw,lowerdir+=/l1,lowerdir+=/l2,datadir+=/d") == ["/l1", "/l2", "/d"]
    assert overlay_layers("rw,size=10k") == []


# ----------------------------------------------------------------------------- nfsd
def test_nfsd_exports_only_from_the_kernel_table(tmp_path):
    proc = tmp_path / "proc"
    (proc / "sys" / "fs").mkdir(parents=True)
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    sysfs = tmp_path / "sys"
    (sysfs / "block").mkdir(parents=True)
    # A stale etab elsewhere is never read; the kernel's table is.
    assert read_facts(str(sysfs), str(proc)).exports == ()
    (proc / "fs" / "nfsd").mkdir(parents=True)
    (proc / "fs" / "nfsd" / "exports").write_text(
        "# Version 1.1\n/srv/nfs\t*(rw,root_squash,sync,wdelay)\n")
    assert read_facts(str(sysfs), str(proc)).exports == ("/srv/nfs",)


def test_binfmt_entries_read_with_flag_F_only(tmp_path):
    proc = tmp_path / "proc"
    bm = proc / "sys" / "fs" / "binfmt_misc"
    bm.mkdir(parents=True)
    (proc / "swaps").write_text("Filename Type Size Used Priority\n")
    (bm / "status").write_text("enabled\n")
    (bm / "register").write_text("")
    (bm / "held").write_text("enabled\ninterpreter /mnt/x/interp\nflags: F\nmagic 4d4d\n")
    (bm / "lazy").write_text("enabled\ninterpreter /mnt/x/interp2\nflags: \nmagic 4d4e\n")
    facts = read_facts(str(tmp_path / "nosys"), str(proc))
    assert [b.name for b in facts.binfmts] == ["held"]
    assert "/mnt/x/interp" in facts.probes


# ----------------------------------------------------------------------------- the judge
@pytest.fixture
def make_judge(monkeypatch):
    monkeypatch.setattr(judging, "describe_device",
                        lambda ma, mi, fs, src: {"majmin": f"{ma}:{mi}", "fstype": fs})
    monkeypatch.setattr(judging, "block_holders", lambda ma, mi: [])

    def make(facts=Facts((), (), ()), scan=None, vs=None):
        return Judge(StubWorld(vs or views()), scan or Scan(), facts, full=False)
    return make


def _stub_proc(monkeypatch, *pids):
    monkeypatch.setattr(judging._ProcInfo, "get",
                        lambda self, pid: ("sleep", "root", pid, "host") if pid in pids
                        else None)


def test_binfmt_pin_placed_by_mount_id(make_judge):
    vs = views()
    dev = os.makedev(7, 0)
    vs[0].probes = {"/container/c1/mnt/x/interp": (dev, 12, M_HOST)}
    facts = Facts((), (), (), (BinfmtEntry("held", "/container/c1/mnt/x/interp", "F", True),))
    rep = make_judge(facts, vs=vs).report(guest_target())
    [pin] = [p for p in rep.pins if p.how == "binfmt"]
    assert (pin.path, pin.namespace, pin.pid) == ("/container/c1/mnt/x/interp",
                                                  f"mnt:[{HOST}]", None)
    assert "echo -1 > /proc/sys/fs/binfmt_misc/held" in describe_pin(pin)
    # the same path on another mount (another mount id) is not placed there
    vs[0].probes = {"/container/c1/mnt/x/interp": (dev, 12, 999999)}
    rep = make_judge(facts, vs=vs).report(guest_target())
    assert not [p for p in rep.pins if p.how == "binfmt"]


def test_fanotify_and_io_uring_pins_from_fdinfo(make_judge, monkeypatch):
    _stub_proc(monkeypatch, 41, 42)
    scan = Scan(anon_fds=[(41, "3", "fanotify"), (42, "4", "io_uring")],
                ns_of_pid={41: HOST, 42: HOST})
    fdinfo = {(41, "3"): f"fanotify mnt_id:{M_HOST:x} mflags:0 mask:20 ignored_mask:0\n",
              (42, "4"): "UserFiles:\t2\n    0: /container/c1/mnt/x/f\n    1: /etc/passwd\n"}
    monkeypatch.setattr(Judge, "_fdinfo", lambda self, pid, fd: fdinfo[(pid, fd)])
    rep = make_judge(scan=scan).report(guest_target())
    got = {(p.how, p.pid, p.path) for p in rep.pins if p.how in ("fanotify", "io_uring")}
    assert got == {("fanotify", 41, "/container/c1/mnt/x"),
                   ("io_uring", 42, "/container/c1/mnt/x/f")}
    texts = [describe_pin(p) for p in rep.pins]
    assert any("fanotify mark" in t and "kill 41" in t for t in texts), texts
    assert any("io_uring" in t and "kill 42" in t for t in texts), texts


def test_open_device_node_pins_only_device_targets(make_judge, monkeypatch):
    _stub_proc(monkeypatch, 50)
    scan = Scan(records=[ProcRecord(50, "fd", 0, os.makedev(0, 5), "/dev/loop0",
                                    os.makedev(7, 0))], ns_of_pid={50: HOST})
    dev_target = guest_target(root=None, mount_id=None, spec="/dev/loop0")
    rep = make_judge(scan=scan).report(dev_target)
    assert [(p.how, p.pid, p.path) for p in rep.pins if p.pid == 50] == \
        [("fd", 50, "/dev/loop0")]
    # unmounting a mount of the device is not stopped by someone holding its node
    rep = make_judge(scan=scan).report(guest_target())
    assert not [p for p in rep.pins if p.pid == 50]


@pytest.mark.parametrize("autoclear, want", [
    (False, "(swapoff /dev/loop9; then losetup -d /dev/loop9)"),
    (True, "(losetup -d was already asked for, and waits for its users: swapoff /dev/loop9)"),
])
def test_loop_hint_reads_autoclear_and_swap(make_judge, monkeypatch, autoclear, want):
    vs = views()
    dev = os.makedev(7, 0)
    img = "/container/c1/mnt/x/swap.img"
    vs[0].probes = {img: (dev, 15, M_HOST)}
    facts = Facts((SwapEntry("/dev/loop9", "partition"),),
                  (LoopDevice("loop9", img, dev, 15, (7, 9), autoclear),), ())
    real_stat = os.stat

    class _St:
        st_rdev = os.makedev(7, 9)

    monkeypatch.setattr(judging.os, "stat",
                        lambda p, *a, **k: _St() if p == "/dev/loop9" else real_stat(p, *a, **k))
    rep = make_judge(facts, vs=vs).report(guest_target())
    [pin] = [p for p in rep.pins if p.how == "loop"]
    assert describe_pin(pin) == f"{img} on it backs loop device /dev/loop9 {want}"


def test_loop_hint_plain_when_nothing_uses_it(make_judge):
    vs = views()
    dev = os.makedev(7, 0)
    img = "/container/c1/mnt/x/inner.img"
    vs[0].probes = {img: (dev, 15, M_HOST)}
    facts = Facts((), (LoopDevice("loop9", img, dev, 15, (7, 9), False),), ())
    rep = make_judge(facts, vs=vs).report(guest_target())
    [pin] = [p for p in rep.pins if p.how == "loop"]
    assert describe_pin(pin).endswith("(losetup -d /dev/loop9)")


# ----------------------------------------------------------------------------- the /proc pass
def test_maps_filter_linear_and_same_for_many_devices():
    from mirrormount.busy.scan import maps_on_devices
    lines = [f"7f{i:04x}000-7f{i:04x}fff r--p 00000000 {7 + i % 3:02x}:{i % 50:02x} {i + 1}"
             f"                  /lib/f{i}.so" for i in range(600)]
    text = "\n".join(lines) + "\n7fff0000-7fff1000 rw-p 00000000 00:00 0 \n"
    few = maps_on_devices(text, [(7, 1)])
    many = maps_on_devices(text, [(7, 1)] + [(200 + i, i) for i in range(500)])
    assert few == many and {e.path for e in few} == {f"/lib/f{i}.so" for i in range(600)
                                                     if (7 + i % 3, i % 50) == (7, 1)}
    assert maps_on_devices(text, []) == []

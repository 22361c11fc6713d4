"""mirrormount.kernel.procfs: the pure /proc/PID/status parsers on captured files (fixtures/proc/, see
fixtures/mountinfo/README.md), and the /proc readers pointed at a fixture tree in tmp_path."""
from __future__ import annotations

import os

import pytest

from fixture_files import proc_text
from mirrormount.kernel.procfs import (alive, ns_id, ns_inode, parse_nspid, parse_status, pids,
                                pids_by_mnt_ns, read_text)


def test_nspid_inside_a_pid_namespace_guest():
    text = proc_text("status.pidns-guest.inside.txt")
    st = parse_status(text)
    # read through the guest's own /proc: only the guest's level is visible
    assert parse_nspid(text) == (int(st["Pid"]),) == (3,)
    assert st["Name"] == "cat"
    assert st["PPid"] == "0"        # its parent (the setns'ing child) is outside the namespace


def test_nspid_of_the_same_guest_seen_from_the_host():
    text = proc_text("status.pidns-guest.from-host.txt")
    st = parse_status(text)
    nspid = parse_nspid(text)
    assert nspid == (51, 4)                        # outermost first
    assert nspid[0] == int(st["Pid"]) == int(st["Tgid"])
    assert st["Name"] == "sleep"


def test_nspid_of_the_reaper_is_init_of_its_namespace():
    text = proc_text("status.pidns-reaper.from-host.txt")
    assert parse_nspid(text) == (18, 1)
    assert parse_status(text)["Name"] == "mm-reaper"


def test_parse_status_fields():
    st = parse_status(proc_text("status.pidns-guest.from-host.txt"))
    assert st["State"] == "S (sleeping)"
    assert st["NSpid"] == "51\t4"
    assert st["Uid"].split() == ["0", "0", "0", "0"]
    assert st["CapEff"] and all(c in "0123456789abcdef" for c in st["CapEff"])
    assert "" not in st and not any(k.endswith(":") for k in st)


def test_status_without_nspid():
    # kernels before 4.1 have no NSpid line
    assert parse_nspid("Name:\tinit\nPid:\t1\n") == ()
    assert parse_nspid("") == ()
    assert parse_status("") == {}


def test_a_process_name_cannot_forge_nspid():
    """Any process may call itself "\\x1cNSpid:\\t1" (prctl PR_SET_NAME); the kernel prints the
    0x1c raw. The real NSpid line is the one the kernel wrote, after Name."""
    text = proc_text("status.spoofed-name.txt")
    assert text.startswith("Name:\t\x1cNSpid:\t1\n")
    st = parse_status(text)
    assert parse_nspid(text) == (int(st["Pid"]),)
    assert st["NSpid"] == st["Pid"]


# ----------------------------------------------------------------------------- fixture /proc tree
@pytest.fixture
def proc(tmp_path):
    """A fake /proc: pids 10 and 11 share one mount namespace (a hard link stands for the same
    nsfs inode), 12 has another, 13 vanished half-way (no ns dir), plus non-pid entries."""
    root = tmp_path / "proc"
    ns_store = tmp_path / "ns"
    ns_store.mkdir()
    (ns_store / "a").write_text("")
    (ns_store / "b").write_text("")
    for pid, ns in ((10, "a"), (11, "a"), (12, "b")):
        d = root / str(pid) / "ns"
        d.mkdir(parents=True)
        os.link(ns_store / ns, d / "mnt")
    (root / "13").mkdir()
    (root / "self").mkdir()
    (root / "sys").mkdir()
    (root / "meminfo").write_text("MemTotal: 1 kB\n")
    return root, ns_store


def test_pids_lists_only_numeric_entries(proc):
    root, _ = proc
    assert sorted(pids(str(root))) == [10, 11, 12, 13]


def test_pids_by_mnt_ns_groups_and_skips_vanished(proc):
    root, store = proc
    got = pids_by_mnt_ns(str(root))
    a, b = os.stat(store / "a").st_ino, os.stat(store / "b").st_ino
    assert {k: sorted(v) for k, v in got.items()} == {a: [10, 11], b: [12]}


def test_ns_id_of_a_link_and_of_a_bound_file(tmp_path):
    link = tmp_path / "mnt"
    os.symlink("mnt:[4026531841]", link)
    assert ns_id(str(link)) == "mnt:[4026531841]"
    bound = tmp_path / "uts"
    bound.write_text("")
    assert ns_id(str(bound)) == f"uts:[{os.stat(bound).st_ino}]"
    assert ns_id(str(tmp_path / "missing")) is None
    assert ns_inode(str(bound)) == os.stat(bound).st_ino
    assert ns_inode(str(tmp_path / "missing")) is None


def test_ns_id_of_this_process_matches_the_kernel():
    assert ns_id("/proc/self/ns/mnt") == os.readlink("/proc/self/ns/mnt")
    ino = ns_inode("/proc/self/ns/mnt")
    assert ns_id("/proc/self/ns/mnt") == f"mnt:[{ino}]"


def test_read_text(tmp_path):
    p = tmp_path / "status"
    p.write_bytes(b"Name:\t\xff\n")
    assert read_text(str(p)) == "Name:\t\ufffd\n"
    assert read_text(str(tmp_path / "gone")) is None
    assert read_text(str(tmp_path)) is None        # a directory: IsADirectoryError


def test_alive():
    assert alive(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not alive(pid)

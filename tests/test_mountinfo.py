"""mirrormount.kernel.mountinfo on captured /proc/PID/mountinfo files (fixtures/mountinfo/README.md)."""
from __future__ import annotations

import pytest

from fixture_files import mountinfo_names, mountinfo_table, mountinfo_text
from mirrormount.kernel.mountinfo import (Mount, MountTable, ParseError, escape, is_under, parse,
                                   parse_line, read, unescape)


def kernel_lines(text: str) -> list[str]:
    """The kernel ends every mountinfo record with '\\n' and escapes '\\n' inside fields, so
    '\\n' is the one and only record separator (str.splitlines also splits on \\f, \\x1c...)."""
    assert text.endswith("\n")
    return text[:-1].split("\n")


def render(m: Mount) -> str:
    """A Mount back to the kernel's text (fs/proc_namespace.c show_mountinfo's field order)."""
    opt = ""
    if m.shared is not None:
        opt += f" shared:{m.shared}"
    if m.master is not None:
        opt += f" master:{m.master}"
    if m.propagate_from is not None:
        opt += f" propagate_from:{m.propagate_from}"
    if m.unbindable:
        opt += " unbindable"
    return (f"{m.mount_id} {m.parent_id} {m.major}:{m.minor} {escape(m.root)} "
            f"{escape(m.mountpoint)} {m.options}{opt} - {m.fstype} {escape(m.source)} "
            f"{m.super_options}")


ALL = mountinfo_names()


def test_every_scenario_was_captured():
    # The README promises these; a missing file would silently shrink the parametrized tests.
    for name in ("private-bare.host", "private-c1.host", "private-c1.guest-c1",
                 "private-c123.host", "private-c123.guest-c2", "private-c123.guest-c3",
                 "rshared-c1.host", "rshared-c1-rprivate.guest-c1", "rshared-leaky-rbind.host",
                 "optional-fields.host", "propagate-from.chroot", "control-chars.host"):
        assert name in ALL


@pytest.mark.parametrize("name", ALL)
def test_one_record_per_kernel_line(name):
    text = mountinfo_text(name)
    assert len(parse(text)) == len(kernel_lines(text))


@pytest.mark.parametrize("name", ALL)
def test_round_trip_byte_for_byte(name):
    """Every field, escape and optional tag survives parse -> render unchanged."""
    text = mountinfo_text(name)
    for line, m in zip(kernel_lines(text), parse(text)):
        assert render(m) == line


# ----------------------------------------------------------------------------- escapes
def test_octal_escapes_in_mountpoints_and_source():
    t = mountinfo_table("optional-fields.host")
    for path in ("/srv/e/a b", "/srv/e/tab\tx", "/srv/e/back\\slash", "/srv/e/new\nline"):
        m = t.at(path)
        assert m is not None, path
        assert m.fstype == "tmpfs" and m.source == "esc"
    assert t.at("/srv/e").source == "src with space"
    assert t.at("/srv/e/a\\040b") is None     # the escaped spelling is not a path


def test_literal_backslash_digits_are_not_unescaped_twice():
    # A directory really named 'lit\040' (backslash, 0, 4, 0): the kernel writes \134040.
    raw = [ln for ln in kernel_lines(mountinfo_text("optional-fields.host")) if "/srv/e/lit" in ln]
    assert len(raw) == 1 and "/srv/e/lit\\134040 " in raw[0]
    m = parse_line(raw[0])
    assert m.mountpoint == "/srv/e/lit\\040"
    assert escape(m.mountpoint) == "/srv/e/lit\\134040"


@pytest.mark.parametrize("path", ["/a b", "/t\tb", "/n\nl", "/b\\s", "/lit\\040", "/\\\\ \t\n",
                                  "/plain", "/ünï", ""])
def test_escape_unescape_are_inverse(path):
    assert unescape(escape(path)) == path
    assert not set(escape(path)) & {" ", "\t", "\n"}


def test_unescape_leaves_non_octal_backslashes():
    assert unescape("/a\\x") == "/a\\x"
    assert unescape("/a\\08") == "/a\\08"      # 8 is not an octal digit
    assert unescape("/a\\0401") == "/a 1"     # exactly three digits


def test_control_characters_the_kernel_leaves_raw():
    """\\f and \\x1c are not escaped by the kernel; they must stay inside their path."""
    t = mountinfo_table("control-chars.host")
    assert t.at("/srv/ff\x0cx") is not None
    assert t.at("/srv/fs\x1cx") is not None


# ----------------------------------------------------------------------------- optional fields
def test_optional_fields_each_kind():
    t = mountinfo_table("optional-fields.host")
    master = t.at("/srv/master")
    slave = t.at("/srv/slave")
    shslave = t.at("/srv/shslave")
    unb = t.at("/srv/unb")
    private = t.at("/srv/e")
    assert master.shared is not None and master.master is None
    assert master.propagation == "shared"
    assert slave.shared is None and slave.master == master.shared
    assert slave.propagation == "slave"
    assert shslave.master == master.shared
    assert shslave.shared not in (None, master.shared)
    assert shslave.propagation == "shared,slave"
    assert unb.unbindable and unb.shared is None and unb.master is None
    assert unb.propagation == "unbindable"
    assert (private.shared, private.master, private.unbindable) == (None, None, False)
    assert private.propagation == "private"
    assert all(m.propagate_from is None for m in t)


def test_propagate_from_seen_from_a_chroot():
    host = mountinfo_table("propagate-from.host")
    chroot = mountinfo_table("propagate-from.chroot")
    a, b, c = host.at("/srv/r/a"), host.at("/srv/b"), host.at("/srv/r/c")
    assert b.master == a.shared and c.master == b.shared
    # In the host's view /srv/b (the master) is visible: no propagate_from.
    assert c.propagate_from is None
    # From the chroot at /srv/r, /srv/b is out of sight: the kernel names /a's group too.
    cc = chroot.at("/c")
    assert cc.mount_id == c.mount_id
    assert cc.master == b.shared
    assert cc.propagate_from == a.shared
    assert cc.shared is None and cc.propagation == "slave"


def test_nsfs_and_device_fields():
    t = mountinfo_table("private-c1.host")
    ns = t.at("/run/mirrormount/c1/ns/mnt")
    assert ns.fstype == "nsfs" and ns.source == "nsfs"
    assert ns.root.startswith("mnt:[") and ns.root.endswith("]")
    assert ns.dev == "0:4" and (ns.major, ns.minor) == (0, 4)
    root = t.at("/")
    assert root.fstype == "tmpfs" and root.source == "sandbox-root"
    assert root.options == "rw,relatime" and root.super_options == "rw,mode=755"


def test_sample_line_from_proc5():
    m = parse_line("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root "
                   "rw,errors=continue\n")
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (36, 35, 98, 0)
    assert (m.root, m.mountpoint, m.options) == ("/mnt1", "/mnt2", "rw,noatime")
    assert (m.shared, m.master, m.propagate_from, m.unbindable) == (None, 1, None, False)
    assert (m.fstype, m.source, m.super_options) == ("ext3", "/dev/root", "rw,errors=continue")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("line", [
    "garbage",
    "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",  # no separator
    "36 35 98:0 /mnt1 - rw",                                          # separator too early
    "x 35 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",                  # mount id
    "36 y 98:0 /mnt1 /mnt2 rw - ext3 /dev/root rw",                  # parent id
    "36 35 98-0 /mnt1 /mnt2 rw - ext3 /dev/root rw",                 # dev without colon
    "36 35 98:0:1 /mnt1 /mnt2 rw - ext3 /dev/root rw",               # dev with two colons
    "36 35 98:z /mnt1 /mnt2 rw - ext3 /dev/root rw",                 # minor
    "36 35 98:0",                                                    # truncated
])
def test_bad_lines_raise_parse_error(line):
    with pytest.raises(ParseError):
        parse_line(line)


@pytest.mark.parametrize("line", [
    "36 35 98:0 /mnt1 /mnt2 rw shared:x - ext3 /dev/root rw",
    "36 35 98:0 /mnt1 /mnt2 rw master: - ext3 /dev/root rw",
])
def test_bad_optional_field_raises_parse_error(line):
    # Callers catch ParseError for corrupt input; a bare ValueError from int() escapes them.
    with pytest.raises(ParseError):
        parse_line(line)


def test_parse_error_names_the_line():
    with pytest.raises(ParseError, match="garbage here"):
        parse("63 42 0:39 / / rw - tmpfs r rw\ngarbage here\n")


def test_parse_skips_blank_lines():
    assert len(parse("\n63 42 0:39 / / rw - tmpfs r rw\n\n")) == 1
    assert parse("") == ()


def test_read_takes_a_proc_root(tmp_path):
    text = mountinfo_text("private-c1.guest-c1")
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "mountinfo").write_text(text)
    assert read(4242, proc=str(tmp_path)) == parse(text)
    assert read("4242", proc=str(tmp_path)) == parse(text)


# ----------------------------------------------------------------------------- MountTable
def test_root_of_host_guest_and_chroot_views():
    host = mountinfo_table("private-c1.host")
    guest = mountinfo_table("private-c1.guest-c1")
    chroot = mountinfo_table("propagate-from.chroot")
    for t in (host, guest, chroot):
        r = t.root()
        assert r.mountpoint == "/"
        assert r.parent_id not in t.by_id
    # the guest's / is the mirror's copy: same filesystem as BASE/c1 on the host
    assert guest.root().dev == host.at("/container/c1").dev
    assert guest.root().shared == host.at("/container/c1").shared


def test_root_of_an_empty_table():
    with pytest.raises(ParseError):
        MountTable.of([]).root()


def test_at_returns_none_for_non_mountpoints():
    t = mountinfo_table("private-c1.host")
    assert t.at("/container/c1") is not None
    assert t.at("/container/c1/") is None      # exact match only
    assert t.at("/container/c1/usr/bin") is None
    assert t.at("/nonexistent") is None


def test_at_prefers_the_upper_of_a_stack():
    # /dev/shm is two mounts in the sandbox: 0:23 below, 0:27 mounted on top of it.
    t = mountinfo_table("private-bare.host")
    stack = [m for m in t if m.mountpoint == "/dev/shm"]
    assert len(stack) == 2
    lower, upper = stack
    assert upper.parent_id == lower.mount_id
    assert t.at("/dev/shm") is upper
    assert t.containing("/dev/shm/file") is upper


def test_at_with_a_tucked_mount():
    t = mountinfo_table("optional-fields.host")
    stack = [m for m in t if m.mountpoint == "/mnt/a/x"]
    old = next(m for m in stack if m.source == "tx-old")
    new = next(m for m in stack if m.source == "tx-new")
    assert old.parent_id == new.mount_id      # tx-old sits on top of tx-new
    assert t.at("/mnt/a/x") is old
    assert t.containing("/mnt/a/x/f") is old


def test_under_is_by_component():
    t = mountinfo_table("private-c123.host")
    mirror = t.under("/container/c1")
    assert mirror and all(m.mountpoint == "/container/c1"
                          or m.mountpoint.startswith("/container/c1/") for m in mirror)
    assert len(mirror) == len(mountinfo_table("private-c123.guest-c1"))
    assert t.under("/container/c") == []       # no string-prefix match with c1, c2, c3
    assert len(t.under("/")) == len(t)
    assert {m.mountpoint for m in t.under("/container")} >= {"/container", "/container/c1",
                                                             "/container/c2", "/container/c3"}


def test_children_are_direct_only():
    t = mountinfo_table("private-c1.host")
    mirror = t.at("/container/c1")
    kids = {m.mountpoint for m in t.children(mirror.mount_id)}
    assert {"/container/c1/usr", "/container/c1/work/main", "/container/c1/proc"} <= kids
    assert "/container/c1/work/main/.venv" not in kids     # a grandchild
    assert "/container/c1" not in kids
    venv = t.at("/container/c1/work/main/.venv")
    assert [m.mountpoint for m in t.children(t.at("/container/c1/work/main").mount_id)] == [
        venv.mountpoint]
    assert t.children(venv.mount_id) == []


def test_containing_picks_the_longest_component_prefix():
    t = mountinfo_table("private-c1.host")
    assert t.containing("/container/c1/usr/bin/ls").mountpoint == "/container/c1/usr"
    assert t.containing("/container/c1/etcetera").mountpoint == "/container/c1"
    assert t.containing("/container/c1").mountpoint == "/container/c1"
    assert t.containing("/container/zz").mountpoint == "/container"
    assert t.containing("/nowhere").mountpoint == "/"
    assert t.containing("/work/main/.venv/bin").mountpoint == "/work/main/.venv"


def test_peer_groups_of_a_correct_mirror_on_an_rshared_host():
    t = mountinfo_table("rshared-c1.host")
    everything = t.peer_groups()
    host_only = t.peer_groups(exclude_under="/container")
    mirror = {m.shared for m in t.under("/container/c1")}
    assert None not in mirror and len(mirror) == len(t.under("/container/c1"))
    assert everything == host_only | mirror
    assert not host_only & mirror          # a fresh peer group for every mount of the mirror
    assert t.at("/").shared in host_only


def test_peer_groups_of_a_leaky_rbind():
    t = mountinfo_table("rshared-leaky-rbind.host")
    leaky = {m.shared for m in t.under("/container/x")}
    assert leaky <= t.peer_groups(exclude_under="/container")


@pytest.mark.parametrize("path,top,expected", [
    ("/a/b", "/a", True), ("/a", "/a", True), ("/a", "/a/", True), ("/ab", "/a", False),
    ("/a", "/a/b", False), ("/anything", "/", True), ("/", "/", True), ("/a/b", "/a/b/", True),
])
def test_is_under(path, top, expected):
    assert is_under(path, top) is expected

"""mirrormount.guest.health.assess on captured host and guest mount tables
(fixtures/mountinfo/README.md): intact mirrors, a guest that made its / private, and mirrors
tied to the host's own peer groups."""
from __future__ import annotations


import pytest

from fixture_files import mountinfo_table
from mirrormount.record import replace
from mirrormount.guest.health import RECREATE, assess, guest_to_host
from mirrormount.kernel.mountinfo import MountTable

BASE = "/container"


def as_guest_view(host: MountTable, mirror: str) -> MountTable:
    """What a guest pivot_rooted into `mirror` sees (mountpoints re-rooted, same peer groups).
    Used only for the hand-made leaky mirror, which has no guest of its own."""
    out = []
    for m in host.under(mirror):
        path = m.mountpoint[len(mirror):] or "/"
        out.append(replace(m, mountpoint=path))
    return MountTable.of(out)


@pytest.mark.parametrize("scenario,name,mode", [
    ("private-c1", "c1", "mirror"),
    ("rshared-c1", "c1", "mirror"),
    ("private-c123", "c1", "mirror"),
    ("private-c123", "c2", "mirror+host"),
    ("private-c123", "c3", "mirror"),
])
def test_intact(scenario, name, mode):
    host = mountinfo_table(f"{scenario}.host")
    guest = mountinfo_table(f"{scenario}.guest-{name}")
    h = assess(f"{BASE}/{name}", mode, host, guest, BASE)
    assert h.mirror_intact, h.problems
    assert h.problems == ()
    assert h.mounts_host == len(host.under(f"{BASE}/{name}"))
    assert h.mounts_guest == len(guest)
    assert h.mounts_host >= 20


def test_counts_differ_when_the_guest_has_its_own_proc():
    # c3 (--ns pid) mounted a fresh /proc in the guest; it propagated to the host side too.
    host = mountinfo_table("private-c123.host")
    guest = mountinfo_table("private-c123.guest-c3")
    h = assess(f"{BASE}/c3", "mirror", host, guest, BASE)
    assert len([m for m in guest if m.mountpoint == "/proc"]) == 2
    assert len(host.under(f"{BASE}/c3/proc")) == 2
    assert (h.mounts_host, h.mounts_guest) == (28, 28)


def test_guest_made_its_root_private():
    host = mountinfo_table("rshared-c1-rprivate.host")
    guest = mountinfo_table("rshared-c1-rprivate.guest-c1")
    assert guest.root().shared is None        # the capture shows what the guest did
    h = assess(f"{BASE}/c1", "mirror", host, guest, BASE)
    assert not h.mirror_intact
    assert len(h.problems) == 1
    p = h.problems[0]
    assert "no longer a peer of /container/c1" in p
    assert f"peer group {host.at(BASE + '/c1').shared}" in p
    assert "private" in p and RECREATE in p


def test_the_same_guest_before_it_did_so_was_intact():
    h = assess(f"{BASE}/c1", "mirror", mountinfo_table("rshared-c1.host"),
               mountinfo_table("rshared-c1.guest-c1"), BASE)
    assert h.mirror_intact


def test_guest_of_another_mirror_is_not_a_peer():
    # c3's guest table judged against c1's mirror: different peer groups
    host = mountinfo_table("private-c123.host")
    h = assess(f"{BASE}/c1", "mirror", host, mountinfo_table("private-c123.guest-c3"), BASE)
    assert not h.mirror_intact and "no longer a peer" in h.problems[0]


def test_leaky_rbind_is_tied_to_host_peer_groups():
    host = mountinfo_table("rshared-leaky-rbind.host")
    mirror = f"{BASE}/x"
    guest = as_guest_view(host, mirror)
    h = assess(mirror, "mirror", host, guest, BASE)
    assert not h.mirror_intact
    shares = [p for p in h.problems if "shares peer group" in p]
    assert len(shares) == len(host.under(mirror))      # every single mount leaks
    usr = host.at("/usr")
    assert any(p.startswith(f"{mirror}/usr shares peer group {usr.shared} with host mount /usr")
               for p in shares)
    assert all(RECREATE in p for p in h.problems)


def test_mirror_host_guest_judged_as_mirror_mode_reports_the_master_links():
    host = mountinfo_table("private-c123.host")
    guest = mountinfo_table("private-c123.guest-c2")
    h = assess(f"{BASE}/c2", "mirror", host, guest, BASE)
    assert not h.mirror_intact
    receives = [p for p in h.problems if "receives mounts from host peer group" in p]
    root = host.at("/")
    assert any(p.startswith(f"{BASE}/c2 receives mounts from host peer group {root.shared} (/)")
               for p in receives)
    # the lower halves of the stacked /dev/shm and /dev/pts stayed private on the host, so
    # their copies have no master: every other mount of the mirror is reported
    slaves = [m for m in host.under(f"{BASE}/c2") if m.master is not None]
    assert len(receives) == len(slaves) == len(host.under(f"{BASE}/c2")) - 2


def test_other_mirrors_under_base_do_not_count_as_host_groups():
    # c1 and c3 live under BASE too; only groups outside BASE are the host's.
    host = mountinfo_table("private-c123.host")
    h = assess(f"{BASE}/c1", "mirror", host, mountinfo_table("private-c123.guest-c1"), BASE)
    assert h.mirror_intact


def test_mirror_not_mounted():
    host = mountinfo_table("private-c1.host")
    h = assess(f"{BASE}/gone", "mirror", host, mountinfo_table("private-c1.guest-c1"), BASE)
    assert not h.mirror_intact
    assert h.mounts_host == 0
    assert "/container/gone is not mounted" in h.problems[0]


def test_mirror_top_made_private_on_the_host():
    host = mountinfo_table("private-c1.host")
    mounts = [replace(m, shared=None) if m.mountpoint == f"{BASE}/c1" else m
              for m in host]
    h = assess(f"{BASE}/c1", "mirror", MountTable.of(mounts),
               mountinfo_table("private-c1.guest-c1"), BASE)
    assert not h.mirror_intact
    assert "is private, not shared" in h.problems[0]


def test_guest_namespace_unreadable():
    host = mountinfo_table("private-c1.host")
    h = assess(f"{BASE}/c1", "mirror", host, None, BASE)
    assert not h.mirror_intact
    assert h.mounts_guest == 0 and h.mounts_host == len(host.under(f"{BASE}/c1"))
    assert "cannot be read" in h.problems[-1]


def test_guest_only_mount_is_a_problem_but_not_a_break():
    host = mountinfo_table("private-c1-guestonly.host")
    guest = mountinfo_table("private-c1-guestonly.guest-c1")
    assert guest.at("/tmp/go") is not None and host.at(f"{BASE}/c1/tmp/go") is None
    h = assess(f"{BASE}/c1", "mirror", host, guest, BASE)
    assert h.mirror_intact
    assert h.problems == ("guest mount /tmp/go has no copy under /container/c1: it was made "
                          "on a private mount in the guest",)
    # declared guest-only (the busy issue's --guest-only): no longer reported
    h = assess(f"{BASE}/c1", "mirror", host, guest, BASE, guest_only=("/tmp/go",))
    assert h.mirror_intact and h.problems == ()
    # a guest-only prefix covers what lies beneath it, by component
    assert assess(f"{BASE}/c1", "mirror", host, guest, BASE, guest_only=("/tmp",)).problems == ()
    assert assess(f"{BASE}/c1", "mirror", host, guest, BASE,
                  guest_only=("/tmp/g",)).problems != ()


@pytest.mark.parametrize("mirror,path,expected", [
    ("/container/c1", "/", "/container/c1"),
    ("/container/c1", "/usr", "/container/c1/usr"),
    ("/container/c1/", "/a b", "/container/c1/a b"),
])
def test_guest_to_host(mirror, path, expected):
    assert guest_to_host(mirror, path) == expected

"""mirrormount.kernel.mountquery's pure parts on the captured fixtures: select_lines (the table
`status` parses: the host outside BASE plus one mirror) and the /proc fallback's scan.

The point of select_lines is speed at 1,000 guests (bench/results/scale.md); what these tests
hold is that it changes no answer: health.assess judges a mirror the same on the filtered
table as on the whole one."""
from __future__ import annotations


import pytest

from fixture_files import mountinfo_names, mountinfo_table, mountinfo_text
from mirrormount.record import replace
from mirrormount.guest.health import assess
from mirrormount.kernel.mountinfo import Mount, MountTable, ParseError, format_line, is_under
from mirrormount.kernel.mountquery import _via_mountinfo, select_lines

BASE = "/container"


def filtered(text: str, skip_under: str, keep: list[str]) -> MountTable:
    return MountTable.parse("\n".join(select_lines(text.split("\n"), skip_under, keep)))


def expected(table: MountTable, skip_under: str, keep: list[str]) -> set[int]:
    """The same selection, spelled with is_under on decoded paths ("/" skips nothing)."""
    top = skip_under.rstrip("/")
    return {m.mount_id for m in table
            if not top or not (is_under(m.mountpoint, top) and m.mountpoint != top)
            or any(is_under(m.mountpoint, k) for k in keep)}


@pytest.mark.parametrize("name", mountinfo_names())
@pytest.mark.parametrize("skip_under,keep", [
    (BASE, [f"{BASE}/c1"]),
    (BASE, [f"{BASE}/c2", "/run/mirrormount/c2/ns/mnt"]),
    (BASE, []),
    ("/srv/e", ["/srv/e/a b"]),              # escaped mountpoints (optional-fields)
    ("/srv", ["/srv/e/back\\slash"]),
    ("/", []),
])
def test_keeps_exactly_what_lies_outside_or_is_kept(name, skip_under, keep):
    text = mountinfo_text(name)
    whole = MountTable.parse(text)
    got = filtered(text, skip_under, keep)
    assert {m.mount_id for m in got} == expected(whole, skip_under, keep)
    assert all(m == whole.by_id[m.mount_id] for m in got)    # parsed alike, line for line


def test_root_skips_nothing_and_root_kept_keeps_everything():
    text = mountinfo_text("private-c123.host")
    whole = MountTable.parse(text)
    assert filtered(text, "/", []).mounts == whole.mounts
    assert filtered(text, BASE, ["/"]).mounts == whole.mounts


def test_a_sibling_with_the_same_prefix_is_not_kept():
    # c1 kept must not keep c10: "beneath" is by path components, not by string prefix.
    host = mountinfo_table("private-c1.host")
    c1 = [m for m in host if is_under(m.mountpoint, f"{BASE}/c1")]
    c10 = [replace(m, mount_id=m.mount_id + 100000,
                               mountpoint=f"{BASE}/c10" + m.mountpoint[len(f"{BASE}/c1"):])
           for m in c1]
    text = "\n".join(format_line(m) for m in [*host, *c10])
    got = {m.mountpoint for m in filtered(text, BASE, [f"{BASE}/c1"])}
    assert f"{BASE}/c1" in got and not any(p.startswith(f"{BASE}/c10") for p in got)
    kept_c10 = filtered(text, BASE, [f"{BASE}/c10"])
    assert len(kept_c10) == len(filtered(text, BASE, [])) + len(c10)


def test_escaped_paths_are_compared_decoded():
    # A mountpoint with a space beneath the skipped directory, and a kept one with a tab.
    base = Mount(1, 1, 0, 20, "/", "/", "rw", fstype="tmpfs", source="r")
    lines = [format_line(m) for m in (
        base,
        replace(base, mount_id=2, mountpoint="/b a/x y"),
        replace(base, mount_id=3, mountpoint="/b a/k\tz"),
        replace(base, mount_id=4, mountpoint="/b a/k\tz/under"),
        replace(base, mount_id=5, mountpoint="/b a"))]
    assert "\\040" in lines[1] and "\\011" in lines[2]
    got = [m.mount_id for m in filtered("\n".join(lines), "/b a", ["/b a/k\tz"])]
    assert got == [1, 3, 4, 5]        # BASE itself stays; only x y (not kept) goes


def test_blank_lines_go_and_garbage_reaches_the_parser():
    out = list(select_lines(["", "  ", "not a record", ""], BASE, []))
    assert out == ["not a record"]
    with pytest.raises(ParseError):
        filtered("not a record\n", BASE, [])


# ---------------------------------------------------------------- assess: the same judgement
SCENARIOS = [("private-c1", "c1", "mirror"), ("rshared-c1", "c1", "mirror"),
             ("private-c123", "c1", "mirror"), ("private-c123", "c2", "mirror+host"),
             ("private-c123", "c3", "mirror"), ("rshared-c1-rprivate", "c1", "mirror"),
             ("private-c1-guestonly", "c1", "mirror")]


@pytest.mark.parametrize("scenario,name,mode", SCENARIOS)
def test_assess_judges_alike_on_the_filtered_table(scenario, name, mode):
    text = mountinfo_text(f"{scenario}.host")
    guest = mountinfo_table(f"{scenario}.guest-{name}")
    mirror = f"{BASE}/{name}"
    whole = assess(mirror, mode, MountTable.parse(text), guest, BASE)
    part = filtered(text, BASE, [mirror])
    assert assess(mirror, mode, part, guest, BASE) == whole
    others = [m for m in MountTable.parse(text)
              if is_under(m.mountpoint, BASE) and not is_under(m.mountpoint, mirror)
              and m.mountpoint != BASE]
    if scenario == "private-c123":
        assert others          # the other guests' mirrors were there, and left out


def test_a_leak_to_the_host_is_still_seen():
    # Every mount of /container/x stays in the host's peer groups: the check needs the host
    # outside BASE, which the filtered table keeps.
    text = mountinfo_text("rshared-leaky-rbind.host")
    host = MountTable.parse(text)
    guest = MountTable.of(replace(m, mountpoint=m.mountpoint[len(f"{BASE}/x"):] or "/")
                          for m in host.under(f"{BASE}/x"))
    whole = assess(f"{BASE}/x", "mirror", host, guest, BASE)
    part = assess(f"{BASE}/x", "mirror", filtered(text, BASE, [f"{BASE}/x"]), guest, BASE)
    assert not whole.mirror_intact and part == whole


# ---------------------------------------------------------------- the /proc fallback's scan
def test_fallback_scan_finds_escaped_mountpoints(tmp_path):
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(mountinfo_text("optional-fields.host"),
                                                 encoding="utf-8", errors="surrogateescape")
    whole = mountinfo_table("optional-fields.host")
    wanted = {"/srv/e/a b", "/srv/e/tab\tx", "/srv/e/back\\slash", "/srv/e/lit\\040",
              "/srv/e/new\nline", "/nowhere"}
    found = _via_mountinfo(wanted, proc=str(tmp_path))
    assert sorted(m.mount_id for m in found) == sorted(
        m.mount_id for m in whole if m.mountpoint in wanted)
    assert {m.mountpoint for m in found} == wanted - {"/nowhere"}

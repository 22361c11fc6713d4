"""doctor's judgements that need no system: fs.mount-max headroom counted per mount
namespace (fs/namespace.c count_mounts), on captured host tables."""
from __future__ import annotations

from fixture_files import mountinfo_table
from mirrormount.cli import doctor
from mirrormount.guest.model import Layout


def test_a_mirror_costs_the_host_one_copy_of_each_host_mount_it_takes():
    bare = mountinfo_table("private-bare.host")
    one = mountinfo_table("private-c1.host")
    # BASE, STATE and what lies beneath them are no part of what an rbind of / copies
    assert doctor.mirror_cost(Layout(), one) == doctor.mirror_cost(Layout(), bare) == len(bare)
    # and that is what one create really added under BASE (the capture shows it)
    assert len(one.under("/container/c1")) == len(bare)


def test_headroom_uses_the_host_namespace_only(monkeypatch, tmp_path):
    table = mountinfo_table("private-c123.host")
    cost = doctor.mirror_cost(Layout(), table)
    limit = len(table) + 100 * cost
    path = tmp_path / "mount-max"
    path.write_text(f"{limit}\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(
        path if p == "/proc/sys/fs/mount-max" else p, *a, **k))
    check = doctor.mount_max_check(Layout(), table)
    assert check.level == "ok" and "room for about 100 more guests" in check.detail
    assert f"each mirror adds ~{cost} mounts here" in check.detail
    path.write_text(f"{len(table) + cost // 2}\n")
    assert doctor.mount_max_check(Layout(), table).level == "warn"
    path.write_text(f"{len(table)}\n")
    assert doctor.mount_max_check(Layout(), table).level == "fail"

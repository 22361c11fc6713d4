"""mirrormount.guest.repair.plan_repair: from the host's and the guest's mount tables to the
steps that re-join a broken mirror, on captured tables (fixtures/mountinfo/README.md) and on
small constructed ones. The planner is pure: nothing here touches the system."""
from __future__ import annotations

import pytest

from fixture_files import mountinfo_table
from mirrormount.guest.health import assess
from mirrormount.guest.mountops import CopyTree, JoinGroup, Propagate
from mirrormount.guest.ops import render
from mirrormount.guest.repair import RepairFacts, kind, plan_repair
from mirrormount.kernel.mountinfo import MountTable

MIRROR, HOLDER, BASE = "/container/c1", "/run/mirrormount/c1/ns/mnt", "/container"


def facts(host: MountTable, guest: MountTable | None, mode: str = "mirror",
          skip: tuple[str, ...] = ()) -> RepairFacts:
    return RepairFacts(MIRROR, HOLDER, mode, host, guest, BASE, skip)


def steps(plan) -> list[tuple]:
    out = []
    for op in plan.ops:
        if isinstance(op, Propagate):
            out.append(("propagate", op.side, op.path, op.flag, op.undo_flag))
        elif isinstance(op, JoinGroup):
            out.append(("join", op.to, op.path))
        elif isinstance(op, CopyTree):
            out.append(("copy", op.to, op.path, op.mounts))
        else:  # pragma: no cover - a new op type must be added here
            raise AssertionError(op)
    return out


# ----------------------------------------------------------------------------- captured
def test_a_guest_that_made_its_root_rprivate_rejoins_every_mount():
    host = mountinfo_table("rshared-c1-rprivate.host")
    guest = mountinfo_table("rshared-c1-rprivate.guest-c1")
    plan = plan_repair(facts(host, guest))
    assert plan.cannot == [] and plan.missing == 0
    joins = [s for s in steps(plan) if s[0] == "join"]
    assert steps(plan) == joins          # every guest mount is private already: joins only
    assert ("join", "guest", "/") == joins[0]
    # each visible guest mount once; the two the sandbox stacks twice are hidden beneath
    # another and left, said so
    stacked = {"/dev/pts", "/dev/shm"}
    assert {s[2] for s in joins} == {m.mountpoint for m in guest}
    assert len(joins) == len(guest) - len(stacked) == plan.broken
    assert sorted(w.split(":")[0] for w in plan.left) == sorted(stacked)
    assert "MOVE_MOUNT_SET_GROUP" in render(plan.ops)


@pytest.mark.parametrize("scenario,name,mode", [
    ("private-c1", "c1", "mirror"), ("rshared-c1", "c1", "mirror"),
    ("private-c123", "c1", "mirror"), ("private-c123", "c2", "mirror+host"),
    ("private-c123", "c3", "mirror"),
])
def test_an_intact_mirror_needs_nothing(scenario, name, mode):
    host = mountinfo_table(f"{scenario}.host")
    guest = mountinfo_table(f"{scenario}.guest-{name}")
    plan = plan_repair(RepairFacts(f"/container/{name}", HOLDER, mode, host, guest, BASE))
    assert (plan.ops, plan.cannot, plan.left) == ([], [], [])


def test_a_guest_only_path_is_left_alone_and_its_private_parent_rejoins():
    # captured by hand before guest-only mounts existed: `mount --make-private /tmp` in the
    # guest, then a tmpfs on /tmp/go. status calls it intact (it judges the root); repair
    # sees /tmp cut off, and leaves /tmp/go to the guest when the record says guest-only
    host = mountinfo_table("private-c1-guestonly.host")
    guest = mountinfo_table("private-c1-guestonly.guest-c1")
    assert steps(plan_repair(facts(host, guest, skip=("/tmp/go",)))) == [
        ("join", "guest", "/tmp")]
    # without the record, /tmp/go looks made while the mirror was broken: copied
    assert steps(plan_repair(facts(host, guest))) == [
        ("propagate", "guest", "/tmp/go", "shared", "private"), ("copy", "host", "/tmp/go", 1),
        ("join", "guest", "/tmp")]


# ----------------------------------------------------------------------------- constructed
HOST = """\
1 0 0:10 / / rw shared:1 - tmpfs root rw
2 1 0:11 / /container rw unbindable - tmpfs mirrormount-base rw
3 1 0:12 / /srv rw shared:3 - tmpfs srv rw
10 2 0:10 / /container/c1 rw shared:10 - tmpfs root rw
11 10 0:13 / /container/c1/tmp rw shared:11 - tmpfs tmp rw
12 10 0:14 / /container/c1/usr ro shared:12 - ext4 /dev/vda rw
"""
GUEST = """\
20 99 0:10 / / rw shared:10 - tmpfs root rw
21 20 0:13 / /tmp rw shared:11 - tmpfs tmp rw
22 20 0:14 / /usr ro shared:12 - ext4 /dev/vda rw
"""


def tables(host: str = HOST, guest: str = GUEST, host_extra: str = "",
           guest_extra: str = "", **swap: str) -> tuple[MountTable, MountTable]:
    """The intact c1 above, with extra lines and text replacements ('a->b' as a=b)."""
    h, g = host + host_extra, guest + guest_extra
    for old, new in swap.values():
        h, g = h.replace(old, new), g.replace(old, new)
    return MountTable.parse(h), MountTable.parse(g)


def test_the_constructed_mirror_is_intact():
    host, guest = tables()
    assert assess(MIRROR, "mirror", host, guest, BASE).mirror_intact
    assert plan_repair(facts(host, guest)).ops == []


def test_rprivate_guest_joins_only_and_restores_on_undo_nothing_to_restore():
    host, guest = tables(guest=GUEST.replace(" shared:10", "").replace(" shared:11", "")
                         .replace(" shared:12", ""))
    plan = plan_repair(facts(host, guest))
    assert steps(plan) == [("join", "guest", "/"), ("join", "guest", "/tmp"),
                           ("join", "guest", "/usr")]


def test_a_slave_or_unbindable_guest_mount_is_made_private_first_and_undone_to_its_kind():
    g = GUEST.replace("shared:10", "master:10").replace("shared:11", "unbindable")
    host, guest = tables(guest=g)
    assert steps(plan_repair(facts(host, guest))) == [
        ("propagate", "guest", "/", "private", "slave"),
        ("propagate", "guest", "/tmp", "private", "unbindable"),
        ("join", "guest", "/"), ("join", "guest", "/tmp")]


def test_a_guest_mount_in_a_group_of_its_own_leaves_it_first():
    # rprivate then rshared in the guest: shared again, but in new groups
    host, guest = tables(guest=GUEST.replace("shared:10", "shared:50"))
    assert steps(plan_repair(facts(host, guest))) == [
        ("propagate", "guest", "/", "private", "shared"), ("join", "guest", "/")]


def test_a_private_host_copy_is_made_shared_first():
    host, guest = tables(host=HOST.replace(" shared:11 ", " "),
                         guest=GUEST.replace(" shared:11", ""))
    assert steps(plan_repair(facts(host, guest))) == [
        ("propagate", "host", "/tmp", "shared", "private"), ("join", "guest", "/tmp")]


def test_a_mount_made_in_the_broken_guest_is_copied_to_the_host():
    g = GUEST.replace(" shared:11", "")        # /tmp private: its new mount stayed there
    host, guest = tables(guest=g, guest_extra="23 21 0:30 / /tmp/g rw - tmpfs g rw\n"
                                               "24 23 0:31 / /tmp/g/in rw - tmpfs in rw\n")
    plan = plan_repair(facts(host, guest))
    assert steps(plan) == [("propagate", "guest", "/tmp/g", "shared", "private"),
                           ("propagate", "guest", "/tmp/g/in", "shared", "private"),
                           ("copy", "host", "/tmp/g", 2), ("join", "guest", "/tmp")]
    assert plan.missing == 1 and plan.cannot == []


def test_a_mount_made_on_the_host_side_is_copied_into_the_guest():
    g = GUEST.replace(" shared:11", "")
    host, guest = tables(guest=g,
                         host_extra="13 11 0:32 / /container/c1/tmp/h rw shared:60 - tmpfs h rw\n")
    assert steps(plan_repair(facts(host, guest))) == [("copy", "guest", "/tmp/h", 1),
                                                      ("join", "guest", "/tmp")]


def test_a_parent_still_a_peer_goes_private_for_the_copy_and_rejoins():
    # a killed repair rejoined /tmp before copying /tmp/h: attaching under the guest's /tmp
    # now would propagate a second copy onto the host's
    host, guest = tables(host_extra="13 11 0:32 / /container/c1/tmp/h rw shared:60 - tmpfs h rw\n")
    assert steps(plan_repair(facts(host, guest))) == [
        ("propagate", "guest", "/tmp", "private", "shared"), ("copy", "guest", "/tmp/h", 1),
        ("join", "guest", "/tmp")]


def test_steps_come_in_the_safe_order():
    g = (GUEST.replace("shared:10", "master:10").replace(" shared:11", ""))
    host, guest = tables(host=HOST.replace(" shared:12 ", " "), guest=g,
                         guest_extra="23 21 0:30 / /tmp/g rw - tmpfs g rw\n",
                         host_extra="13 10 0:32 / /container/c1/srv rw shared:61 - tmpfs s rw\n")
    order = [s[0] + ":" + s[1] for s in steps(plan_repair(facts(host, guest)))]
    rank = {"propagate:host": 0, "propagate:guest": 1, "copy:host": 2, "copy:guest": 2,
            "join:guest": 3, "join:host": 3}
    assert [rank[o] for o in order] == sorted(rank[o] for o in order), order


def test_two_sides_with_different_filesystems_at_a_path_cannot_be_healed():
    g = GUEST.replace(" shared:11", "")
    host, guest = tables(guest=g,
                         guest_extra="23 21 0:30 / /tmp/d rw - tmpfs mine rw\n",
                         host_extra="13 11 0:31 / /container/c1/tmp/d rw shared:61 - tmpfs theirs rw\n")
    plan = plan_repair(facts(host, guest))
    assert len(plan.cannot) == 1 and "/tmp/d" in plan.cannot[0]
    assert "theirs" in plan.cannot[0] and "mine" in plan.cannot[0]
    assert ("copy", "host", "/tmp/d", 1) not in steps(plan)


def test_leaks_into_host_groups_are_said_not_cut():
    host, guest = tables(host=HOST.replace("0:13 / /container/c1/tmp rw shared:11",
                                           "0:13 / /container/c1/tmp rw shared:3"),
                         guest=GUEST.replace("shared:11", "shared:3"))
    plan = plan_repair(facts(host, guest))
    assert any("shares peer group 3 with host mount /srv" in w for w in plan.cannot)


def test_a_mirror_host_mirror_cut_from_the_host_is_said():
    host, guest = tables()
    plan = plan_repair(facts(host, guest, "mirror+host"))
    assert any("no longer receives from the host" in w for w in plan.cannot)


def test_nothing_to_do_without_a_mirror_or_a_guest_namespace():
    host, guest = tables()
    assert "the guest's mount namespace cannot be read" in \
        plan_repair(facts(host, None)).cannot[0]
    gone = MountTable.parse(HOST.split("10 2 ")[0])
    assert "the mirror is gone" in plan_repair(facts(gone, guest)).cannot[0]


def test_guest_only_paths_and_nested_base_and_state_are_skipped():
    g = GUEST.replace(" shared:11", "")
    extra = ("23 21 0:30 / /tmp/go rw - tmpfs guest-only rw\n"
             "24 20 0:40 / /container rw unbindable - tmpfs mirrormount-base rw\n"
             "25 24 0:41 / /container/n1 rw shared:70 - tmpfs root rw\n")
    host, guest = tables(guest=g, guest_extra=extra)
    assert steps(plan_repair(facts(host, guest, skip=("/tmp/go",)))) == [
        ("join", "guest", "/tmp")]


def test_a_hidden_broken_mount_is_left_and_said():
    g = GUEST.replace(" shared:11", "") + "23 21 0:13 / /tmp rw shared:11 - tmpfs tmp rw\n"
    h = HOST + "13 11 0:13 / /container/c1/tmp rw shared:11 - tmpfs tmp rw\n"
    host, guest = tables(host=h, guest=g)
    plan = plan_repair(facts(host, guest))
    assert plan.ops == [] and plan.cannot == []
    assert plan.left and plan.left[0].startswith("/tmp: a mount hidden beneath another")


def test_kind_is_what_puts_a_mount_back():
    host, guest = tables(guest=GUEST.replace("shared:10", "master:10")
                         .replace("shared:11", "unbindable").replace(" shared:12", ""))
    assert [kind(m) for m in guest] == ["slave", "unbindable", "private"]
    assert [kind(m) for m in host.under(MIRROR)] == ["shared"] * 3


def test_repair_ops_render_as_numbered_shell_steps():
    g = GUEST.replace("shared:10", "master:10").replace(" shared:11", "")
    host, guest = tables(host=HOST.replace(" shared:12 ", " "), guest=g,
                         guest_extra="23 21 0:30 / /tmp/g rw - tmpfs g rw\n")
    text = render(plan_repair(facts(host, guest)).ops)
    assert "# step 1: /usr: the host's copy is private" in text
    assert "mount --make-shared /container/c1/usr\n" in text
    assert f"nsenter --mount={HOLDER} mount --make-private /\n" in text
    assert "open_tree(guest:/tmp/g, OPEN_TREE_CLONE|AT_RECURSIVE)" in text
    assert "move_mount(/container/c1/tmp -> /tmp in the guest" in text

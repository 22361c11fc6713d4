"""mirrormount.guest.plan: names, namespace kinds, and the ordered operations of a create, planned
against captured host mount tables (fixtures/mountinfo/README.md). The planner is pure: these
tests never touch the system."""
from __future__ import annotations

import shlex

import pytest

from fixture_files import mountinfo_table
from mirrormount.record import replace
from mirrormount.errors import EXIT_USAGE, UsageError
from mirrormount.kernel.mountinfo import MountTable
from mirrormount.guest.model import Layout, parse_kinds, validate_name
from mirrormount.guest.ops import (MakeDir, MountTmpfs, RBind, SetPropagation, SpawnGuest,
                                   StartNursery, WriteRecord, render)
from mirrormount.guest.plan import CreateRequest, HostFacts, not_receiving, plan_create

LAYOUT = Layout()   # the captures used the defaults: /container and /run/mirrormount


def nursery_ready(table: MountTable, layout: Layout = LAYOUT) -> bool:
    """The same judgement Guests.facts makes."""
    m = table.at(layout.nursery_file)
    return m is not None and m.fstype == "nsfs"


def plan(fixture: str, name: str = "c9", *, ready: bool | None = None,
         existing: frozenset[str] = frozenset(), **req):
    t = mountinfo_table(fixture)
    facts = HostFacts(t, existing, nursery_ready(t) if ready is None else ready)
    return plan_create(CreateRequest(name, **req), LAYOUT, facts)


def steps(ops) -> list[tuple]:
    """Each op as (kind, target, detail) for comparing whole sequences."""
    out = []
    for op in ops:
        if isinstance(op, SetPropagation):
            out.append(("propagation", op.path, ("r" if op.recursive else "") + op.flag))
        elif isinstance(op, MakeDir):
            out.append(("mkdir", op.path, None))
        elif isinstance(op, MountTmpfs):
            out.append(("tmpfs", op.path, op.source))
        elif isinstance(op, RBind):
            out.append(("rbind", op.target, op.source))
        elif isinstance(op, StartNursery):
            out.append(("nursery", op.holder, None))
        elif isinstance(op, SpawnGuest):
            out.append(("spawn", op.mirror, op.kinds))
        elif isinstance(op, WriteRecord):
            out.append(("record", op.path, None))
        else:  # pragma: no cover - a new op type must be added here
            raise AssertionError(f"unknown op {op!r}")
    return out


BASE_SETUP = [
    ("mkdir", "/container", None),
    ("tmpfs", "/container", "mirrormount-base"),
    ("propagation", "/container", "private"),
    ("propagation", "/container", "unbindable"),
    ("mkdir", "/run/mirrormount", None),
    ("tmpfs", "/run/mirrormount", "mirrormount-state"),
    ("propagation", "/run/mirrormount", "private"),
    ("propagation", "/run/mirrormount", "unbindable"),
]
NURSERY = [
    ("mkdir", "/run/mirrormount/.nursery", None),
    ("nursery", "/run/mirrormount/.nursery/mnt", None),
]


def guest_steps(name: str, rootfs: str = "/", link: str = "rprivate",
                kinds: tuple[str, ...] = ("mnt",)) -> list[tuple]:
    mirror = f"/container/{name}"
    return [
        ("mkdir", f"/run/mirrormount/{name}", None),
        ("record", f"/run/mirrormount/{name}/claim", None),     # before the mirror: owner.py
        ("mkdir", mirror, None),
        ("rbind", mirror, rootfs),
        ("propagation", mirror, link),
        ("propagation", mirror, "rshared"),
        ("mkdir", f"/run/mirrormount/{name}/ns", None),
        ("spawn", mirror, kinds),
        ("record", f"/run/mirrormount/{name}/guest.json", None),
    ]


# ----------------------------------------------------------------------------- names
GOOD_NAMES = ["a", "Z", "0", "c1", "web-01", "a.b_c-d", "a..", "a-", "9.9",
              "a" + "b" * 62]                       # 63 characters: the longest allowed
BAD_NAMES = ["", "a" + "b" * 63,                      # 64 characters
             "-a", "-", ".", "..", ".hidden", "_a", "/", "a/b", "../c1", "a b", "a\tb",
             "a\n", "\na", "é", "café", "ａ", "١", "c1\x00", "a:b", "a*", "$HOME", "~"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names(name):
    with pytest.raises(UsageError) as err:
        validate_name(name)
    assert err.value.exit_code == EXIT_USAGE == 2
    assert "invalid guest name" in str(err.value)


def test_name_length_boundary():
    assert len(GOOD_NAMES[-1]) == 63 and len(BAD_NAMES[1]) == 64


def test_none_is_not_a_name():
    with pytest.raises(UsageError):
        validate_name(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- kinds
@pytest.mark.parametrize("spec,kinds", [
    (None, set()), ("", set()), ("uts", {"uts"}), ("uts,net", {"uts", "net"}),
    (" pid , ipc ,,", {"pid", "ipc"}), ("uts,ipc,net,pid,cgroup", {"uts", "ipc", "net", "pid",
                                                                 "cgroup"}),
    ("mnt", set()), ("mnt,uts", {"uts"}), ("net,net", {"net"}),
])
def test_parse_kinds(spec, kinds):
    assert parse_kinds(spec) == frozenset(kinds)


@pytest.mark.parametrize("spec", ["user", "uts,bogus", "UTS", "time", "pid;net", "uts net"])
def test_parse_kinds_rejects_unknown(spec):
    with pytest.raises(UsageError) as err:
        parse_kinds(spec)
    assert err.value.exit_code == 2


def test_parse_kinds_names_the_bad_kind():
    with pytest.raises(UsageError, match="bogus"):
        parse_kinds("uts,bogus")


def test_all_kinds_order_mnt_last():
    assert CreateRequest("c").all_kinds == ("mnt",)
    assert CreateRequest("c", hostname="h").all_kinds == ("uts", "mnt")
    assert CreateRequest("c", kinds=frozenset({"pid", "net", "cgroup"})).all_kinds == (
        "net", "pid", "cgroup", "mnt")
    assert CreateRequest("c", hostname="h", kinds=frozenset({"uts"})).all_kinds == ("uts", "mnt")


# ----------------------------------------------------------------------------- plan_create
@pytest.mark.parametrize("fixture", ["private-bare.host", "rshared-bare.host"])
def test_first_create_sets_up_base_state_and_nursery(fixture):
    t = mountinfo_table(fixture)
    assert t.at("/container") is None and not nursery_ready(t)
    assert steps(plan(fixture, "c1")) == BASE_SETUP + NURSERY + guest_steps("c1")


@pytest.mark.parametrize("fixture", ["private-c1.host", "rshared-c1.host", "private-c123.host"])
def test_later_create_reuses_base_state_and_nursery(fixture):
    t = mountinfo_table(fixture)
    assert nursery_ready(t)
    assert steps(plan(fixture, "c9")) == guest_steps("c9")


def test_nursery_only_when_not_ready():
    # BASE and STATE are set up in this capture; pretend the nursery's holder was lost.
    assert steps(plan("private-c1.host", "c9", ready=False)) == NURSERY + guest_steps("c9")


def test_base_mounted_but_not_private_is_fixed_in_place():
    """A BASE that is a mount but shared gets its propagation fixed, not a second tmpfs."""
    t = mountinfo_table("rshared-c1.host")
    mounts = [replace(m, shared=4242, unbindable=False)
              if m.mountpoint == "/container" else m for m in t]
    facts = HostFacts(MountTable.of(mounts), nursery_ready=True)
    got = steps(plan_create(CreateRequest("c9"), LAYOUT, facts))
    assert got == [("propagation", "/container", "private"),
                   ("propagation", "/container", "unbindable")] + guest_steps("c9")


def test_base_private_but_bindable_gets_unbindable():
    t = mountinfo_table("private-c1.host")
    mounts = [replace(m, unbindable=False)
              if m.mountpoint == "/run/mirrormount" else m for m in t]
    got = steps(plan_create(CreateRequest("c9"), LAYOUT, HostFacts(MountTable.of(mounts),
                                                                   nursery_ready=True)))
    assert got[:2] == [("propagation", "/run/mirrormount", "private"),
                       ("propagation", "/run/mirrormount", "unbindable")]
    assert ("tmpfs", "/run/mirrormount", "mirrormount-state") not in got
    assert not [s for s in got if s[1] == "/container"]


@pytest.mark.parametrize("fixture", ["private-bare.host", "rshared-bare.host",
                                     "private-c1.host", "rshared-c1.host"])
def test_mirror_mode_rprivate_then_rshared(fixture):
    got = steps(plan(fixture, "c9"))
    rbind = got.index(("rbind", "/container/c9", "/"))
    rpriv = got.index(("propagation", "/container/c9", "rprivate"))
    rshared = got.index(("propagation", "/container/c9", "rshared"))
    spawn = [i for i, s in enumerate(got) if s[0] == "spawn"]
    assert rbind < rpriv < rshared < spawn[0]
    assert rpriv == rbind + 1 and rshared == rpriv + 1
    # mirror mode never touches the host's own mounts
    assert not [s for s in got if s[0] == "propagation" and not s[1].startswith(
        ("/container", "/run/mirrormount"))]


def test_mirror_host_mode_on_a_private_host_refuses_and_names_the_mount():
    """Ownership: mirror+host never changes the host's propagation. A private host mount
    would silently send nothing, so the plan refuses (exit 2) and names what to share."""
    with pytest.raises(UsageError) as exc:
        plan("private-c1.host", "c9", propagation="mirror+host")
    text = str(exc.value)
    assert "host mount(s) not shared (/, " in text and "mount --make-shared /" in text


def test_mirror_host_names_host_mounts_only_never_mirrors_or_state():
    t = mountinfo_table("private-c1.host")
    named = not_receiving(t, "/", LAYOUT)
    assert named and named[0] == "/"
    assert not [p for p in named if p.startswith(("/container", "/run/mirrormount"))]
    want = {m.mountpoint for m in t if m.shared is None and not m.unbindable
            and t.at(m.mountpoint) is m
            and not m.mountpoint.startswith(("/container", "/run/mirrormount"))}
    assert set(named) == want


def test_mirror_host_accepts_a_host_made_shared_and_names_nothing():
    # captured after c2 was made by an older mirrormount that shared the host's mounts
    assert not_receiving(mountinfo_table("private-c123.host"), "/", LAYOUT) == []


def test_mirror_host_mode_on_an_rshared_host_changes_no_host_mount():
    got = steps(plan("rshared-c1.host", "c9", propagation="mirror+host"))
    assert got == guest_steps("c9", link="rslave")


def test_spawn_carries_kinds_hostname_and_put_old():
    t = mountinfo_table("private-c1.host")
    facts = HostFacts(t, nursery_ready=True, put_old="srv")
    req = CreateRequest("c9", hostname="box", kinds=frozenset({"pid", "net"}))
    spawn = [op for op in plan_create(req, LAYOUT, facts) if isinstance(op, SpawnGuest)]
    assert len(spawn) == 1
    s = spawn[0]
    assert s.kinds == ("uts", "net", "pid", "mnt")
    assert (s.hostname, s.put_old, s.name) == ("box", "srv", "c9")
    assert (s.mirror, s.nursery, s.ns_dir) == ("/container/c9", "/run/mirrormount/.nursery/mnt",
                                               "/run/mirrormount/c9/ns")


def test_rootfs_other_than_slash():
    got = steps(plan("private-c1.host", "c9", rootfs="/srv/root"))
    assert ("rbind", "/container/c9", "/srv/root") in got


@pytest.mark.parametrize("rootfs", ["/container", "/container/c1", "/container/c1/usr",
                                    "/run/mirrormount", "/run/mirrormount/c1"])
def test_rootfs_inside_base_or_state_is_refused(rootfs):
    with pytest.raises(UsageError, match="inside"):
        plan("private-c1.host", "c9", rootfs=rootfs)


@pytest.mark.parametrize("rootfs", ["/containerx", "/run/mirrormount2", "/run"])
def test_rootfs_beside_base_or_state_is_fine(rootfs):
    assert ("rbind", "/container/c9", rootfs) in steps(plan("private-c1.host", "c9",
                                                            rootfs=rootfs))


def test_existing_name_is_refused():
    with pytest.raises(UsageError, match="already exists"):
        plan("private-c1.host", "c1", existing=frozenset({"c1"}))
    # other existing guests do not matter
    assert steps(plan("private-c1.host", "c2", existing=frozenset({"c1"}))) == guest_steps("c2")


def test_bad_name_and_propagation_are_refused_by_the_planner_too():
    with pytest.raises(UsageError, match="invalid guest name"):
        plan("private-c1.host", "../etc")
    with pytest.raises(UsageError, match="propagation"):
        plan("private-c1.host", "c9", propagation="rslave")


def test_planning_touches_nothing(tmp_path):
    layout = Layout(str(tmp_path / "base"), str(tmp_path / "state"))
    ops = plan_create(CreateRequest("c1"), layout,
                      HostFacts(mountinfo_table("private-bare.host")))
    assert ops and ("tmpfs", str(tmp_path / "base"), "mirrormount-base") in steps(ops)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- render
def test_render_is_every_ops_lines_in_order_each_with_its_reason():
    ops = plan("private-bare.host", "c1", hostname="h")
    want = []
    for number, op in enumerate(ops, start=1):
        want.append(f"# step {number}: {op.why}")
        want.extend(op.shell())
    assert render(ops) == "\n".join(want) + "\n"
    assert all(op.why for op in ops)


def test_render_shows_mount_unshare_and_pivot_root_in_apply_order():
    text = render(plan("rshared-bare.host", "c1"))
    commands = [ln for ln in text.splitlines() if not ln.startswith("#")]
    order = [
        "mkdir -p /container",
        "mount -t tmpfs -o mode=0755 mirrormount-base /container",
        "mount --make-private /container",
        "mount --make-unbindable /container",
        "mount -t tmpfs -o mode=0700 mirrormount-state /run/mirrormount",
        "mount --make-private /run/mirrormount",
        "mount --make-unbindable /run/mirrormount",
        "unshare --mount --propagation private",
        "mkdir -p /container/c1",
        "mount --rbind / /container/c1",
        "mount --make-rprivate /container/c1",
        "mount --make-rshared /container/c1",
        "mkdir -p /run/mirrormount/c1/ns",
        "nsenter --mount=/run/mirrormount/.nursery/mnt unshare --mount",
        "mount --bind /proc/$!/ns/mnt /run/mirrormount/c1/ns/mnt",
        "mv /run/mirrormount/c1/guest.json.tmp /run/mirrormount/c1/guest.json",
    ]
    at = [next(i for i, ln in enumerate(commands) if s in ln) for s in order]
    assert at == sorted(at), list(zip(order, at))
    assert "pivot_root . mnt" in text and "pivot_root . old" in text


def test_render_quotes_paths():
    text = render(plan("private-c1.host", "c9", rootfs="/srv/my root"))
    assert "mount --rbind '/srv/my root' /container/c9" in text


def test_render_guest_script_runs_every_step():
    ops = plan("private-c1.host", "c9", hostname="box", kinds=frozenset({"pid"}))
    line = next(ln for op in ops if isinstance(op, SpawnGuest) for ln in op.shell()
                if ln.startswith("nsenter"))
    argv = shlex.split(line)
    script = argv[argv.index("-c") + 1]
    # what sh would actually run: comments dropped, ';' a word of its own
    words = list(shlex.shlex(script, posix=True, punctuation_chars=True))
    for word in ("pivot_root", "hostname", "box", "proc"):
        assert word in words
    # the old root, the put_old self-bind, and (pid namespace) the host's /proc beneath
    assert words.count("umount") == 3


# ----------------------------------------------------------------------------- mount
def mount_plan(target: str, options: str | None, *, bind: bool = False,
               guest_only: bool = False, resolved: str | None = None):
    from mirrormount.guest.mountopts import parse
    from mirrormount.guest.plan import plan_mount
    from mirrormount.guest.state import GuestRecord
    rec = GuestRecord("c1", "/container/c1", "/", ("mnt",))
    source = "/srv/my src" if bind else "scratch"
    return plan_mount(rec, LAYOUT, source, target, None if bind else "tmpfs",
                      parse(options, bind=bind), bind, guest_only, resolved or target)


def test_mount_dry_run_shows_the_mount8_command_with_the_options_as_typed():
    text = render(mount_plan("/tmp/t", "noatime,size=1m,ro"))
    assert "mount -t tmpfs -o noatime,size=1m,ro scratch /container/c1/tmp/t\n" in text
    # how it is really done: the kernel sees every option before anything is attached
    assert "fsopen(tmpfs) + fsconfig(source, ro, size) + fsmount" in text
    text = render(mount_plan("/tmp/t", "ro,noatime", bind=True))
    assert "mount --bind -o ro,noatime '/srv/my src' /container/c1/tmp/t\n" in text
    assert "open_tree(SOURCE, OPEN_TREE_CLONE)" in text and "private" in text
    assert "\nmount -t tmpfs scratch /container/c1/tmp/t\n" in render(mount_plan("/tmp/t", None))


def test_mount_dry_run_shows_where_a_guest_symlink_led():
    text = render(mount_plan("/var/run/x", "ro", resolved="/run/x"))
    assert "mount -t tmpfs -o ro scratch /container/c1/run/x    # typed /var/run/x: a " \
           "symlink in the guest\n" in text
    assert "typed" not in render(mount_plan("var/run/", "ro", resolved="/var/run"))


def test_guest_only_dry_run_shows_the_options_as_typed():
    text = render(mount_plan("/mnt/b", "ro,nodev", bind=True, guest_only=True))
    assert "(mount --bind -o ro,nodev '/srv/my src')" in text
    assert "remember the guest-only path" in text

"""mirrormount.guest.mountopts: mount(8)'s -o text sorted into per-mount attributes
(mount_setattr), superblock flags and filesystem data (fsconfig), options with no effect, and
refusals (exit 2). Pure: no syscalls. Example tests per option class, then hypothesis
properties over random option lists."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrormount.errors import EXIT_USAGE, UsageError
from mirrormount.guest import mountopts
from mirrormount.guest.mountopts import MountOptions, parse, split_options
from mirrormount.kernel import syscalls as sc

RDONLY, NOSUID, NODEV, NOEXEC = (sc.MOUNT_ATTR_RDONLY, sc.MOUNT_ATTR_NOSUID,
                                 sc.MOUNT_ATTR_NODEV, sc.MOUNT_ATTR_NOEXEC)
ATIME = sc.MOUNT_ATTR__ATIME


def refused(text: str, bind: bool = False) -> str:
    with pytest.raises(UsageError) as info:
        parse(text, bind=bind)
    assert info.value.exit_code == EXIT_USAGE
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- nothing typed
@pytest.mark.parametrize("text", [None, "", ",", ",,,"])
def test_nothing_asks_for_nothing(text):
    opts = parse(text)
    assert opts.effect() == (0, 0, (), ())
    assert opts.typed == (text or "") and opts.canonical() == ""


# ----------------------------------------------------------------------------- per-mount flags
@pytest.mark.parametrize("on, off, bit", [
    ("ro", "rw", RDONLY), ("nosuid", "suid", NOSUID), ("nodev", "dev", NODEV),
    ("noexec", "exec", NOEXEC), ("nodiratime", "diratime", sc.MOUNT_ATTR_NODIRATIME),
    ("nosymfollow", "symfollow", sc.MOUNT_ATTR_NOSYMFOLLOW),
])
@pytest.mark.parametrize("bind", [False, True])
def test_per_mount_flags_set_and_clear_their_attribute(on, off, bit, bind):
    assert (parse(on, bind=bind).attr_set, parse(on, bind=bind).attr_clr) == (bit, 0)
    assert (parse(off, bind=bind).attr_set, parse(off, bind=bind).attr_clr) == (0, bit)
    # the last one wins, as in mount(8)
    assert parse(f"{on},{off}", bind=bind).attr_clr == bit
    assert parse(f"{off},{on}", bind=bind).attr_set == bit
    assert parse(f"{off},{on}", bind=bind).fs_params == ()


def test_ro_and_rw_are_also_superblock_flags_of_a_new_filesystem_only():
    # mount(2)'s MS_RDONLY makes both the superblock and the mount read-only; a bind has no
    # superblock of its own to change.
    assert parse("ro").sb_flags == ("ro",) and parse("rw").sb_flags == ("rw",)
    assert parse("ro,rw").sb_flags == ("rw",)
    assert parse("ro", bind=True).sb_flags == () and parse("ro", bind=True).attr_set == RDONLY


def test_the_reported_bind_case_keeps_noatime():
    opts = parse("ro,noatime", bind=True)
    assert opts.attr_set == RDONLY | sc.MOUNT_ATTR_NOATIME and opts.attr_clr == ATIME
    assert opts.atime == "noatime" and opts.fs_params == () and opts.sb_flags == ()


def test_the_reported_tmpfs_case_is_an_attribute_not_filesystem_data():
    opts = parse("noatime")
    assert opts.fs_params == () and opts.atime == "noatime"


# ----------------------------------------------------------------------------- the atime family
@pytest.mark.parametrize("text, mode", [
    ("noatime", "noatime"), ("relatime", "relatime"), ("strictatime", "strictatime"),
    ("atime", "relatime"), ("nostrictatime", "relatime"), ("norelatime", "strictatime"),
    ("noatime,relatime", "relatime"), ("relatime,noatime", "noatime"),
    ("noatime,atime", "relatime"),            # atime undoes noatime
    ("strictatime,atime", "strictatime"),     # ... and nothing else
    ("noatime,nostrictatime", "noatime"), ("strictatime,nostrictatime", "relatime"),
    ("noatime,norelatime", "noatime"), ("relatime,norelatime", "strictatime"),
    ("nodiratime", None), ("ro", None),
])
def test_atime_is_one_setting_and_the_last_word_wins(text, mode):
    for bind in (False, True):
        opts = parse(text, bind=bind)
        assert opts.atime == mode
        if mode is None:
            assert not opts.attr_clr & ATIME and not opts.attr_set & ATIME
        else:
            # mount_setattr(2): the whole field in attr_clr, exactly one mode in attr_set
            assert opts.attr_clr & ATIME == ATIME
            assert opts.attr_set & ATIME == mountopts.ATIME_MODES[mode]


def test_nodiratime_is_separate_from_the_atime_mode():
    opts = parse("noatime,nodiratime")
    assert opts.attr_set == sc.MOUNT_ATTR_NOATIME | sc.MOUNT_ATTR_NODIRATIME


# ----------------------------------------------------------------------------- superblock
@pytest.mark.parametrize("text, want", [
    ("sync", ("sync",)), ("async", ("async",)), ("sync,async", ("async",)),
    ("dirsync", ("dirsync",)), ("lazytime", ("lazytime",)), ("nolazytime", ("nolazytime",)),
    ("mand", ("mand",)), ("nomand", ("nomand",)),
    ("ro,sync,lazytime", ("ro", "sync", "lazytime")),
])
def test_superblock_flags_go_to_fsconfig_one_per_group(text, want):
    opts = parse(text)
    assert opts.sb_flags == want and opts.fs_params == ()


@pytest.mark.parametrize("opt", ["sync", "async", "dirsync", "lazytime", "nolazytime", "mand",
                                 "nomand"])
def test_superblock_flags_are_refused_for_a_bind(opt):
    # A bind shares its source's superblock with every other mount of it; mount(2) would
    # drop the flag without a word.
    message = refused(f"ro,{opt}", bind=True)
    assert f"'{opt}'" in message and "filesystem itself" in message


# ----------------------------------------------------------------------------- no fsconfig key
@pytest.mark.parametrize("bind", [False, True])
def test_silent_and_loud_are_accepted_with_no_effect(bind):
    opts = parse("silent,loud,ro", bind=bind)
    assert opts.ignored == ("silent", "loud") and opts.attr_set == RDONLY
    assert opts.fs_params == ()


@pytest.mark.parametrize("opt", ["iversion", "noiversion"])
def test_iversion_is_refused_rather_than_dropped(opt):
    assert "MS_I_VERSION" in refused(opt)


# ----------------------------------------------------------------------------- propagation
@pytest.mark.parametrize("opt", sorted(mountopts.PROPAGATION))
@pytest.mark.parametrize("bind", [False, True])
def test_propagation_options_are_refused_with_the_reason(opt, bind):
    message = refused(f"ro,{opt}", bind=bind)
    assert f"'{opt}'" in message
    assert "mirrormount owns a guest mount's propagation: it is what makes the mirror" in message


# ----------------------------------------------------------------------------- operations
@pytest.mark.parametrize("opt, why", [("bind", "--bind"), ("rbind", "recursive"),
                                      ("move", "new mount"), ("remount", "new mount"),
                                      ("source=/dev/x", "SOURCE argument")])
def test_operations_are_not_options_here(opt, why):
    assert why in refused(opt)


# ----------------------------------------------------------------------------- userspace only
@pytest.mark.parametrize("opt", ["defaults", "auto", "noauto", "nofail", "_netdev", "nouser",
                                 "nousers", "noowner", "nogroup", "comment=systemd.x",
                                 "x-systemd.automount", "X-fstab-only"])
@pytest.mark.parametrize("bind", [False, True])
def test_userspace_options_without_effect_are_accepted_and_reported(opt, bind):
    opts = parse(f"{opt},nodev", bind=bind)
    assert opts.ignored == (opt,) and opts.attr_set == NODEV
    assert opts.fs_params == () and opts.sb_flags == ()


@pytest.mark.parametrize("opt, why", [
    ("user", "root-only"), ("user=alice", "root-only"), ("users", "root-only"),
    ("owner", "root-only"), ("group", "root-only"), ("loop", "losetup"),
    ("loop=/dev/loop3", "losetup"), ("offset=512", "losetup"), ("sizelimit=1m", "losetup"),
    ("encryption=aes", "losetup"), ("helper=udisks2", "helpers"), ("uhelper=x", "helpers"),
    ("verity.roothash=ab", "dm-verity"), ("X-mount.mkdir", "mount(8) does that"),
    ("X-mount.mode=0755", "mount(8) does that"),
])
def test_userspace_options_with_an_effect_are_refused(opt, why):
    message = refused(opt)
    assert f"'{opt}'" in message and why in message


# ----------------------------------------------------------------------------- filesystem data
def test_the_rest_is_filesystem_data_in_typed_order():
    opts = parse("size=1m,ro,mode=0755,huge=never,nr_inodes=0,inode64,noatime")
    assert opts.fs_params == (("size", "1m"), ("mode", "0755"), ("huge", "never"),
                              ("nr_inodes", "0"), ("inode64", None))
    assert opts.sb_flags == ("ro",) and opts.atime == "noatime"


def test_values_keep_everything_after_the_first_equals_sign_and_quotes_protect_commas():
    opts = parse('context="system_u:object_r:tmp_t:s0:c1,c2",uid=0,opt=a=b')
    assert opts.fs_params == (("context", "system_u:object_r:tmp_t:s0:c1,c2"), ("uid", "0"),
                              ("opt", "a=b"))
    assert split_options('a="x,y",b') == ['a="x,y"', "b"]
    assert "not closed" in refused('a="x,b')


def test_an_empty_name_is_refused():
    assert "no name" in refused("=1m")


@pytest.mark.parametrize("opt", ["size=1m", "mode=0755", "bogus", "errors=remount-ro"])
def test_filesystem_data_with_bind_is_an_unknown_option(opt):
    message = refused(f"ro,{opt}", bind=True)
    assert f"unknown option '{opt}'" in message and "-t TYPE" in message


def test_the_typed_text_is_kept_as_typed():
    text = "ro,,noatime,size=1m,defaults"
    assert parse(text).typed == text
    assert parse(text).canonical() == "ro,noatime,size=1m"


# ----------------------------------------------------------------------------- properties
KNOWN = sorted({*mountopts.PER_MOUNT, *mountopts.ATIME_MODES, *mountopts.ATIME_UNDO,
                *mountopts.SUPERBLOCK, *mountopts.NO_EFFECT_FLAGS,
                *mountopts.USERSPACE_NO_EFFECT})
BIND_KNOWN = [o for o in KNOWN if o not in mountopts.SUPERBLOCK or o in mountopts.PER_MOUNT]
ALL_NAMED = {*KNOWN, *mountopts.PROPAGATION, *mountopts.REFUSED, *mountopts.REFUSED_KEYS}
name = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True).filter(
    lambda n: n not in ALL_NAMED and not n.startswith(("x", "verity")))
value = st.from_regex(r"[A-Za-z0-9:/._+-]{0,12}", fullmatch=True)
fs_param = st.one_of(name, st.tuples(name, value).map(lambda kv: f"{kv[0]}={kv[1]}"))
known = st.sampled_from(KNOWN)


@settings(max_examples=150)
@given(st.lists(st.one_of(known, fs_param), max_size=12))
def test_round_trip_through_the_canonical_text(items):
    opts = parse(",".join(items))
    again = parse(opts.canonical())
    assert again.effect() == opts.effect()
    assert again.canonical() == opts.canonical()


@settings(max_examples=150)
@given(st.lists(st.sampled_from(BIND_KNOWN), max_size=12))
def test_bind_options_round_trip_and_never_touch_the_filesystem(items):
    opts = parse(",".join(items), bind=True)
    assert opts.sb_flags == () and opts.fs_params == ()
    assert parse(opts.canonical(), bind=True).effect() == opts.effect()


@settings(max_examples=150)
@given(st.lists(st.one_of(known, fs_param), max_size=12))
def test_known_names_never_reach_the_filesystem_and_attributes_are_consistent(items):
    opts = parse(",".join(items))
    assert not {k for k, _ in opts.fs_params} & set(KNOWN)
    assert opts.attr_set & opts.attr_clr & ~ATIME == 0          # never set and cleared
    if opts.attr_set & ATIME:                                    # a mode needs the mask
        assert opts.attr_clr & ATIME == ATIME
    assert opts.attr_set & ATIME in mountopts.ATIME_MODES.values()
    # the filesystem data is exactly the unknown names, in typed order
    assert [k for k, _ in opts.fs_params] == [i.split("=", 1)[0] for i in items
                                              if i.split("=", 1)[0] not in KNOWN]


@settings(max_examples=150)
@given(st.lists(st.one_of(known, fs_param), max_size=8), fs_param,
       st.lists(st.sampled_from(BIND_KNOWN), max_size=4))
def test_an_unknown_option_with_bind_is_refused(before, unknown, after):
    with pytest.raises(UsageError, match="unknown option"):
        parse(",".join([*[o for o in before if o in BIND_KNOWN], unknown, *after]), bind=True)


@settings(max_examples=150)
@given(st.text(max_size=40), st.booleans())
def test_any_text_parses_or_is_refused_as_bad_input(text, bind):
    try:
        opts = parse(text, bind=bind)
    except UsageError as exc:
        assert exc.exit_code == EXIT_USAGE
        return
    assert isinstance(opts, MountOptions) and opts.typed == text


@settings(max_examples=100)
@given(st.lists(st.sampled_from(sorted(mountopts.PROPAGATION | set(mountopts.REFUSED))),
                min_size=1, max_size=3), st.lists(known, max_size=4), st.booleans())
def test_a_refused_option_anywhere_refuses_the_whole_list(bad, good, bind):
    with pytest.raises(UsageError):
        parse(",".join([*good, *bad]), bind=bind)

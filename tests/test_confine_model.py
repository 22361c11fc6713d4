"""--confine and --drop-caps: validated once in model.py (exit 2 on bad input, nothing
changed), carried by the plan into the guest's spawn and record, read back from records
(old ones included), taken from recipes, and the seccomp filter's rules as libseccomp
compiles them (exported as text, never loaded here)."""
from __future__ import annotations

import tempfile

import pytest
from typer.testing import CliRunner

from fixture_files import mountinfo_table
from mirrormount.cli import app
from mirrormount.errors import EXIT_USAGE, UsageError
from mirrormount.guest.model import (CAPABILITIES, CreateRequest, Layout, cap_numbers,
                                     parse_caps, validate_caps, validate_confine)
from mirrormount.guest.ops import SpawnGuest, WriteRecord, render
from mirrormount.guest.plan import HostFacts, plan_create
from mirrormount.guest.recipe import parse_recipe
from mirrormount.guest.state import GuestRecord


def test_confine_modes():
    assert validate_confine(None) == "mirror" == CreateRequest("c1").confine
    assert validate_confine("none") == "none"
    with pytest.raises(UsageError) as err:
        validate_confine("strict")
    assert err.value.exit_code == EXIT_USAGE and "mirror or none" in str(err.value)


@pytest.mark.parametrize("spec,caps", [
    ("sys_admin", ("sys_admin",)),
    ("CAP_SYS_ADMIN", ("sys_admin",)),
    ("net_raw,Sys_Admin,sys_admin", ("net_raw", "sys_admin")),   # number order, once each
    (" mknod , chown ", ("chown", "mknod")),
    ("", ()),
    (None, ()),
])
def test_capability_names(spec, caps):
    assert parse_caps(spec) == caps


@pytest.mark.parametrize("spec", ["sys_admn", "sys_admin,bogus", "cap_", "21", "all"])
def test_unknown_capabilities_are_usage_errors(spec):
    with pytest.raises(UsageError) as err:
        parse_caps(spec)
    assert "unknown capability" in str(err.value) and "\n" not in str(err.value)


def test_capability_numbers_are_the_kernels():
    # include/uapi/linux/capability.h
    assert (CAPABILITIES["sys_admin"], CAPABILITIES["setpcap"], CAPABILITIES["net_raw"],
            CAPABILITIES["checkpoint_restore"]) == (21, 8, 13, 40)
    assert sorted(CAPABILITIES.values()) == list(range(41))
    assert cap_numbers(["sys_admin", "chown"]) == [0, 21]
    with pytest.raises(UsageError):
        validate_caps("sys_admin")          # a string is not a list of names


def test_the_plan_carries_confinement_into_the_spawn_and_the_record():
    t = mountinfo_table("private-c1.host")
    req = CreateRequest("c9", kinds=frozenset({"pid"}), confine="mirror",
                        drop_caps=("sys_admin",))
    ops = plan_create(req, Layout(), HostFacts(t, frozenset(), True))
    spawn = next(op for op in ops if isinstance(op, SpawnGuest))
    assert (spawn.confine, spawn.drop_caps) == ("mirror", ("sys_admin",))
    record = [op for op in ops if isinstance(op, WriteRecord)][-1].record
    assert (record["confine"], record["drop_caps"]) == ("mirror", ["sys_admin"])
    text = render(ops)
    assert "seccomp refuses mount(2) with MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE" in text
    assert "setpriv --bounding-set -sys_admin" in text
    with pytest.raises(UsageError):
        plan_create(CreateRequest("c9", confine="strict"), Layout(),
                    HostFacts(t, frozenset(), True))


def test_records_keep_confinement_and_old_records_read_as_none():
    rec = GuestRecord("c1", "/container/c1", "/", ("mnt",), confine="mirror",
                      drop_caps=("net_raw", "sys_admin"))
    assert GuestRecord.from_json(rec.to_json()) == rec
    old = {"name": "c1", "mirror": "/container/c1", "rootfs": "/", "kinds": ["mnt"]}
    back = GuestRecord.from_json(old)
    assert (back.confine, back.drop_caps) == ("none", ())   # its reaper ran unconfined


def test_recipe_keys():
    r = parse_recipe('[guest]\nconfine = "none"\ndrop_caps = ["CAP_NET_RAW", "sys_admin"]\n')
    assert (r.confine, r.drop_caps) == ("none", ("net_raw", "sys_admin"))
    req = r.request("c1")
    assert (req.confine, req.drop_caps) == ("none", ("net_raw", "sys_admin"))
    assert (parse_recipe("").confine, parse_recipe("").drop_caps) == ("mirror", ())


@pytest.mark.parametrize("text,words", [
    ('[guest]\nconfine = "strict"\n', "[guest]: confine: unknown confinement strict"),
    ("[guest]\nconfine = 1\n", "confine must be a string"),
    ('[guest]\ndrop_caps = "sys_admin"\n', "drop_caps must be a list of strings"),
    ('[guest]\ndrop_caps = ["sys_admn"]\n', "[guest]: drop_caps: unknown capability sys_admn"),
])
def test_bad_recipe_confinement_is_a_usage_error(text, words):
    with pytest.raises(UsageError) as err:
        parse_recipe(text)
    assert words in str(err.value)


@pytest.mark.parametrize("args,words", [
    (["--confine", "strict"], "unknown confinement strict"),
    (["--drop-caps", "sys_admin,bogus"], "unknown capability bogus"),
    (["--recipe", "/dev/null", "--confine", "none"], "either --recipe"),
])
def test_cli_refuses_bad_confinement_before_anything(tmp_path, args, words):
    state = ["--base", str(tmp_path / "b"), "--state", str(tmp_path / "s")]
    r = CliRunner().invoke(app, [*state, "create", "c1", *args])
    assert r.exit_code == 2 and words in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists() and not (tmp_path / "s").exists()


def test_the_filter_refuses_what_cuts_a_mirror_and_nothing_else():
    from mirrormount.kernel import confine
    from mirrormount.kernel import syscalls as sc
    with tempfile.TemporaryFile("w+") as f:
        confine.build_filter().export_pfc(f)
        f.seek(0)
        pfc = f.read()
    native = pfc.split("# filter for arch")[1]
    for bit in (sc.MS_PRIVATE, sc.MS_SLAVE, sc.MS_UNBINDABLE):
        # the bit set and no MS_MGC_VAL magic (bit 31): EPERM
        assert f"& 0x{bit | sc.MS_NOUSER:08x} == {bit})\n        action ERRNO(1);" in native
    assert f"0x{sc.MS_SHARED:08x}" not in pfc          # make-shared stays allowed
    assert 'syscall "mount_setattr"' in native and "ERRNO(38)" in native   # ENOSYS
    assert 'syscall "open_by_handle_at"' in native
    assert "# default action\n  action ALLOW;" in native
    # 32-bit programs are filtered too, not killed for their architecture
    if sc.MACHINE == "x86_64":
        assert "filter for arch x86 " in pfc and "filter for arch x32 " in pfc

"""cli/columns.py, the one renderer of util-linux style output (list, busy, busy --all, ps):
column selection (-o), unknown columns (exit 2, naming the valid ones), --sort, table and
raw (-r) forms, no headings (-n), and the escaping of each form. Then the same through the
real `list` and `busy --all` commands, on records made here."""
from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.cli.columns import Column, Columns, raw_escape, safe
from mirrormount.errors import UsageError
from mirrormount.guest.reports import GuestInfo

COLS = Columns([Column("NAME", "the name"), Column("PID", "a pid", numeric=True),
                Column("PATH", "a path")], default=["NAME", "PATH"])
ROWS = [{"NAME": "b", "PID": 10, "PATH": "/srv/a b"},
        {"NAME": "a", "PID": 9, "PATH": "/x"},
        {"NAME": "c", "PID": None, "PATH": ""}]


def test_default_columns_and_alignment():
    assert COLS.render(ROWS).splitlines() == [
        "NAME  PATH",
        "b     /srv/a b",
        "a     /x",
        "c     -"]


def test_numeric_columns_are_right_aligned_and_missing_values_are_a_dash():
    assert COLS.render(ROWS, "PID,NAME").splitlines() == [
        "PID  NAME",
        " 10  b",
        "  9  a",
        "  -  c"]


def test_output_picks_columns_in_the_order_given_in_any_case():
    assert COLS.render(ROWS, "path,Name").splitlines()[0].split() == ["PATH", "NAME"]


def test_plus_adds_to_the_defaults():
    assert COLS.render(ROWS, "+PID").splitlines()[0].split() == ["NAME", "PATH", "PID"]


@pytest.mark.parametrize("output", ["NAME,BOGUS", "", ","])
def test_unknown_or_no_column_is_a_usage_error_naming_the_valid_ones(output):
    with pytest.raises(UsageError) as exc:
        COLS.render(ROWS, output)
    assert "NAME,PID,PATH" in str(exc.value)
    assert exc.value.exit_code == 2


def test_sort_unknown_column():
    with pytest.raises(UsageError, match="--sort: unknown column 'X'"):
        COLS.render(ROWS, sort="X")


def test_sort_numeric_as_numbers_missing_last():
    out = COLS.render(ROWS, "PID", sort="pid", headings=False).split("\n")
    assert [s.strip() for s in out] == ["9", "10", "-"]


def test_sort_text_is_stable():
    rows = [{"NAME": "x", "PATH": "2"}, {"NAME": "x", "PATH": "1"}, {"NAME": "a", "PATH": "3"}]
    assert COLS.render(rows, "PATH", sort="NAME", headings=False).split("\n") == ["3", "2",
                                                                                   "1"]


def test_noheadings():
    assert COLS.render(ROWS, headings=False).splitlines() == ["b  /srv/a b", "a  /x", "c  -"]


def test_no_rows_no_headings_is_empty():
    assert COLS.render([], headings=False) == ""
    assert COLS.render([]) == "NAME  PATH"


def test_raw_is_one_record_a_line_with_single_spaces():
    assert COLS.render(ROWS, "NAME,PID,PATH", raw=True).split("\n") == [
        "NAME PID PATH",
        "b 10 /srv/a\\x20b",
        "a 9 /x",
        "c - -"]
    assert COLS.render(ROWS, raw=True, headings=False).split("\n")[0] == "b /srv/a\\x20b"


def test_raw_fields_split_like_awk_even_with_hostile_names():
    hostile = "/mnt/a b\tc\nhost 1 2\\d"
    line = COLS.render([{"NAME": "n", "PATH": hostile}], raw=True, headings=False)
    assert "\n" not in line and len(line.split()) == 2


@pytest.mark.parametrize("text, want", [
    ("a b", "a\\x20b"),            # blank: space
    ("a\tb", "a\\x09b"),           # blank: tab
    ("a\\b", "a\\x5cb"),           # the escape character itself
    ("a\nb", "a\\x0ab"),           # control characters
    ("\x7f", "\\x7f"),
    ("é", "\\xc3\\xa9"),           # UTF-8: each byte, as fputs_nonblank in any locale
    ("~!\"#$%&'()*+,-./:;<=>?@[]^_`{|}", "~!\"#$%&'()*+,-./:;<=>?@[]^_`{|}"),
])
def test_raw_escape_as_util_linux_fputs_nonblank(text, want):
    assert raw_escape(text) == want


def test_raw_escape_undecodable_bytes_are_the_file_systems():
    name = os.fsdecode(b"/mnt/\xff\xfe")        # a file name that is not UTF-8
    assert raw_escape(name) == "/mnt/\\xff\\xfe"


def test_table_escapes_control_characters_and_backslashes_keeps_spaces():
    assert safe("/a b\n\\x\t") == "/a b\\012\\134x\\011"
    out = COLS.render([{"NAME": "n", "PATH": "/x\nforged line"}], headings=False)
    assert out == "n  /x\\012forged line"


def test_lists_are_joined_with_commas():
    assert COLS.render([{"NAME": ["a", "b"], "PATH": []}], headings=False) == "a,b  -"


def test_epilog_lists_every_column_and_the_defaults():
    text = COLS.epilog()
    assert text.startswith("\b\nAvailable output columns:")
    for c in ("NAME", "PID", "PATH"):
        assert f"  {c}" in text
    assert text.endswith("Default: -o NAME,PATH")


# ----------------------------------------------------------------------------- the commands
def _info(name: str, pids: list[int], rootfs: str = "/") -> GuestInfo:
    return GuestInfo(name=name, mirror=f"/container/{name}", rootfs=rootfs, state="running",
                     namespaces={"mnt": "mnt:[1]", "uts": "uts:[2]"}, pids=pids)


@pytest.fixture
def listed(monkeypatch):
    import mirrormount.guest.guests as g
    infos = [_info("web", [300]), _info("db", [42, 43], rootfs="/srv/my root")]
    monkeypatch.setattr(g.Guests, "list_all", lambda self: infos)

    def run(*args):
        return CliRunner().invoke(app, ["list", *args])
    return run


def test_list_default_table(listed):
    r = listed()
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "MIRROR", "ROOTFS", "PROPAGATION", "NS",
                                "PIDS"]
    assert lines[1].split() == ["web", "running", "/container/web", "/", "mirror",
                                "mnt,uts", "300"]


def test_list_output_noheadings_raw_sort(listed):
    r = listed("-o", "NAME,ROOTFS,PIDS", "-n", "-r", "--sort", "NAME")
    assert r.exit_code == 0
    assert r.stdout == "db /srv/my\\x20root 42,43\nweb / 300\n"


def test_list_long_options(listed):
    r = listed("--output", "NAME", "--noheadings", "--raw")
    assert r.stdout == "web\ndb\n"


def test_list_unknown_column_exits_2_with_one_line(listed):
    r = listed("-o", "NAME,SIZE")
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "unknown column 'SIZE'" in r.stderr
    assert "NAME,STATE,MIRROR" in r.stderr


def test_list_json_wins_over_columns(listed):
    r = listed("-J", "-o", "NAME")
    assert r.exit_code == 0 and r.stdout.lstrip().startswith("[")


def test_busy_all_bad_column_exits_2_before_any_scan(monkeypatch):
    import mirrormount.busy.finder as finder

    def no_scan(*a, **k):
        raise AssertionError("scanned with a bad -o")
    monkeypatch.setattr(finder, "audit_all", no_scan)
    r = CliRunner().invoke(app, ["busy", "--all", "-o", "PID,NOPE"])
    assert r.exit_code == 2 and "unknown column 'NOPE'" in r.stderr
    r = CliRunner().invoke(app, ["busy", "--all", "--sort", "NOPE"])
    assert r.exit_code == 2 and "--sort" in r.stderr

"""busy's text and --json list a report's copies and pins in one order (report.copy_order,
the judge's PIN_KINDS order), whichever path renders them: cli/busyview.render_report (the
typer command and the fast path), the -o rows, busy --all, and to_json.

Once `busy c1:/mnt/x` (JSON) put the guest's copy first and `busy /container/c1/mnt/x` (text)
the host's: the judge put the asked-about copy first. Now the report sorts its copies itself.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mirrormount.busy import finder
from mirrormount.busy.report import HOST, BusyReport, Copy, Pin, copy_order
from mirrormount.cli import fastpath
from mirrormount.cli.busyview import render_report
from mirrormount.cli import app
from test_finder import M_GUEST, M_HOST, guest_target, judge  # noqa: F401 (judge: fixture)

GUEST_COPY = Copy("mnt:[4026532300]", "c1", "/mnt/x", 501)
HOST_COPY = Copy("mnt:[4026531841]", HOST, "/container/c1/mnt/x", 400)
LEAKED = Copy("mnt:[4026532999]", HOST, "/container/c1/mnt/x", 650)     # someone's unshare
OTHER_GUEST = Copy("mnt:[4026532400]", "a2", "/srv/x", 700)
PINS = (Pin("cwd", 4242, 4242, "bash", "admin", HOST, "/container/c1/mnt/x", "mnt:[4026531841]"),
        Pin("fd", 77, 3, "vim", "root", "c1", "/mnt/x/notes.txt", "mnt:[4026532300]"),
        Pin("submount", None, None, None, None, "c1", "/mnt/x/sub", "mnt:[4026532300]"))


def report(copies: tuple[Copy, ...], target: str = "c1:/mnt/x",
           pins: tuple[Pin, ...] = PINS) -> BusyReport:
    return BusyReport(target, bool(pins), {"majmin": "7:0", "fstype": "ext4"}, copies, pins, 0)


def table(text: str, header: str) -> list[str]:
    """The rows of the table of render_report whose header line starts with `header`."""
    lines = text.split("\n")
    start = lines.index(next(ln for ln in lines if ln.startswith(header)))
    rows = []
    for ln in lines[start + 1:]:
        if not ln:
            break
        rows.append(ln)
    return rows


def text_copies(text: str) -> list[tuple]:
    """The copies table of render_report: (namespace, guest, mount_id, path) rows."""
    return [(ns, guest, int(mid), path)
            for ns, guest, mid, path in (ln.split(maxsplit=3) for ln in table(text, "NAMESPACE "))]


def text_pins(text: str) -> list[str]:
    """The pins table of render_report: the HOW of each row, in order."""
    return [ln.split()[0] for ln in table(text, "HOW ")]


def json_copies(js: dict) -> list[tuple]:
    return [(c["namespace"], c["guest"], c["mount_id"], c["path"]) for c in js["copies"]]


# ---------------------------------------------------------------------------- the order
def test_text_and_json_list_copies_alike_host_first():
    # as the judge built it for `busy c1:/mnt/x`: the asked-about guest copy first
    rep = report((GUEST_COPY, OTHER_GUEST, HOST_COPY, LEAKED))
    from_text = text_copies(render_report(rep))
    from_json = json_copies(rep.to_json())
    assert from_text == from_json
    assert [m for _, _, m, _ in from_json] == [400, 650, 700, 501]   # host, then a2, c1


@pytest.mark.parametrize("found", [
    (GUEST_COPY, HOST_COPY, LEAKED),          # busy c1:/mnt/x
    (HOST_COPY, LEAKED, GUEST_COPY),          # busy /container/c1/mnt/x
    (HOST_COPY, GUEST_COPY, LEAKED),          # busy /dev/loop0
])
def test_copies_order_does_not_depend_on_the_target(found):
    rep = report(found)
    want = [(c.namespace, c.guest, c.mount_id, c.path) for c in (HOST_COPY, LEAKED, GUEST_COPY)]
    assert json_copies(rep.to_json()) == want
    assert text_copies(render_report(rep)) == want
    assert list(rep.copies) == sorted(found, key=copy_order)


def test_judge_reports_one_order_for_either_spelling_of_the_target(judge):  # noqa: F811
    as_guest = judge().report(guest_target())
    as_host = judge().report(guest_target(spec="/container/c1/mnt/x", mount_id=M_HOST))
    assert [c.mount_id for c in as_guest.copies] == [c.mount_id for c in as_host.copies]
    assert as_guest.copies[0].mount_id == M_HOST and as_guest.copies[-1].mount_id == M_GUEST
    assert json_copies(as_guest.to_json()) == text_copies(render_report(as_guest))


def test_text_and_json_list_pins_alike():
    rep = report((GUEST_COPY, HOST_COPY))
    text = render_report(rep)
    js = rep.to_json()
    assert text_pins(text) == [p["how"] for p in js["pins"]] == ["cwd", "fd", "submount"]
    sentences = [ln for ln in text.split("\n") if ln.startswith("- ")]
    assert [s.split()[1:3] for s in sentences][:2] == [["host", "process"], ["process", "77"]]


# ------------------------------------------------------------------ through the commands
@pytest.fixture
def found(monkeypatch):
    """busy's scans replaced by constructed reports (the CLI imports them from finder at
    call time, so patching the module is enough)."""
    one = report((GUEST_COPY, HOST_COPY, LEAKED))
    two = report((OTHER_GUEST,), target="a2:/srv/x",
                 pins=(Pin("mmap", 88, 9, "python3", "root", "a2", "/srv/x/lib.so",
                           "mnt:[4026532400]"),))
    monkeypatch.setattr(finder, "find_pins", lambda target, layout: one)
    monkeypatch.setattr(finder, "audit_all", lambda layout: [one, two])
    import mirrormount.guest.mounting as mounting
    monkeypatch.setattr(mounting, "require_root", lambda what: None)
    return one, two


def _invoke(*argv: str) -> str:
    r = CliRunner().invoke(app, list(argv))
    assert r.exit_code == 3, r.output
    return r.stdout


def test_busy_command_text_and_json_agree(found, tmp_path):
    text = _invoke("busy", "c1:/mnt/x")
    js = json.loads(_invoke("busy", "c1:/mnt/x", "--json"))
    assert text_copies(text) == json_copies(js)
    assert text_pins(text) == [p["how"] for p in js["pins"]]
    assert js["copies"][0]["guest"] == HOST


def test_fast_path_text_and_json_agree(found, tmp_path, capsys):
    assert fastpath._busy(str(tmp_path / "b"), str(tmp_path / "s"), "c1:/mnt/x", False) == 3
    text = capsys.readouterr().out
    assert fastpath._busy(str(tmp_path / "b"), str(tmp_path / "s"), "c1:/mnt/x", True) == 3
    js = json.loads(capsys.readouterr().out)
    assert text_copies(text) == json_copies(js)
    assert text_pins(text) == [p["how"] for p in js["pins"]]
    # and the same as the typer command prints
    assert text.rstrip("\n") == _invoke("busy", "c1:/mnt/x").rstrip("\n")


def test_busy_all_text_rows_follow_the_json(found):
    text = _invoke("busy", "--all", "-r", "-o", "TARGET,HOW,PID")
    js = json.loads(_invoke("busy", "--all", "--json"))
    rows = [ln.split() for ln in text.strip().split("\n")[1:]]
    assert rows == [[r["target"], p["how"], str(p["pid"]) if p["pid"] is not None else "-"]
                    for r in js for p in r["pins"]]
    assert [[c["guest"] for c in r["copies"]] for r in js] == [[HOST, HOST, "c1"], ["a2"]]

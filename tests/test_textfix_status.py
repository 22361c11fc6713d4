"""status NAME without --json says everything status --json says: the guest-only mounts
(once only in the JSON and in list -o GUEST_ONLY) and the propagation mode among them.
Checked on constructed StatusReports, through cli/statusview.render_status and the command.
"""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.cli.statusview import TEXT_KEYS, render_status
from mirrormount.guest.guests import Guests
from mirrormount.guest.health import Health
from mirrormount.guest.reports import GuestInfo, StatusReport


def status(guest_only: list[str] | None = None, **info) -> StatusReport:
    gi = GuestInfo("c1", "/container/c1", "/srv/c1", info.pop("state", "running"),
                   {"mnt": "mnt:[4026532300]"}, [4242], guest_only=guest_only or [], **info)
    return StatusReport("c1", "/container/c1", Health(True, 7, 7, ()), gi)


def labels(text: str) -> list[str]:
    return [ln.split(":", 1)[0] for ln in text.split("\n")]


def test_guest_only_mounts_have_a_line_each():
    text = render_status(status(["/mnt/x", "/srv/a,b"]))
    assert "guest_only:    /mnt/x" in text.split("\n")
    assert "guest_only:    /srv/a,b" in text.split("\n")         # a comma stays in its line
    assert labels(text).count("guest_only") == 2


def test_no_guest_only_line_without_guest_only_mounts():
    assert "guest_only" not in labels(render_status(status()))


def test_a_newline_in_a_guest_only_path_cannot_forge_a_line():
    text = render_status(status(["/mnt/x\nproblem:       fake"]))
    assert "problem" not in labels(text)
    assert "guest_only:    /mnt/x\\012problem:       fake" in text.split("\n")


def test_propagation_has_its_line():
    assert "propagation:   mirror+host" in render_status(status(propagation="mirror+host"))
    assert "propagation:   mirror" in render_status(status()).split("\n")


def test_the_whole_text_of_a_full_report():
    rep = StatusReport("c1", "/container/c1", Health(False, 7, 6, ("mirror is gone",)),
                       GuestInfo("c1", "/container/c1", "/srv/c1", "broken", {}, [],
                                 propagation="mirror", guest_only=["/mnt/x"],
                                 confine="mirror", drop_caps=["sys_admin"],
                                 init=["/sbin/init", "a b"], joins={"net": "c2"},
                                 joined_by={"c3": ["uts", "ipc"]}))
    assert render_status(rep) == (
        "name:          c1\n"
        "mirror:        /container/c1\n"
        "state:         broken\n"
        "mirror_intact: NO\n"
        "mounts:        7 on the host, 6 in the guest\n"
        "propagation:   mirror\n"
        "guest_only:    /mnt/x\n"
        "confine:       mirror (capabilities dropped: sys_admin)\n"
        "init:          /sbin/init 'a b'\n"
        "joins:         net of c2\n"
        "joined by:     c3 (uts,ipc)\n"
        "problem:       mirror is gone")


# ------------------------------------------------------- every JSON key has its text line
FULL = StatusReport("c1", "/container/c1", Health(True, 3, 4, ("p1",)),
                    GuestInfo("c1", "/container/c1", "/srv/c1", "running", {}, [1],
                              propagation="mirror+host", guest_only=["/mnt/g"],
                              confine="mirror", drop_caps=["sys_admin"], init=["/init"],
                              joins={"net": "c2"}, joined_by={"c3": ["net"]}))


def test_every_status_json_key_has_a_text_line():
    # A key added to StatusReport.to_json without a line in the text fails here.
    assert set(FULL.to_json()) == set(TEXT_KEYS)
    shown = labels(render_status(FULL))
    assert {TEXT_KEYS[k] for k in FULL.to_json()} <= set(shown)


@pytest.mark.parametrize("key", sorted(TEXT_KEYS))
def test_each_json_value_is_in_the_text(key):
    text = render_status(FULL)
    lines = [ln for ln in text.split("\n") if ln.split(":", 1)[0] == TEXT_KEYS[key]]
    value = FULL.to_json()[key]
    words = {"mirror_intact": ["yes"], "mounts_host": ["3 on the host"],
             "mounts_guest": ["4 in the guest"], "joins": ["net of c2"],
             "joined_by": ["c3 (net)"]}.get(key)
    if words is None:
        words = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for w in words:
        assert any(w in ln for ln in lines), (key, w, lines)


# ------------------------------------------------------------------- through the command
def test_status_command_prints_guest_only_mounts(monkeypatch):
    rep = status(["/mnt/x", "/mnt/y"])
    monkeypatch.setattr(Guests, "status", lambda self, name: rep)
    text = CliRunner().invoke(app, ["status", "c1"])
    assert text.exit_code == 0, text.output
    js = json.loads(CliRunner().invoke(app, ["status", "c1", "--json"]).stdout)
    assert [ln.split(None, 1)[1] for ln in text.stdout.split("\n")
            if ln.startswith("guest_only:")] == js["guest_only"] == ["/mnt/x", "/mnt/y"]
    assert text.stdout.rstrip("\n") == render_status(rep)

"""Two classes of input a new user's trial found: a duration option (every one, in one
wording) takes a finite number of seconds, 0 or more; and a batch (create A B, destroy A B)
that a stop ends after a name was complete says what was done (signals.cut_short)."""
from __future__ import annotations

import errno

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.cli.common import _reported
from mirrormount.errors import PartlyDone
from mirrormount.kernel import signals

DURATIONS = [
    (["destroy", "c1", "--grace"], "--grace"),
    (["umount", "c1", "/x", "--wait"], "--wait"),
    (["stop", "c1", "--timeout"], "--timeout"),
    (["watch", "--timeout"], "--timeout"),
    (["watch", "--mounts", "--timeout"], "--timeout"),
]


@pytest.mark.parametrize("argv,option", DURATIONS, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else a)
@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf", "-inf"])
def test_every_duration_option_refuses_what_is_no_duration(argv, option, value):
    r = CliRunner().invoke(app, [*argv, value], prog_name="mirrormount")
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stderr == f"mirrormount: {option} must be 0 or more seconds\n"


def test_stop_arriving_after_the_last_name_says_what_was_done():
    stop = signals.Stopped(2)
    ended = signals.cut_short("create", stop, ["k1"], [])
    assert isinstance(ended, PartlyDone) and ended.cause is stop
    exit_ = _reported(ended)
    assert getattr(exit_, "exit_code", None) == 130


def test_batch_ends_by_kind():
    err = OSError(errno.EIO, "x")
    assert signals.cut_short("create", err, [], ["a"]) is err          # nothing done
    assert signals.cut_short("create", err, ["a"], []) is err          # the last one's error
    sysexit = SystemExit(1)
    assert signals.cut_short("destroy", sysexit, ["a"], ["b"]) is sysexit
    mid = signals.cut_short("destroy", err, ["a"], ["b", "c"])
    assert isinstance(mid, PartlyDone)
    assert mid.tail == "destroyed: a; not destroyed: b c"
    late = signals.cut_short("destroy", KeyboardInterrupt(), ["a", "b"], [])
    assert isinstance(late, PartlyDone) and late.tail == "destroyed: a b"


def test_the_late_stop_line(capsys):
    _reported(signals.cut_short("create", signals.Stopped(2), ["k1"], []))
    assert capsys.readouterr().err == "mirrormount: interrupted; created: k1\n"

"""Every usage error click finds is said as util-linux says one (cli/common.py
_show_usage_error): `mirrormount: MESSAGE` on one line, then where help is, exit 2; never
click's four-line synopsis, and a mistyped command's suggestion said once."""
from __future__ import annotations

import click
import pytest
from typer.testing import CliRunner

from mirrormount.cli import app

# Each kind of click usage error: missing argument, missing value, bad type, bad choice,
# unknown option, unknown command, extra argument.
CASES = [
    ["status"],
    ["umount", "c1"],
    ["umount", "c1", "/x", "--wait", "abc"],
    ["destroy", "c1", "--grace", "abc"],
    ["completion"],
    ["completion", "tcsh"],
    ["list", "--bogus"],
    ["bogus"],
    ["busy"],
    ["create", "c1", "--ns"],
    ["exec"],
    ["stop", "c1", "--timeout", "x"],
    ["systemd-unit", "--stop-timeout", "abc"],
    ["graph", "--format", "png"],
    ["status", "c1", "c2"],
    ["graph", "--format", "dot", "--json"],
    ["-J", "graph", "--format", "text"],
]


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a))
def test_a_usage_error_is_one_line_and_a_pointer_to_help(argv):
    r = CliRunner().invoke(app, argv, prog_name="mirrormount")
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.splitlines()
    # click's errors add where help is; mirrormount's own (cli/common.reports_errors) are
    # one line already.
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("mirrormount: ") and "Usage:" not in r.stderr, lines
    assert lines[1:] in ([], [f"Try 'mirrormount {argv[0]} --help' for more information."],
                         ["Try 'mirrormount --help' for more information."]), lines
    assert r.stdout == ""


def test_a_mistyped_command_is_suggested_once():
    r = CliRunner().invoke(app, ["bsy"], prog_name="mirrormount")
    assert r.exit_code == 2
    assert r.stderr.count("Did you mean") == 1, r.stderr


def test_the_hook_is_on_the_base_of_every_click_usage_error():
    for cls in (click.BadParameter, click.MissingParameter, click.NoSuchOption,
                click.BadOptionUsage, click.BadArgumentUsage):
        assert cls.show is click.UsageError.show

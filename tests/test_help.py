"""Help as util-linux prints it, for every command of the click tree typer builds (so a
command added later is checked too): -h is --help, no stray escapes (typer's rich escape of
"[default: ...]"), every argument's help shown, -V is --version, and -J/--json accepted
before and after the command on every command that prints."""
from __future__ import annotations

import click
import pytest
import typer.main
from typer.testing import CliRunner

from mirrormount import __version__
from mirrormount.cli import app

GROUP = typer.main.get_command(app)
assert isinstance(GROUP, click.Group)
CTX = click.Context(GROUP, info_name="mirrormount")
COMMANDS = [n for n in GROUP.list_commands(CTX)]
# Commands that print nothing of their own to parse: exec/enter are the guest command's
# output, demo a tour for people, completion a shell script.
SILENT = {"exec", "enter", "demo", "completion"}


def help_of(*args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--help"])
    assert r.exit_code == 0, r.output
    return r.stdout


def test_there_are_commands():
    assert {"create", "list", "status", "busy", "completion"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_dash_h_is_help(command):
    args = [command] if command else []
    r = CliRunner().invoke(app, [*args, "-h"])
    assert r.exit_code == 0
    assert r.stdout == help_of(*args)
    assert "-h, --help" in r.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_stray_escapes(command):
    text = help_of(*([command] if command else []))
    assert "\\[" not in text
    assert "\\]" not in text


def test_defaults_and_env_vars_are_shown_plainly():
    assert "[default: 5.0]" in help_of("destroy")
    assert "[env var: MIRRORMOUNT_BASE; default:" in " ".join(help_of().split())


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_has_its_help_shown(command):
    cmd = GROUP.get_command(CTX, command)
    assert cmd is not None
    text = " ".join(help_of(command).split())
    for param in cmd.params:
        if isinstance(param, click.Argument):
            metavar = param.make_metavar(click.Context(cmd, info_name=command))
            section = text.split("Arguments:")[1].split("Options:")[0]
            assert metavar in section
            after = section.split(metavar, 1)[1].strip()
            assert after and not after.startswith("["), f"{command} {metavar}: no help"


def test_busy_target_forms_are_shown():
    text = " ".join(help_of("busy").split())
    assert "A host path, NAME:GUESTPATH, a device node (/dev/loop0) or MAJ:MIN." in text


def test_column_commands_list_their_columns():
    for command in ("list", "busy"):
        text = help_of(command)
        assert "Available output columns:" in text
        for opt in ("-o, --output COLS", "-n, --noheadings", "-r, --raw", "--sort COL"):
            assert opt in text


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_dash_v_is_version(flag):
    r = CliRunner().invoke(app, [flag])
    assert r.exit_code == 0 and r.stdout == f"mirrormount {__version__}\n"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in SILENT])
def test_every_printing_command_takes_json_after_it(command):
    cmd = GROUP.get_command(CTX, command)
    assert cmd is not None
    opts = {o for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    assert {"-J", "--json"} <= opts


def test_json_before_the_command():
    text = help_of()
    assert "-J, --json" in text


def test_json_before_and_after_give_the_same_output(monkeypatch):
    import mirrormount.guest.guests as g
    monkeypatch.setattr(g.Guests, "list_all", lambda self: [])
    before = CliRunner().invoke(app, ["-J", "list"])
    after = CliRunner().invoke(app, ["list", "--json"])
    assert before.exit_code == after.exit_code == 0
    assert before.stdout == after.stdout == "[]\n"

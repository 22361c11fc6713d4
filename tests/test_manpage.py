"""mirrormount(8) agrees with the CLI: the committed man/mirrormount.8 is exactly what
`python -m mirrormount.cli.manpage` makes from man/mirrormount.8.in and today's help (run
`make man` after changing a command, an option or a help text), it lists every command and
option, and man(1) renders it without a warning."""
from __future__ import annotations

import os
import shutil
import subprocess

import click
import typer.main

from mirrormount.cli import app, manpage


def test_committed_page_is_what_the_cli_says():
    assert manpage.PAGE.read_text() == manpage.render(), \
        "man/mirrormount.8 is stale: run `make man` (python -m mirrormount.cli.manpage)"


def test_check_mode_says_so():
    assert manpage.main(["--check"]) == 0


def test_page_has_every_command_and_option():
    page = manpage.render()
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    ctx = click.Context(group, info_name="mirrormount")
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        assert f".SS {name}\n.B mirrormount {name}\n" in page
        for p in cmd.params:
            for opt in getattr(p, "opts", []):
                if opt.startswith("-") and opt not in ("-h", "--help"):
                    assert f"\\fB{manpage.roff(opt)}\\fR" in page, (name, opt)


def test_hand_written_sections():
    page = manpage.render()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "THE MIRROR", "OPTIONS", "COMMANDS",
                    "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"):
        assert f'\n.SH {section}\n' in page or f'\n.SH "{section}"\n' in page, section


def test_a_changed_help_text_makes_the_page_stale(monkeypatch):
    import mirrormount.cli.guests as guests
    group_before = manpage.render()
    monkeypatch.setattr(guests.list_, "__doc__", "Something else.")
    # typer reads the docstring when it builds the tree: the page must follow it
    assert manpage.render() != group_before


def test_roff_escapes():
    assert manpage.roff("--json") == "\\-\\-json"
    assert manpage.roff("a\\b") == "a\\eb"
    assert manpage.roff(".x\n'y") == "\\&.x\n\\&'y"


def test_man_renders_it_without_warnings(tmp_path):
    assert shutil.which("man"), "man(1) is needed (Debian: man-db)"
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    cp = subprocess.run(["man", "--warnings", "-l", str(manpage.PAGE)], env=env,
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stderr == ""
    assert "MIRRORMOUNT(8)" in cp.stdout and "EXIT STATUS" in cp.stdout

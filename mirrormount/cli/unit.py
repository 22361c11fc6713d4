"""`systemd-unit`: print the template unit mirrormount@.service (views/unit.py says why each
setting is what it is). Changes nothing; needs no privilege.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

import typer

from ..errors import UsageError
from .common import JSON_OPT, app, emit_json, reports_errors, settings, want_json

DEFAULT_BASE, DEFAULT_STATE = "/container", "/run/mirrormount"


def find_exe() -> str | None:
    """The installed console script: beside this Python (a venv's bin/), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mirrormount")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return os.path.abspath(beside)
    found = shutil.which("mirrormount")
    return os.path.abspath(found) if found else None


@app.command("systemd-unit")
@reports_errors
def systemd_unit(
    ctx: typer.Context,
    exe: Optional[str] = typer.Option(
        None, "--exe", metavar="PATH",
        help="The mirrormount executable the unit runs (absolute) [default: the installed "
             "console script, found now]."),
    stop_timeout: float = typer.Option(
        30.0, "--stop-timeout", metavar="S",
        help="Seconds the unit's `stop --timeout` gives the guest before KILL."),
    json_local: bool = JSON_OPT,
) -> None:
    """Print the systemd template unit mirrormount@.service: at boot it creates NAME from
    /etc/mirrormount/NAME.toml and starts it; on stop it stops it cleanly and destroys it.
    Install it as /etc/systemd/system/mirrormount@.service. With --json:
    {"unit": "mirrormount@.service", "text": the unit file}."""
    from ..views.unit import render_unit
    if exe is None:
        exe = find_exe()
        if exe is None:
            raise UsageError("cannot find the mirrormount executable; give its path with --exe")
    if not os.path.isabs(exe):
        raise UsageError(f"--exe: an absolute path is needed (systemd runs no search): {exe}")
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        raise UsageError(f"--exe: {exe} is not an executable file")
    if not stop_timeout > 0 or stop_timeout != stop_timeout or stop_timeout > 86400:
        raise UsageError(f"--stop-timeout: expected seconds between 0 and 86400, got "
                         f"{stop_timeout}")
    lay = settings(ctx).layout
    env = {k: v for k, v, default in (("MIRRORMOUNT_BASE", lay.base, DEFAULT_BASE),
                                      ("MIRRORMOUNT_STATE", lay.state, DEFAULT_STATE))
           if v != default}
    text = render_unit(exe, stop_timeout, env)
    if want_json(ctx, json_local):
        emit_json({"unit": "mirrormount@.service", "text": text})
        return
    typer.echo(text, nl=False)

"""CLI commands for the busy-mount detector (busy, watch). Registered on the app (common.py) when cli/__init__ imports this.

Thin on purpose: finder.py does the work; here we only render a report as tables or JSON and
map it to the exit codes of the contract (0 not busy, 3 busy, 2 bad target).
"""
from __future__ import annotations

from typing import Optional

import typer

from .busyview import ONE_TARGET, PINS, pin_row, render_report
from .columns import NOHEADINGS_OPT, OUTPUT_OPT, RAW_OPT, SORT_OPT
from .common import JSON_OPT, app, emit_json, reports_errors, seconds, settings, want_json
from ..errors import EXIT_BUSY, EXIT_OK, UsageError

__all__ = ["ONE_TARGET", "PINS", "busy", "pin_row", "render_report", "watch_cmd"]

@app.command(epilog=PINS.epilog())
@reports_errors
def busy(ctx: typer.Context,
         target: Optional[str] = typer.Argument(
             None, metavar="TARGET",
             help="A host path, NAME:GUESTPATH, a device node (/dev/loop0) or MAJ:MIN."),
         all_: bool = typer.Option(False, "--all",
                                   help="Audit every mount of every guest in one pass."),
         json_local: bool = JSON_OPT, output: Optional[str] = OUTPUT_OPT,
         noheadings: bool = NOHEADINGS_OPT, raw: bool = RAW_OPT,
         sort: Optional[str] = SORT_OPT) -> None:
    """Who pins a mount, in every mount namespace. Exits 0 not busy, 3 busy, 2 bad target.

    With -o, -n, -r or --sort, TARGET's report is its pins alone, one a line, as busy --all
    prints them (default columns: HOW,PID,GUEST_PID,COMM,USER,GUEST,PATH,NAMESPACE)."""
    # Imported here: every other command would otherwise pay for the finder (and psutil).
    from ..busy.finder import audit_all, find_pins
    s = settings(ctx)
    if all_ == (target is not None):
        raise UsageError("give either TARGET or --all")
    # Bad columns are bad input: refused before the (long) scan, nothing looked at.
    PINS.select(output)
    if sort is not None:
        PINS.column(sort, "--sort")
    records = output is not None or noheadings or raw or sort is not None
    if all_:
        # STATE and other processes' /proc are root's: without root every guest would be
        # missed and "no guest mount is pinned" would be a false all-clear.
        from ..guest.mounting import require_root
        require_root("busy --all")
        reports = [r for r in audit_all(s.layout) if r.busy]
        if want_json(ctx, json_local):
            emit_json([r.to_json() for r in reports])
        elif reports or records:
            text = PINS.render([pin_row(r.target, p) for r in reports for p in r.pins],
                               output, sort=sort, raw=raw, headings=not noheadings)
            if text:
                typer.echo(text)
        else:
            typer.echo("no guest mount is pinned")
        raise typer.Exit(EXIT_BUSY if reports else EXIT_OK)
    assert target is not None
    rep = find_pins(target, s.layout)
    if want_json(ctx, json_local):
        emit_json(rep.to_json())
    elif records:
        text = PINS.render([pin_row(rep.target, p) for p in rep.pins],
                           output, sort=sort, raw=raw, headings=not noheadings,
                           default=ONE_TARGET)
        if text:
            typer.echo(text)
    else:
        typer.echo(render_report(rep))
    raise typer.Exit(EXIT_BUSY if rep.busy else EXIT_OK)


# --- watch (devices helper) ---
# Uses typer, Optional and the cli names imported at the top of this module.


@app.command("watch")
@reports_errors
def watch_cmd(
    ctx: typer.Context,
    json_local: bool = JSON_OPT,
    count: Optional[int] = typer.Option(None, "--count", metavar="N",
                                        help="Stop after N events."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS",
                                            help="Stop after this long."),
    device: Optional[str] = typer.Option(None, "--device", metavar="DEV",
                                         help="Only this device (/dev/NAME or MAJ:MIN)."),
    mounts: bool = typer.Option(False, "--mounts",
                                help="Stream mount attach, detach and move events of every "
                                     "guest and the host instead (Ctrl-C: exit 130)."),
) -> None:
    """Stream block-device events (one line each): who still uses a device that changes or
    goes away. Ctrl-C stops (exit 0). With --mounts: every guest's and the host's mount
    events."""
    seconds(timeout, "--timeout")
    if mounts:
        import sys
        from ..busy.mountwatch import watch_mounts
        if device is not None:
            raise UsageError("--device is for block-device events, not with --mounts")
        raise typer.Exit(watch_mounts(settings(ctx).layout, want_json(ctx, json_local), count,
                                      timeout, sys.stdout, sys.stderr))
    from ..busy.watch import watch
    raise typer.Exit(watch(settings(ctx).layout, want_json(ctx, json_local), count, timeout,
                           device))

"""CLI commands for the busy-mount detector (busy, watch). Registered on the app (common.py) when cli/__init__ imports this.

Thin on purpose: finder.py does the work; here we only render a report as tables or JSON and
map it to the exit codes of the contract (0 not busy, 3 busy, 2 bad target).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from .columns import NOHEADINGS_OPT, OUTPUT_OPT, RAW_OPT, SORT_OPT, Column, Columns
from .common import JSON_OPT, app, emit_json, reports_errors, settings, table, want_json
from ..errors import EXIT_BUSY, EXIT_OK, UsageError

if TYPE_CHECKING:
    from ..busy.report import BusyReport, Pin

PINS = Columns([
    Column("TARGET", "the mount asked about (busy --all: each guest mount)"),
    Column("HOW", "how: cwd, root, exe, fd, mmap, submount, swap, loop, nsfs, ..."),
    Column("PID", "the holding process, as the host numbers it", numeric=True),
    Column("GUEST_PID", "the same process as its guest numbers it", numeric=True),
    Column("COMM", "the process's command name"),
    Column("USER", "the process's user"),
    Column("GUEST", "the guest the holder lives in, or host"),
    Column("PATH", "the pinned path, as the holder sees it"),
    Column("NAMESPACE", "the holder's mount namespace (mnt:[inode])"),
], default=["TARGET", "HOW", "PID", "GUEST_PID", "COMM", "USER", "GUEST", "PATH"])
# One target's report shows its pins without the TARGET column (it is in the summary line).
ONE_TARGET = ["HOW", "PID", "GUEST_PID", "COMM", "USER", "GUEST", "PATH", "NAMESPACE"]


def pin_row(target: str, p: Pin) -> dict:
    """One pin as a row of PINS (raw values: the renderer escapes them)."""
    return {"TARGET": target, "HOW": p.how, "PID": p.pid, "GUEST_PID": p.guest_pid,
            "COMM": p.comm, "USER": p.user, "GUEST": p.guest, "PATH": p.path,
            "NAMESPACE": p.namespace}


def render_report(rep: BusyReport) -> str:
    """Human form: a summary line, the copies, the pins and one sentence per pin."""
    from ..busy.report import describe_pin, shown
    dev = rep.device
    ident = " ".join(shown(str(x)) for x in (dev.get("devnode"), dev.get("majmin"),
                                             dev.get("fstype")) if x)
    where = f" (mount {rep.mount_path})" if rep.mount_path and rep.mount_path != rep.target \
        else ""
    state = f"busy: {len(rep.pins)} pin(s)" if rep.busy else "not busy"
    out = [f"{shown(rep.target)}{shown(where)}: {state}; device {ident or '?'}"]
    extra = {k: v for k, v in dev.items() if k not in ("devnode", "majmin", "fstype") and v}
    if extra:
        # udev labels and serials are set by whoever made the device: escape them too
        out.append("  " + ", ".join(f"{k}={shown(str(v))}" for k, v in extra.items()))
    if rep.copies:
        out.append("")
        out.append(table([[c.namespace, c.guest, str(c.mount_id), shown(c.path)]
                          for c in rep.copies],
                         ["NAMESPACE", "GUEST", "MOUNT_ID", "COPY"]))
    if rep.pins:
        out.append("")
        out.append(PINS.render([pin_row(rep.target, p) for p in rep.pins],
                               default=ONE_TARGET))
        out.append("")
        out.extend(f"- {describe_pin(p)}" for p in rep.pins)
    if rep.uninspected:
        out.append(f"{rep.uninspected} process(es) could not be inspected (permission denied)")
    return "\n".join(out)


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

"""The lifecycle commands: start, stop (the thread's two protocols, guest/lifeplan.py) and ps
(a pid per level of pid namespace). Each parses, calls guest/lifecycle.py and renders; errors
become exit codes in common.reports_errors.
"""
from __future__ import annotations

from typing import Optional

import typer

from .columns import NOHEADINGS_OPT, OUTPUT_OPT, RAW_OPT, SORT_OPT, Column, Columns
from .common import (DRY_RUN, JSON_OPT, NAME_HELP, app, emit_json, reports_errors, settings,
                     seconds, show_plan, want_json)

PS = Columns([
    Column("PID", "the process's pid on the host", numeric=True),
    Column("GUEST_PID", "its pid in the guest's innermost pid namespace (NSpid)", numeric=True),
    Column("USER", "the user it runs as (the host's passwd)"),
    Column("CMD", "its command line (or [comm] for a kernel thread)"),
    Column("CGROUP", "its cgroup v2 path (/proc/PID/cgroup)"),
], default=["PID", "GUEST_PID", "USER", "CMD"])


def _dry(ctx: typer.Context, json_local: bool, g, verb: str, name: str,
         timeout: Optional[float] = None, sig: Optional[str] = None) -> None:
    from ..guest import lifecycle
    ops = lifecycle.plan(g, verb, name, timeout, sig)
    if ops or want_json(ctx, json_local):
        show_plan(ctx, json_local, ops)
    else:
        typer.echo(f"# {name}: nothing to {verb}")


@app.command()
@reports_errors
def start(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP), dry_run: bool = DRY_RUN,
          json_local: bool = JSON_OPT) -> None:
    """Start a guest: an init-based one gets its init again in a fresh pid namespace (the
    mount namespace, the mirror and the other namespaces are kept); an init-less one runs
    its recipe's start commands inside."""
    from ..guest import lifecycle
    g = settings(ctx).guests
    if dry_run:
        _dry(ctx, json_local, g, "start", name)
        return
    res = lifecycle.run(g, "start", name)
    if want_json(ctx, json_local):
        emit_json(res.to_json())
    elif res.steps == 0:
        typer.echo(f"{name}: running already" if g.record(name).init else
                   f"{name}: nothing to start")
    else:
        typer.echo(f"started {name}" + (f" (PID 1 is host pid {res.pid1})" if res.pid1
                                        else ""))


@app.command()
@reports_errors
def stop(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
         timeout: Optional[float] = typer.Option(
             None, "--timeout", metavar="SECONDS",
             help="How long to wait for the processes to end before KILL [10]."),
         sig: Optional[str] = typer.Option(
             None, "--signal", metavar="SIG",
             help="Init-based: the stop signal (default: the recipe's stop_signal, or TERM)."),
         dry_run: bool = DRY_RUN, json_local: bool = JSON_OPT) -> None:
    """Stop a guest's processes; its mirror and namespaces stay (destroy disposes of them).
    Init-based: the stop signal to init, a wait, then KILL. Init-less: the recipe's shutdown
    commands, then TERM to every process, a wait, then KILL. A KILL is warned about."""
    from ..guest import lifecycle
    g = settings(ctx).guests
    seconds(timeout, "--timeout")
    if dry_run:
        _dry(ctx, json_local, g, "stop", name, timeout, sig)
        return
    res = lifecycle.run(g, "stop", name, timeout, sig)
    for w in res.warnings:
        typer.echo(f"mirrormount: warning: {w}", err=True)
    if want_json(ctx, json_local):
        emit_json(res.to_json())
    elif res.steps == 0:
        typer.echo(f"{name}: stopped already")
    else:
        typer.echo(f"stopped {name}")


def ps_rows(rows: list) -> list[dict[str, object]]:
    """ps's rows by upper-case column name (PID, GUEST_PID, USER, CMD, CGROUP), pids as
    ints so that --sort orders them as numbers."""
    return [{**r.columns(), "PID": r.pid, "GUEST_PID": r.guest_pid} for r in rows]


@app.command(epilog=PS.epilog())
@reports_errors
def ps(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
       json_local: bool = JSON_OPT, output: Optional[str] = OUTPUT_OPT,
       noheadings: bool = NOHEADINGS_OPT, raw: bool = RAW_OPT,
       sort: Optional[str] = SORT_OPT) -> None:
    """Processes in a guest: the host pid, the pid inside the guest (NSpid: one per level
    of pid namespace; --json gives them all as nspid), the user, the command."""
    from ..guest import lifecycle
    PS.select(output)                     # bad columns: exit 2 before anything is read
    if sort is not None:
        PS.column(sort, "--sort")
    rows = lifecycle.ps(settings(ctx).guests, name)
    if want_json(ctx, json_local):
        emit_json([r.to_json() for r in rows])
        return
    text = PS.render(ps_rows(rows), output, sort=sort, raw=raw, headings=not noheadings)
    if text:
        typer.echo(text)

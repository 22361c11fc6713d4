"""The lifecycle commands: start, stop (the thread's two protocols, guest/lifeplan.py) and ps
(a pid per level of pid namespace). Each parses, calls guest/lifecycle.py and renders; errors
become exit codes in common.reports_errors.
"""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .common import JSON_OPT, app, emit_json, reports_errors, settings, table, want_json

DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan as numbered shell steps; "
                                                 "change nothing.")
PS_COLUMNS = ("PID", "GUEST_PID", "USER", "CMD")
PS_ALL_COLUMNS = (*PS_COLUMNS, "CGROUP")


def _dry(g, verb: str, name: str, timeout: Optional[float] = None,
         sig: Optional[str] = None) -> None:
    from ..guest import lifecycle
    from ..guest.ops import render
    ops = lifecycle.plan(g, verb, name, timeout, sig)
    typer.echo(render(ops) if ops else f"# {name}: nothing to {verb}\n", nl=False)


@app.command()
@reports_errors
def start(ctx: typer.Context, name: str = typer.Argument(...), dry_run: bool = DRY_RUN,
          json_local: bool = JSON_OPT) -> None:
    """Start a guest: an init-based one gets its init again in a fresh pid namespace (the
    mount namespace, the mirror and the other namespaces are kept); an init-less one runs
    its recipe's start commands inside."""
    from ..guest import lifecycle
    g = settings(ctx).guests
    if dry_run:
        _dry(g, "start", name)
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
def stop(ctx: typer.Context, name: str = typer.Argument(...),
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
    if timeout is not None and timeout < 0:
        raise UsageError("--timeout must be 0 or more seconds")
    if dry_run:
        _dry(g, "stop", name, timeout, sig)
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


def ps_rows(rows: list) -> list[dict[str, str]]:
    """ps's table as a plain list of rows by upper-case column name (PID, GUEST_PID, USER,
    CMD, CGROUP), for any column renderer."""
    return [r.columns() for r in rows]


@app.command()
@reports_errors
def ps(ctx: typer.Context, name: str = typer.Argument(...), json_local: bool = JSON_OPT
       ) -> None:
    """Processes in a guest: the host pid, the pid inside the guest (NSpid: one per level
    of pid namespace; --json gives them all as nspid), the user, the command."""
    from ..guest import lifecycle
    rows = lifecycle.ps(settings(ctx).guests, name)
    if want_json(ctx, json_local):
        emit_json([r.to_json() for r in rows])
        return
    typer.echo(table([[d[c] for c in PS_COLUMNS] for d in ps_rows(rows)], list(PS_COLUMNS)))

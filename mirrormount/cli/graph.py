"""`graph [NAME] [--format dot|text]`: the propagation of the host, the mirrors and the guests.

Reads the host's mount table and each guest's (through its nsfs-held mount namespace, in a
forked child: Guests.guest_table), builds views.graph and renders it. Read-only; root, since
STATE is 0700 and reading a guest's table means setns into it.
"""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import UsageError
from .common import JSON_OPT, app, emit_json, reports_errors, settings, want_json

FORMATS = ("dot", "text")


@app.command()
@reports_errors
def graph(
    ctx: typer.Context,
    name: Optional[str] = typer.Argument(
        None, metavar="[NAME]",
        help="Only this guest, with the host mounts its mirror is a peer or slave of "
             "(default: every guest and every host mount)."),
    fmt: Optional[str] = typer.Option(None, "--format", metavar="dot|text",
                            help="dot: Graphviz (render with `dot -Tsvg`); text: tables and "
                                 "the why, one sentence each [text]."),
    json_local: bool = JSON_OPT,
) -> None:
    """Draw propagation: peer groups, master/slave links, unbindable BASE and STATE, and for
    each guest mount whether mounts flow to and from its copy on the host. --json prints the
    graph's nodes, peer groups, slaves, flows and notes instead."""
    if fmt is not None and want_json(ctx, json_local):
        raise UsageError("--format and --json each choose the output: give one")
    fmt = fmt or "text"
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected dot or text, got {fmt!r}")
    from ..guest.guests import host_table, require_root
    from ..guest.state import guest_names, load
    from ..views.graph import GuestView, build
    require_root("graph")
    guests = settings(ctx).guests
    if name is not None:
        records = [guests.record(name)]          # UsageError (exit 2) for an unknown name
    else:
        records = [r for n in guest_names(guests.layout)
                   if (r := load(guests.layout, n)) is not None]
    views = [GuestView(r.name, r.mirror, r.propagation, guests.guest_table(r)) for r in records]
    g = build(host_table(), guests.layout, views, whole_host=name is None)
    if want_json(ctx, json_local):
        emit_json(g.to_json())
        return
    from ..views.graph_render import to_dot, to_text
    typer.echo(to_dot(g) if fmt == "dot" else to_text(g), nl=fmt != "dot")

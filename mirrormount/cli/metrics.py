"""`metrics`: guests, mounts, mirror health, pins and fs.mount-max headroom in the Prometheus
text exposition format (views/metrics.py says what each family means).

Gathers with the library's own read-only calls: Guests.status per guest (state, mounts on
each side, mirror intact), busy.finder.audit_all once (pins on each guest's own mounts, as
`busy --all`), /proc/sys/fs/mount-max and the host's /proc/self/mountinfo. Root: STATE is
0700, and reading a guest's table and other processes' fds needs it.
"""
from __future__ import annotations

import typer

from ..errors import MirrormountError
from .common import JSON_OPT, app, emit_json, reports_errors, settings, want_json

MOUNT_MAX = "/proc/sys/fs/mount-max"


def read_mount_max(path: str = MOUNT_MAX) -> int | None:
    """fs.mount-max, or None when it cannot be read (no such sysctl, not a number)."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def count_mounts(path: str = "/proc/self/mountinfo") -> int:
    """Mounts in this process's mount namespace: mountinfo's lines (no parse needed)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


@app.command()
@reports_errors
def metrics(
    ctx: typer.Context,
    pins: bool = typer.Option(True, "--pins/--no-pins",
                              help="Count pins on the guests' mounts (one pass over /proc, "
                                   "as busy --all)."),
    json_local: bool = JSON_OPT,
) -> None:
    """Print metrics in the Prometheus text exposition format (0.0.4), for node_exporter's
    textfile collector: guests by state, mounts per guest on the host and guest side, mirror
    intact, pins per guest, fs.mount-max headroom per mount namespace. With --json, the same
    families as a list of {name, help, type, samples: [{labels, value}]}."""
    s = settings(ctx)
    from ..guest.guests import require_root
    from ..guest.state import guest_names
    from ..views.metrics import GuestFacts, families, render
    require_root("metrics")
    guests = s.guests
    pins_of: dict[str, tuple[int, int]] = {}
    if pins:
        from ..busy.finder import audit_all
        for r in audit_all(guests.layout):
            if r.guest is None:
                continue
            n, busy_mounts = pins_of.get(r.guest, (0, 0))
            pins_of[r.guest] = (n + len(r.pins), busy_mounts + int(r.busy))
    facts = []
    for name in guest_names(guests.layout):
        counted = pins_of.get(name, (0, 0)) if pins else (None, None)
        try:
            rep = guests.status(name)
        except (MirrormountError, OSError):
            # A guest whose record is gone or cannot be read: broken, nothing else known.
            facts.append(GuestFacts(name, "broken", pins=counted[0], pinned_mounts=counted[1]))
            continue
        h = rep.health
        facts.append(GuestFacts(
            name, rep.info.state, h.mounts_host,
            # A readable guest table holds at least its /: 0 means it could not be read.
            h.mounts_guest or None, h.mirror_intact, counted[0], counted[1]))
    fams = families(facts, read_mount_max(), count_mounts(), pins)
    if want_json(ctx, json_local):
        emit_json([{"name": f.name, "help": f.help, "type": f.type,
                    "samples": [{"labels": dict(x.labels), "value": x.value}
                                for x in f.samples]} for f in fams])
        return
    typer.echo(render(fams), nl=False)

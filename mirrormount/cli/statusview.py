"""What `status NAME` prints without --json: one `key: value` line per fact of the report,
util-linux style, without typer (pure, so a unit test renders a constructed StatusReport).

Every key of StatusReport.to_json() has its line here (TEXT_KEYS says which line carries
which key; tests/test_textfix_status.py checks that no new JSON key goes without one).
"""
from __future__ import annotations

import shlex

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from ..guest.reports import StatusReport

# JSON key -> the text label that shows it (problems: one `problem:` line each;
# drop_caps: on the confine line; empty init/joins/joined_by/guest_only print no line).
TEXT_KEYS = {"name": "name", "mirror": "mirror", "state": "state",
             "mirror_intact": "mirror_intact", "mounts_host": "mounts",
             "mounts_guest": "mounts", "propagation": "propagation",
             "guest_only": "guest_only", "confine": "confine", "drop_caps": "confine",
             "init": "init", "joins": "joins", "joined_by": "joined by",
             "problems": "problem"}


def _line(label: str, value: str) -> str:
    # labels padded to one column, as the lines have always been ("mirror_intact: " is the
    # longest label, 15 characters with its colon and space)
    return f"{label + ':':<15}{value}"


def render_status(rep: StatusReport) -> str:
    """The human form of `status NAME`: name, mirror, state, mirror_intact, mounts,
    propagation, one guest_only line per guest-only mount, confine, init, joins, joined by,
    then one problem line per problem. Paths chosen by users (guest-only mounts) are escaped
    as mountinfo escapes them, so a newline in one cannot forge a line."""
    from ..busy.report import shown
    h, i = rep.health, rep.info
    out = [_line("name", rep.name), _line("mirror", rep.mirror), _line("state", i.state),
           _line("mirror_intact", "yes" if h.mirror_intact else "NO"),
           _line("mounts", f"{h.mounts_host} on the host, {h.mounts_guest} in the guest"),
           _line("propagation", i.propagation)]
    # kept out of the host mirror (mount --guest-only): status --json and list -o GUEST_ONLY
    # show them, so the text does too, one line each (a path may hold a comma)
    out += [_line("guest_only", shown(p)) for p in i.guest_only]
    out.append(_line("confine", i.confine + (f" (capabilities dropped: {','.join(i.drop_caps)})"
                                             if i.drop_caps else "")))
    if i.init:
        out.append(_line("init", shlex.join(i.init)))
    if i.joins:
        out.append(_line("joins", ", ".join(f"{k} of {g}" for k, g in i.joins.items())))
    if i.joined_by:
        out.append(_line("joined by", ", ".join(f"{g} ({','.join(k)})"
                                                for g, k in i.joined_by.items())))
    out += [_line("problem", p) for p in rep.problems]
    return "\n".join(out)

"""Ownership: mirrormount changes only mounts it can prove it made.

BASE and STATE are each a tmpfs that mirrormount mounts itself, with a source label of its own
(``mirrormount-base``, ``mirrormount-state``). A path given as --base or --state that is
already a mount of anything else (``/run``, a data disk) is refused before anything changes:
making it private and unbindable, as BASE and STATE must be, would change the host for good.

A guest belongs to a STATE when that STATE holds its record, or, while its create is under
way, its claim (``STATE/NAME/claim``, written before the mirror is made, naming the mirror).
A mirror in BASE that no record or claim in this STATE names is not this STATE's to touch.

Both layers use these checks: the planner refuses (exit 2), `doctor` fails, with the same words.
"""
from __future__ import annotations

import json
import os

from ..kernel.mountinfo import Mount, MountTable, is_under
from .model import Layout

LABELS = {"BASE": "mirrormount-base", "STATE": "mirrormount-state"}


def made_by_us(m: Mount | None, what: str) -> bool:
    """Whether m is the tmpfs mirrormount mounts as BASE or STATE (its source label)."""
    return m is not None and m.fstype == "tmpfs" and m.source == LABELS[what]


def foreign_mount(table: MountTable, path: str, what: str) -> str | None:
    """Why `path` cannot be BASE/STATE because of what is mounted there, or None. Pure."""
    m = table.at(path)
    if m is None or made_by_us(m, what):
        return None
    return (f"{what} {path} is a mount mirrormount did not make ({m.fstype} {m.source}); "
            f"it would have to become private and unbindable: choose another "
            f"--{what.lower()}, such as a new directory")


def layout_problems(layout: Layout, table: MountTable) -> list[str]:
    """Everything wrong with BASE and STATE as placed, from the mount table alone. Pure."""
    out = []
    b, s = layout.base, layout.state
    for path, what in ((b, "BASE"), (s, "STATE")):
        if path == "/":
            out.append(f"{what} cannot be /")
    if b == s or is_under(b, s) or is_under(s, b):
        out.append(f"BASE {b} and STATE {s} must be apart: neither inside the other")
    for path, what in ((b, "BASE"), (s, "STATE")):
        why = foreign_mount(table, path, what)
        if why:
            out.append(why)
    return out


def path_problems(path: str, what: str) -> list[str]:
    """A BASE/STATE path that is not a directory, or cannot be written (read-only file
    system): checked on the path, or on its nearest existing ancestor when it is still to
    be made (create makes it with mkdir -p)."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return [f"{what} {path} is not a directory"]
        probe = path
    else:
        probe = os.path.dirname(path)
        while probe != "/" and not os.path.lexists(probe):
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe):
            return [f"{what} {path} cannot be made: {probe} is not a directory"]
    # Only as root: anyone else is refused for want of privilege, a clearer reason.
    if os.geteuid() == 0 and not os.access(probe, os.W_OK):
        return [f"{what} {path} is not writable ({probe}: read-only file system or no "
                "permission)"]
    return []


def claimed_mirror(layout: Layout, name: str) -> str | None:
    """The mirror path that this STATE proves is NAME's: its record's, else its claim's."""
    for path in (layout.record(name), layout.claim(name)):
        try:
            with open(path, encoding="utf-8") as f:
                mirror = json.load(f).get("mirror")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(mirror, str) and mirror.startswith("/"):
            return mirror
    return None

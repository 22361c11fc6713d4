"""Which guests joined one guest's namespaces, for `status` and `info` of a single guest.

A join (create --join KIND=GUEST) is written only in the joiner's record (state.py), so the
answer needs a look at every record of STATE. state.joins_index parses each one as JSON
(about 70 us a record: 36 ms of a 56 ms `status` at 500 guests). Here each record is read
raw, and parsed only when its top-level "joins" is not the empty dict that write_atomic
(json.dump, indent=2, sort_keys) writes for a guest that joined nothing; a record written
any other way, or with joins, is parsed as before. Quotes inside a JSON string are escaped,
so the bytes `"joins": {}` cannot come from a value.

What still grows with the number of guests: one directory read and one small file read per
guest (a few us each). No kernel interface tells which nsfs binds hold the same namespace.

Privilege: read access to STATE (root: it is 0700).
"""
from __future__ import annotations

import json
import os

from .model import Layout
from .state import GuestRecord, guest_names

_NO_JOINS = b'\n  "joins": {}'


def _raw(state_fd: int, name: str) -> bytes | None:
    """STATE/name/guest.json's bytes (opened beside STATE's fd: no walk of STATE's path per
    guest), or None when there is none. A record is a few hundred bytes: one read."""
    try:
        fd = os.open(f"{name}/guest.json", os.O_RDONLY | os.O_CLOEXEC, dir_fd=state_fd)
    except OSError:
        return None
    try:
        parts = [os.read(fd, 65536)]
        while len(parts[-1]) == 65536:
            parts.append(os.read(fd, 65536))
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def joiners_of(layout: Layout, name: str) -> list[tuple[str, str]]:
    """[(joiner, kind)] of the guests whose record says they joined a namespace of `name`,
    sorted: the same as state.joins_index(layout).get(name, []). A missing or unreadable
    record counts as joining nothing, as there."""
    names = guest_names(layout)
    if not names:
        return []
    try:
        state_fd = os.open(layout.state, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    out = []
    try:
        for other in names:
            data = _raw(state_fd, other)
            if data is None or b'"joins"' not in data or _NO_JOINS in data:
                continue
            try:
                rec = GuestRecord.from_json(json.loads(data))
            except (ValueError, TypeError):
                continue
            out += [(other, kind) for kind, g in rec.joins.items() if g == name]
    finally:
        os.close(state_fd)
    return sorted(out)

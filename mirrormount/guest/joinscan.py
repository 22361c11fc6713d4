"""Which guests joined one guest's namespaces, for `status`, `info` and `destroy` of one guest.

A join (create --join KIND=GUEST) is written in the joiner's record (state.py). Reading it
back from every record costs O(guests) (one directory read and one file read per guest: about
3 ms of a 15 ms `status` at 500 guests on 6.18). So create and destroy also keep a reverse
index, under STATE/.joins (a dot name: never a guest, state.guest_names):

- ``by/GUEST``: JSON {"joiners": [[joiner, kind], ...]}, the joins into GUEST; no file: none.
- ``stamp``: JSON {"version": 1, "state": [...]}, the stat of the STATE directory (device,
  inode, mtime, ctime, link count, size) when the index was last made true.

A guest comes and goes only with a directory in STATE, and joins are written only by the
create that makes it; either changes STATE's stat (a new or removed subdirectory). So the
index is trusted only while STATE's stat still equals the stamp: a create or destroy by an
older mirrormount, a whole STATE written by one (no index), a change cut short after it
made or removed a guest's directory (the stamp is written last), or anything else that
adds or removes a guest, makes the reader fall back to reading every record
(joins_scanned), which is always right. The next create or destroy, holding the StateLock, rebuilds the index from the
records (O(guests), once) and stamps it again; from then on each one updates it in O(joins
it adds or removes).

Cost of a lookup with a true index: two small file reads and one stat, whatever the number
of guests. Limit: the kernel's directory timestamps are coarse (a clock tick), so a guest
removed and another added in the same tick by something that keeps no index (an older
mirrormount) could leave STATE's stat unchanged; the link count and size catch any change
that is not exactly one removal and one addition.

Privilege: read access to STATE (root: it is 0700); root and the StateLock to write.
"""
from __future__ import annotations

import json
import os

from .model import Layout
from .state import GuestRecord, guest_names, joins_index, write_atomic

_NO_JOINS = b'\n  "joins": {}'
INDEX_VERSION = 1


def index_dir(layout: Layout) -> str:
    """STATE/.joins, where the reverse join index lives."""
    return f"{layout.state.rstrip('/')}/.joins"


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


def _read_json(path: str) -> object:
    with open(path, "rb") as f:
        return json.loads(f.read())


def _state_stamp(layout: Layout) -> list[int] | None:
    try:
        st = os.stat(layout.state)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_nlink, st.st_size]


def index_true(layout: Layout) -> bool:
    """Whether the index under STATE/.joins may be trusted now (its stamp equals STATE's
    stat)."""
    try:
        stamp = _read_json(f"{index_dir(layout)}/stamp")
    except (OSError, ValueError):
        return False
    now = _state_stamp(layout)
    return now is not None and stamp == {"version": INDEX_VERSION, "state": now}


def _entries(data: object) -> list[tuple[str, str]]:
    items = data.get("joiners") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("no list of joiners")
    out = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2
                and all(isinstance(x, str) for x in item)):
            raise ValueError(f"bad entry {item!r}")
        out.append((item[0], item[1]))
    return sorted(out)


def joiners_indexed(layout: Layout, name: str) -> list[tuple[str, str]] | None:
    """[(joiner, kind)] from the index, sorted, or None when it cannot be trusted (missing,
    unreadable, or stamped for another STATE than the one there now). The stamp is read
    first and STATE's stat last: a create or destroy that runs in between changes the stat,
    so what was read is not used."""
    where = index_dir(layout)
    try:
        stamp = _read_json(f"{where}/stamp")
        try:
            found = _entries(_read_json(f"{where}/by/{name}"))
        except FileNotFoundError:
            found = []
    except (OSError, ValueError):
        return None
    now = _state_stamp(layout)
    if now is None or stamp != {"version": INDEX_VERSION, "state": now}:
        return None
    return found


def joins_scanned(layout: Layout, name: str) -> list[tuple[str, str]]:
    """[(joiner, kind)] from every record of STATE, sorted: the same as
    state.joins_index(layout).get(name, []). Each record is read raw and parsed only when its
    top-level "joins" is not the empty dict that write_atomic (json.dump, indent=2,
    sort_keys) writes for a guest that joined nothing; quotes inside a JSON string are
    escaped, so the bytes `"joins": {}` cannot come from a value. A missing or unreadable
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


def joiners_of(layout: Layout, name: str) -> list[tuple[str, str]]:
    """[(joiner, kind)] of the guests whose record says they joined a namespace of `name`,
    sorted: from the index when it can be trusted (O(1) in the number of guests), else from
    every record (joins_scanned)."""
    found = joiners_indexed(layout, name)
    return joins_scanned(layout, name) if found is None else found


# ---------------------------------------------------------------- keeping the index (locked)
def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def index_begin(layout: Layout) -> bool:
    """Call holding the StateLock, before a change: whether the index is true now. Nothing
    is written: a change cut short (Ctrl-C, a kill, a failed step rolled back) leaves STATE
    as it found it, index included, and the guest directory it made or removed has moved
    STATE's stat away from the stamp anyway, so the index is no longer trusted."""
    return index_true(layout)


def _write_by(by: str, guest: str, entries: list[tuple[str, str]]) -> None:
    if entries:
        write_atomic(f"{by}/{guest}", {"joiners": [list(e) for e in sorted(set(entries))]})
    else:
        _unlink(f"{by}/{guest}")


def index_after(layout: Layout, was_true: bool, added: tuple[str, dict[str, str]] | None = None,
                removed: tuple[str, dict[str, str] | None] | None = None) -> None:
    """Call holding the StateLock, after a change that index_begin preceded: bring the index
    up to date and stamp it. added: (guest, its joins {kind: guest}) made by a create;
    removed: (guest, its joins, None when its record could not be read) taken away by a
    destroy. When the index was not true before (or a removed guest's joins are unknown), it
    is rebuilt from every record. Nothing is written when STATE holds no guest (the last
    destroy unmounted it: what is there now is the directory beneath). An error writing it
    is not the change's failure: the index is then left untrusted (no stamp), and readers
    read the records."""
    try:
        _update(layout, was_true, added, removed)
    except OSError:
        try:
            _unlink(f"{index_dir(layout)}/stamp")
        except OSError:
            pass


def _update(layout: Layout, was_true: bool, added: tuple[str, dict[str, str]] | None,
            removed: tuple[str, dict[str, str] | None] | None) -> None:
    # Only a destroy can have left no guest (the last one unmounts STATE: what is there now
    # is the directory beneath); a create just made one, so it skips this O(guests) look.
    if added is None and not guest_names(layout):
        return
    where = index_dir(layout)
    by = f"{where}/by"
    os.makedirs(by, mode=0o700, exist_ok=True)    # before the stamp: it changes STATE's stat
    if was_true and not (removed is not None and removed[1] is None):
        touched: dict[str, list[tuple[str, str]]] = {}

        def current(guest: str) -> list[tuple[str, str]]:
            if guest not in touched:
                try:
                    touched[guest] = _entries(_read_json(f"{by}/{guest}"))
                except FileNotFoundError:
                    touched[guest] = []
            return touched[guest]

        if removed is not None:
            gone, joins = removed
            for g in set((joins or {}).values()):
                touched[g] = [e for e in current(g) if e[0] != gone]
            touched[gone] = []       # destroy refuses a guest others joined: none left
        if added is not None:
            joiner, joins = added
            for kind, g in joins.items():
                touched[g] = [e for e in current(g) if e != (joiner, kind)] + [(joiner, kind)]
        for g, entries in touched.items():
            _write_by(by, g, entries)
    else:
        index = joins_index(layout)
        for stale in os.listdir(by):
            if stale not in index:
                _unlink(f"{by}/{stale}")
        for g, entries in index.items():
            _write_by(by, g, entries)
    now = _state_stamp(layout)
    if now is not None:
        write_atomic(f"{where}/stamp", {"version": INDEX_VERSION, "state": now})

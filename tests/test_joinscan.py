"""guest/joinscan.py: joiners_of gives what state.joins_index gives for one guest, while
parsing only the records that have joins (records built in a tmp STATE, no privilege)."""
from __future__ import annotations

import json
import os

from mirrormount.guest import joinscan
from mirrormount.guest.model import Layout
from mirrormount.guest.state import GuestRecord, joins_index, write_atomic


def _rec(lay: Layout, name: str, **kw) -> None:
    os.makedirs(lay.guest_dir(name), exist_ok=True)
    rec = GuestRecord(name, f"{lay.base}/{name}", "/", ("mnt", "net", "uts"), **kw)
    write_atomic(lay.record(name), rec.to_json())


def test_same_as_the_index(tmp_path, monkeypatch):
    lay = Layout(str(tmp_path / "base"), str(tmp_path / "state"))
    _rec(lay, "a")
    _rec(lay, "b", joins={"net": "a", "uts": "a"})
    _rec(lay, "c", joins={"net": "a"})
    _rec(lay, "d", joins={"uts": "b"})
    # A value holding the empty form in a string must not hide e's real joins.
    _rec(lay, "e", start=('echo \'"joins": {}\'',), joins={"net": "a"})
    _rec(lay, "f", start=('echo \'\n  "joins": {}\'',))
    # Hand-written, compact, with joins: parsed like any other.
    os.makedirs(lay.guest_dir("g"))
    with open(lay.record("g"), "w") as fh:
        json.dump({"name": "g", "mirror": "/x", "rootfs": "/", "kinds": ["mnt"],
                   "joins": {"uts": "a"}}, fh)
    os.makedirs(lay.guest_dir("h"))                        # broken: not JSON
    with open(lay.record("h"), "w") as fh:
        fh.write('{"joins": {"net": "a"')
    os.makedirs(lay.guest_dir("i"))                        # a create killed midway
    (tmp_path / "state" / "stray-file").write_text("x")
    os.makedirs(lay.guest_dir(".hidden"))
    with open(lay.record(".hidden"), "w") as fh:
        json.dump({"name": "x", "mirror": "/x", "rootfs": "/", "joins": {"net": "a"}}, fh)
    parsed = []
    real = GuestRecord.from_json
    monkeypatch.setattr(joinscan.GuestRecord, "from_json",
                        classmethod(lambda cls, d: parsed.append(d["name"]) or real(d)))
    index = joins_index(lay)
    for name in "abcdefghiz":
        parsed.clear()
        assert joinscan.joiners_of(lay, name) == index.get(name, []), name
        assert sorted(parsed) == ["b", "c", "d", "e", "g"]     # never a, f, or the rest
    assert joinscan.joiners_of(lay, "a") == [("b", "net"), ("b", "uts"), ("c", "net"),
                                             ("e", "net"), ("g", "uts")]


def test_no_state(tmp_path):
    assert joinscan.joiners_of(Layout(str(tmp_path / "b"), str(tmp_path / "none")), "a") == []

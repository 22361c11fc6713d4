"""guest/joinscan.py's reverse join index (STATE/.joins): trusted only while STATE's stat
equals its stamp, kept in step by index_begin/index_after (what create and destroy call
under the StateLock), rebuilt from the records when it was not true, and never needed for
a right answer: without it (a STATE from before it existed) every record is read. Records
in a tmp STATE, no privilege."""
from __future__ import annotations

import json
import os

import pytest

from mirrormount.guest import joinscan
from mirrormount.guest.joinscan import (index_after, index_begin, index_dir, index_true,
                                        joiners_indexed, joiners_of)
from mirrormount.guest.model import Layout
from mirrormount.guest.state import GuestRecord, joins_index, write_atomic


def _rec(lay: Layout, name: str, joins: dict[str, str] | None = None) -> None:
    os.makedirs(lay.guest_dir(name), exist_ok=True)
    rec = GuestRecord(name, f"{lay.base}/{name}", "/", ("mnt", "net", "uts"),
                      joins=joins or {})
    write_atomic(lay.record(name), rec.to_json())


def _gone(lay: Layout, name: str) -> None:
    os.unlink(lay.record(name))
    os.rmdir(lay.guest_dir(name))


@pytest.fixture
def lay(tmp_path):
    lay = Layout(str(tmp_path / "base"), str(tmp_path / "state"))
    _rec(lay, "a")
    _rec(lay, "b", {"net": "a", "uts": "a"})
    _rec(lay, "c", {"net": "a"})
    _rec(lay, "d", {"uts": "b"})
    return lay


def _no_scan(monkeypatch):
    def refuse(*a):
        raise AssertionError("a record was read: the index was not used")
    monkeypatch.setattr(joinscan, "joins_scanned", refuse)
    monkeypatch.setattr(joinscan, "_raw", refuse)


def _same_as_records(lay: Layout, names: str = "abcdez") -> None:
    want = joins_index(lay)
    for n in names:
        assert joiners_of(lay, n) == want.get(n, []), n


def test_a_state_without_index_is_read_from_the_records(lay):
    assert not os.path.exists(index_dir(lay)) and not index_true(lay)
    assert joiners_indexed(lay, "a") is None
    assert joiners_of(lay, "a") == [("b", "net"), ("b", "uts"), ("c", "net")]
    _same_as_records(lay)


def test_rebuilt_then_used_without_reading_records(lay, monkeypatch):
    was = index_begin(lay)
    assert was is False
    index_after(lay, was)                       # not true before: rebuilt from the records
    assert index_true(lay)
    assert sorted(os.listdir(f"{index_dir(lay)}/by")) == ["a", "b"]
    with open(f"{index_dir(lay)}/by/a") as f:
        assert json.load(f) == {"joiners": [["b", "net"], ["b", "uts"], ["c", "net"]]}
    want = joins_index(lay)
    _no_scan(monkeypatch)
    for n in "abcdz":
        assert joiners_of(lay, n) == want.get(n, []), n


def test_kept_in_step_by_create_and_destroy(lay, monkeypatch):
    index_after(lay, index_begin(lay))
    # create e --join net=b (what Guests.create does around its Executor run)
    was = index_begin(lay)
    assert was is True and index_true(lay)       # nothing written before the change
    _rec(lay, "e", {"net": "b"})
    index_after(lay, was, added=("e", {"net": "b"}))
    assert index_true(lay)
    _same_as_records(lay)
    # destroy c (joined a), then d (joined b): by/a loses c, by/b loses d
    for name in ("c", "d"):
        was = index_begin(lay)
        assert was is True
        with open(lay.record(name)) as f:
            joins = json.load(f)["joins"]
        _gone(lay, name)
        index_after(lay, was, removed=(name, joins))
        assert index_true(lay)
        _same_as_records(lay)
    with monkeypatch.context() as m:
        _no_scan(m)
        assert joiners_of(lay, "a") == [("b", "net"), ("b", "uts")]
        assert joiners_of(lay, "b") == [("e", "net")]
    # destroy e and b: nothing joins anything, no file is left under by/
    for name in ("e", "b"):
        was = index_begin(lay)
        _gone(lay, name)
        index_after(lay, was, removed=(name, {"net": "a", "uts": "a"} if name == "b"
                                       else {"net": "b"}))
    assert os.listdir(f"{index_dir(lay)}/by") == [] and index_true(lay)
    _same_as_records(lay)


def test_a_guest_added_by_something_that_keeps_no_index_is_seen(lay):
    """An older mirrormount (or a create cut short after its record) adds a joiner and leaves
    the index as it was: STATE's stat moved, so the records are read."""
    index_after(lay, index_begin(lay))
    _rec(lay, "old", {"net": "a"})
    assert not index_true(lay) and joiners_indexed(lay, "a") is None
    assert ("old", "net") in joiners_of(lay, "a")
    # The next create or destroy finds it untrue and rebuilds it, "old" included.
    was = index_begin(lay)
    assert was is False
    _rec(lay, "f")
    index_after(lay, was, added=("f", {}))
    assert index_true(lay) and joiners_indexed(lay, "a") == joiners_of(lay, "a")
    assert ("old", "net") in joiners_indexed(lay, "a")


def test_unknown_joins_of_a_removed_guest_rebuild(lay):
    index_after(lay, index_begin(lay))
    was = index_begin(lay)
    _gone(lay, "c")                               # its record was unreadable: joins unknown
    index_after(lay, was, removed=("c", None))
    assert index_true(lay)
    assert joiners_indexed(lay, "a") == [("b", "net"), ("b", "uts")]


def test_a_change_cut_short_leaves_it_untrusted(lay):
    """A create killed after its directory and record were made, before index_after; a
    destroy killed after it removed a guest's directory: the stamp no longer matches."""
    index_after(lay, index_begin(lay))
    stamp = open(f"{index_dir(lay)}/stamp").read()
    index_begin(lay)
    assert open(f"{index_dir(lay)}/stamp").read() == stamp     # begin writes nothing
    _rec(lay, "killed", {"net": "a"})             # ... and the process was killed here
    assert not index_true(lay) and joiners_indexed(lay, "a") is None
    assert ("killed", "net") in joiners_of(lay, "a")
    index_after(lay, index_begin(lay))
    index_begin(lay)
    _gone(lay, "killed")                          # a destroy killed after its rmdir
    assert not index_true(lay)
    _same_as_records(lay)


@pytest.mark.parametrize("content", ["[1, 2", '{"joiners": [["b"]]}', '{"x": []}', "[]"])
def test_a_damaged_entry_is_not_trusted(lay, content):
    index_after(lay, index_begin(lay))
    with open(f"{index_dir(lay)}/by/a", "w") as f:
        f.write(content)
    assert joiners_indexed(lay, "a") is None
    assert joiners_of(lay, "a") == [("b", "net"), ("b", "uts"), ("c", "net")]


def test_a_stamp_of_another_version_or_state_is_not_trusted(lay):
    index_after(lay, index_begin(lay))
    path = f"{index_dir(lay)}/stamp"
    with open(path) as f:
        stamp = json.load(f)
    for bad in ({**stamp, "version": 99}, {**stamp, "state": [0, 0, 0, 0, 0, 0]}, [1]):
        with open(path, "w") as f:
            json.dump(bad, f)
        assert not index_true(lay) and joiners_indexed(lay, "a") is None


def test_nothing_is_written_when_no_guest_is_left(tmp_path):
    lay = Layout(str(tmp_path / "base"), str(tmp_path / "state"))
    os.makedirs(lay.state)
    index_after(lay, index_begin(lay), removed=("gone", {}))
    assert os.listdir(lay.state) == []
    assert joiners_of(lay, "gone") == []


def test_an_error_writing_leaves_it_untrusted_and_raises_nothing(lay, monkeypatch):
    index_after(lay, index_begin(lay))
    was = index_begin(lay)
    _rec(lay, "e", {"net": "b"})

    def full(*a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(joinscan, "write_atomic", full)
    index_after(lay, was, added=("e", {"net": "b"}))          # no exception: create succeeded
    assert not index_true(lay)
    assert joiners_of(lay, "b") == [("d", "uts"), ("e", "net")]

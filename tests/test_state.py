"""mirrormount.guest.state: atomic records, tolerant loading, guest discovery, and the flock that
serializes changes (tested across real processes)."""
from __future__ import annotations

import json
import os
import select
import stat

import pytest

from mirrormount.guest.model import Layout
from mirrormount.guest.state import (RECORD_VERSION, GuestRecord, StateLock, guest_names, load,
                               write_atomic)


@pytest.fixture
def layout(tmp_path):
    return Layout(str(tmp_path / "base"), str(tmp_path / "state"))


def make_guest_dir(layout: Layout, name: str) -> None:
    os.makedirs(layout.guest_dir(name), mode=0o700)


RECORD = GuestRecord(name="c1", mirror="/container/c1", rootfs="/", kinds=("uts", "pid", "mnt"),
                     propagation="mirror+host", hostname="box",
                     created=1700000000.5, guest_only=("/tmp/go",))


def test_write_atomic_and_load_round_trip(layout):
    make_guest_dir(layout, "c1")
    write_atomic(layout.record("c1"), RECORD.to_json())
    assert load(layout, "c1") == RECORD
    assert os.listdir(layout.guest_dir("c1")) == ["guest.json"]     # no temp file left
    st = os.stat(layout.record("c1"))
    assert stat.S_IMODE(st.st_mode) == 0o600
    raw = json.loads(open(layout.record("c1")).read())
    assert raw["kinds"] == ["uts", "pid", "mnt"] and raw["version"] == RECORD_VERSION


def test_write_atomic_replaces_the_old_record(layout):
    make_guest_dir(layout, "c1")
    path = layout.record("c1")
    write_atomic(path, RECORD.to_json())
    before = os.stat(path).st_ino
    newer = GuestRecord("c1", "/container/c1", "/", ("mnt",))
    write_atomic(path, newer.to_json())
    assert load(layout, "c1") == newer
    assert os.stat(path).st_ino != before      # a new file renamed into place, not rewritten


def test_write_atomic_failure_leaves_the_old_record_and_no_temp(layout):
    make_guest_dir(layout, "c1")
    path = layout.record("c1")
    write_atomic(path, RECORD.to_json())
    with pytest.raises(TypeError):
        write_atomic(path, {"name": "c1", "bad": object()})       # not JSON-serializable
    assert load(layout, "c1") == RECORD
    assert os.listdir(layout.guest_dir("c1")) == ["guest.json"]


def test_load_missing_or_corrupt_is_none(layout):
    assert load(layout, "nope") is None
    make_guest_dir(layout, "c1")
    for text in ("{not json", "[1, 2]", "{}", '{"name": "c1"}', "", "null"):
        with open(layout.record("c1"), "w") as f:
            f.write(text)
        assert load(layout, "c1") is None, text


def test_from_json_tolerates_unknown_keys_and_fills_defaults():
    rec = GuestRecord.from_json({"name": "c1", "mirror": "/container/c1", "rootfs": "/",
                                 "kinds": ["mnt"], "from_the_future": {"x": 1}, "version": 9})
    assert rec == GuestRecord("c1", "/container/c1", "/", ("mnt",), version=9)
    assert not hasattr(rec, "from_the_future")
    assert rec.propagation == "mirror" and rec.guest_only == ()
    assert isinstance(rec.kinds, tuple)


def test_from_json_without_kinds_means_mnt_only():
    rec = GuestRecord.from_json({"name": "c1", "mirror": "/m", "rootfs": "/"})
    assert rec.kinds == ("mnt",)


def test_to_json_is_plain_json():
    d = RECORD.to_json()
    assert json.loads(json.dumps(d)) == d
    assert GuestRecord.from_json(d) == RECORD


def test_guest_names_come_from_state_only(layout):
    """A mirror in BASE alone is another STATE's guest (or nobody's): never this one's."""
    assert guest_names(layout) == []                       # neither directory exists yet
    make_guest_dir(layout, "c2")
    os.makedirs(layout.mirror("c1"))                        # BASE only: not ours
    os.makedirs(layout.nursery_dir)                         # hidden: not a guest
    with open(os.path.join(layout.state, "stray-file"), "w"):
        pass
    os.symlink("/", os.path.join(layout.state, "link"))    # not followed
    assert guest_names(layout) == ["c2"]


# ----------------------------------------------------------------------------- StateLock
def _child_lock(path: str, report: int, release: int | None) -> None:
    """In a forked child: take the lock, say "in", optionally wait for the word to release."""
    try:
        with StateLock(path, create=True):
            os.write(report, b"in")
            if release is not None:
                os.read(release, 1)
        os._exit(0)
    except BaseException:  # noqa: BLE001
        os._exit(1)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def test_statelock_excludes_another_process(tmp_path):
    path = str(tmp_path / "state")
    a_out_r, a_out_w = os.pipe()
    a_rel_r, a_rel_w = os.pipe()
    b_out_r, b_out_w = os.pipe()
    children = []
    try:
        a = os.fork()
        if a == 0:
            _child_lock(path, a_out_w, a_rel_r)
        children.append(a)
        assert _readable(a_out_r, 5) and os.read(a_out_r, 2) == b"in"

        b = os.fork()
        if b == 0:
            _child_lock(path, b_out_w, None)
        children.append(b)
        # B must wait while A holds the lock ...
        assert not _readable(b_out_r, 0.3), "second process got the lock while the first held it"
        # ... and get it once A lets go (5 s is a timeout, not a speed limit).
        os.write(a_rel_w, b"x")
        assert _readable(b_out_r, 5) and os.read(b_out_r, 2) == b"in"
        for pid in children:
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        children.clear()
    finally:
        for pid in children:          # never leave a process behind, even on failure
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for fd in (a_out_r, a_out_w, a_rel_r, a_rel_w, b_out_r, b_out_w):
            os.close(fd)


def test_statelock_creates_a_private_directory_and_releases(tmp_path):
    path = tmp_path / "state"
    with StateLock(str(path), create=True) as lock:
        assert len(lock.fds) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert lock.fds == []
    # released: another process takes it at once
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child_lock(str(path), w, None)
    try:
        assert _readable(r, 5) and os.read(r, 2) == b"in"
    finally:
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)


def test_statelock_refresh_locks_a_replaced_directory(tmp_path):
    """STATE can be mounted over while the lock is held (first create); refresh() then locks
    the new directory too. A rename-and-recreate stands in for the mount here."""
    path = tmp_path / "state"
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    # Fork before locking: a child forked while we hold the lock would inherit our flock'd
    # open file descriptions and keep the lock alive after we release it.
    pid = os.fork()
    if pid == 0:
        os.read(go_r, 1)
        _child_lock(str(path), w, None)
    try:
        with StateLock(str(path), create=True) as lock:
            lock.refresh()
            assert len(lock.fds) == 1              # nothing changed: nothing more to lock
            os.rename(path, tmp_path / "under")
            path.mkdir(mode=0o700)
            lock.refresh()
            assert len(lock.fds) == 2
            held = {(os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in lock.fds}
            st = os.stat(path)
            assert (st.st_dev, st.st_ino) in held
            # another process is kept out of the new directory as well ...
            os.write(go_w, b"x")
            assert not _readable(r, 0.3)
        # ... until the lock is released
        assert _readable(r, 5) and os.read(r, 2) == b"in"
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        for fd in (r, w, go_r, go_w):
            os.close(fd)


def test_statelock_without_create_never_makes_state(tmp_path):
    """Only create makes STATE: any other verb with a mistyped --state must leave no
    directory behind."""
    path = tmp_path / "typo"
    with pytest.raises(FileNotFoundError):
        with StateLock(str(path)):
            pass
    assert not path.exists()

"""remove_tree: deletes like rm -r, refuses (deleting nothing) when a mount lies inside, and
stops at a mount that appears while it walks. Real mounts are in vm-tests/test_removal.py;
here the mount table and mount ids are faked, since unit tests may not mount."""
from __future__ import annotations

import os

import pytest

from mirrormount.kernel import removal
from mirrormount.kernel.mountinfo import Mount
from mirrormount.kernel.removal import MountsInside, remove_tree


def tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "g").write_text("y")
    os.symlink("/etc", root / "link-to-etc")      # unlinked, never followed
    return root


def fake_mount(path: str) -> Mount:
    return Mount(mount_id=99, parent_id=1, major=0, minor=99, root="/", mountpoint=path,
                 options="rw")


def test_removes_a_plain_tree_and_never_follows_links(tmp_path):
    t = tree(tmp_path / "t")
    remove_tree(str(t))
    assert not t.exists()
    assert os.path.isdir("/etc")


def test_missing_path_is_fine(tmp_path):
    remove_tree(str(tmp_path / "nope"))


def test_a_file_is_unlinked(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    remove_tree(str(f))
    assert not f.exists()


@pytest.mark.parametrize("where", ["t", "t/a", "t/a/b"])
def test_refuses_and_deletes_nothing_when_something_is_mounted_inside(tmp_path, monkeypatch,
                                                                       where):
    t = tree(tmp_path / "t")
    before = sorted(p.relative_to(tmp_path) for p in t.rglob("*"))
    mounted = str(tmp_path / where)
    monkeypatch.setattr(removal.mountinfo, "read",
                        lambda *a, **k: (fake_mount("/"), fake_mount(mounted)))
    with pytest.raises(MountsInside) as err:
        remove_tree(str(t))
    assert mounted in str(err.value) and err.value.mounts == [mounted]
    assert sorted(p.relative_to(tmp_path) for p in t.rglob("*")) == before


def test_a_mount_beside_the_tree_does_not_count(tmp_path, monkeypatch):
    t = tree(tmp_path / "t")
    monkeypatch.setattr(removal.mountinfo, "read",
                        lambda *a, **k: (fake_mount(str(tmp_path / "t2")),))
    remove_tree(str(t))
    assert not t.exists()


def test_stops_at_a_mount_that_appears_while_walking(tmp_path, monkeypatch):
    t = tree(tmp_path / "t")
    real = removal._mnt_id

    def mnt_id(fd: int) -> int:
        # the directory a/b is "another mount" (as a bind made mid-walk would be)
        return real(fd) + (1 if os.readlink(f"/proc/self/fd/{fd}").endswith("/a/b") else 0)
    monkeypatch.setattr(removal, "_mnt_id", mnt_id)
    with pytest.raises(MountsInside):
        remove_tree(str(t))
    assert (t / "a" / "b" / "f").read_text() == "x"     # nothing beyond the mount touched

"""`mount --mkdir`'s pure parts (guest/mkdirs.py, ops.MakeTarget); the real thing, with
symlinks and failures, is vm-tests/test_mount_mkdir.py."""
from __future__ import annotations

import pytest

from mirrormount.errors import UsageError
from mirrormount.guest import mkdirs
from mirrormount.guest.mountops import MakeTarget
from mirrormount.guest.ops import render


@pytest.mark.parametrize("target, parts", [
    ("/a/b/c", ["a", "b", "c"]), ("a//b/", ["a", "b"]), ("/", []),
    ("/a/../b/./c", ["a", "..", "b", ".", "c"])])
def test_components_are_what_the_kernel_walks(target, parts):
    assert mkdirs.components(target) == parts


@pytest.mark.parametrize("parts", [["x", ".."], ["..", "x"], ["x", ".", "y"]])
def test_dot_names_after_a_missing_directory_are_refused(parts):
    with pytest.raises(UsageError, match="does not exist; nothing was changed"):
        mkdirs.missing_names(parts, "/t in c1")


def test_names_to_make_and_the_path_they_give():
    assert mkdirs.missing_names(["a", "b"], "w") == ("a", "b")
    assert mkdirs.join("/srv", ("a", "b")) == "/srv/a/b"
    assert mkdirs.join("/", ("a",)) == "/a"
    assert mkdirs.join("/srv", ()) == "/srv"


def test_the_dry_run_shows_where_the_directories_are_made():
    through = MakeTarget("why", "c1", "/container/c1", "", "/srv", ("a", "b c"))
    assert "mkdir -p -m 0755 '/container/c1/srv/a/b c'" in render([through])
    inside = MakeTarget("why", "c1", "/container/c1", "/run/mirrormount/c1/ns/mnt", "/",
                        ("a",))
    assert ("nsenter --mount=/run/mirrormount/c1/ns/mnt mkdir -p -m 0755 /a"
            in render([inside]))

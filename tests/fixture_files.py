"""Paths to and readers of the captured fixture files (see fixtures/mountinfo/README.md).

Nothing in tests/ needs root or mounts anything: the files were captured once, in throwaway
sandboxes, by fixtures/capture.sh.
"""
from __future__ import annotations

from pathlib import Path

from mirrormount.kernel.mountinfo import MountTable

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOUNTINFO = FIXTURES / "mountinfo"
PROC = FIXTURES / "proc"


def mountinfo_text(name: str) -> str:
    """A captured mountinfo file as text (surrogateescape, as mountinfo.read decodes it)."""
    return (MOUNTINFO / f"{name}.mountinfo").read_text(encoding="utf-8", errors="surrogateescape")


def mountinfo_table(name: str) -> MountTable:
    return MountTable.parse(mountinfo_text(name))


def mountinfo_names() -> list[str]:
    return sorted(p.name[: -len(".mountinfo")] for p in MOUNTINFO.glob("*.mountinfo"))


def proc_text(name: str) -> str:
    return (PROC / name).read_text(encoding="utf-8", errors="replace")

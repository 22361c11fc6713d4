"""Pure parsing of /proc/PID/mountinfo into frozen Mount records, plus tree and peer-group
queries. No I/O except the ``read`` convenience; everything else takes text or records.

Line format (proc(5)):
  36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
  (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
(7) is zero or more optional fields: shared:N, master:N, propagate_from:N, unbindable.

Escaping (fs/proc_namespace.c, show_mountinfo and mangle): the kernel writes root (4),
mountpoint (5), filesystem type (9, "type[.subtype]") and source (10) with space, tab,
newline and backslash as three-digit octal (\\040 ...); a Mount holds them decoded. The two
option fields (6, 11) are kept as written: each option in them is escaped on its own by
seq_show_option (include/linux/seq_file.h), and decoding a \\054 would make it
indistinguishable from the comma between options. format_line writes a Mount back as the
kernel would.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from ..record import field, record

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(text: str) -> str:
    """Undo the kernel's octal escaping of mountinfo paths (\\040 -> space)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def escape(text: str) -> str:
    """Inverse of unescape, for rendering and for writing fixtures."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


@record(frozen=True)
class Mount:
    """One line of /proc/PID/mountinfo (proc(5)), parsed."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str            # path inside the filesystem that forms this mount's root
    mountpoint: str      # relative to the reading process's root
    options: str         # per-mount options
    shared: int | None = None        # peer group this mount belongs to
    master: int | None = None        # peer group it receives from (slave)
    propagate_from: int | None = None
    unbindable: bool = False
    fstype: str = ""
    source: str = ""
    super_options: str = ""

    @property
    def dev(self) -> str:
        return f"{self.major}:{self.minor}"

    @property
    def propagation(self) -> str:
        """findmnt-style words: shared, private, slave, unbindable, or combinations."""
        words = []
        if self.shared is not None:
            words.append("shared")
        if self.master is not None:
            words.append("slave")
        if self.unbindable:
            words.append("unbindable")
        return ",".join(words) or "private"


class ParseError(ValueError):
    pass


# The tags that carry a peer group number (fs/proc_namespace.c show_mountinfo).
_NUMBERED_TAGS = ("shared", "master", "propagate_from")


def parse_line(line: str) -> Mount:
    """One mountinfo record (with or without its newline) -> Mount; ParseError (a ValueError)
    for anything that is not one."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
        mount_id, parent_id = int(fields[0]), int(fields[1])
        major, minor = (int(x) for x in fields[2].split(":"))
    except (ValueError, IndexError) as exc:
        raise ParseError(f"bad mountinfo line: {line!r}") from exc
    groups: dict[str, int] = {}
    unbindable = False
    for tag in fields[6:sep]:
        key, _, val = tag.partition(":")
        if key in _NUMBERED_TAGS:
            try:
                groups[key] = int(val)
            except ValueError as exc:
                raise ParseError(f"bad optional field {tag!r} in mountinfo line: {line!r}") \
                    from exc
        elif tag == "unbindable":
            unbindable = True
        # Anything else is skipped: proc_pid_mountinfo(5) says "Parsers should ignore all
        # unrecognized optional fields", so a tag a newer kernel adds must not break us.
    tail = fields[sep + 1:]
    return Mount(
        mount_id=mount_id, parent_id=parent_id, major=major, minor=minor,
        root=unescape(fields[3]), mountpoint=unescape(fields[4]), options=fields[5],
        shared=groups.get("shared"), master=groups.get("master"),
        propagate_from=groups.get("propagate_from"), unbindable=unbindable,
        fstype=unescape(tail[0]) if tail else "",
        source=unescape(tail[1]) if len(tail) > 1 else "",
        super_options=tail[2] if len(tail) > 2 else "",
    )


def format_line(m: Mount) -> str:
    """The mountinfo record the kernel would write for m, without the trailing newline:
    parse_line(format_line(m)) == m.

    Field order, the " - " separator and the tag order (shared, master, propagate_from,
    unbindable) are show_mountinfo's (fs/proc_namespace.c); root, mountpoint, fstype and
    source get mangle()'s octal escapes. (The kernel writes propagate_from only beside
    master; any combination held by m is written, so that every Mount round-trips.)

    The option fields are written as held, already escaped (see the module docstring).
    ValueError if one holds a raw space or newline: the kernel never writes either there,
    and such a line would not parse back to m.
    """
    for name, value in (("options", m.options), ("super_options", m.super_options)):
        if " " in value or "\n" in value:
            raise ValueError(f"{name} {value!r} holds a raw space or newline; mountinfo "
                             "option fields are kept escaped")
    tags = "".join(f" {key}:{value}" for key, value in (
        ("shared", m.shared), ("master", m.master), ("propagate_from", m.propagate_from))
        if value is not None)
    if m.unbindable:
        tags += " unbindable"
    return (f"{m.mount_id} {m.parent_id} {m.major}:{m.minor} {escape(m.root)} "
            f"{escape(m.mountpoint)} {m.options}{tags} - {escape(m.fstype)} "
            f"{escape(m.source)} {m.super_options}")


def parse(text: str) -> tuple[Mount, ...]:
    return tuple(parse_line(line) for line in text.split("\n") if line.strip())


def read(pid: int | str = "self", proc: str = "/proc") -> tuple[Mount, ...]:
    with open(f"{proc}/{pid}/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def is_under(path: str, top: str) -> bool:
    """True when path is top or lies beneath it (by components, not string prefix)."""
    top = top.rstrip("/") or "/"
    return path == top or top == "/" or path.startswith(top + "/")


@record(frozen=True)
class MountTable:
    """A namespace's mount list with indexes for the queries we need."""

    mounts: tuple[Mount, ...]
    by_id: dict[int, Mount] = field(default_factory=dict, compare=False)
    # mountpoint -> every mount stacked there, in table order (at() is then O(stack), which
    # keeps `list` linear on a host with tens of thousands of mounts)
    by_mountpoint: dict[str, list[Mount]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, mounts: Iterable[Mount]) -> MountTable:
        ms = tuple(mounts)
        by_mp: dict[str, list[Mount]] = {}
        for m in ms:
            by_mp.setdefault(m.mountpoint, []).append(m)
        return cls(ms, {m.mount_id: m for m in ms}, by_mp)

    @classmethod
    def parse(cls, text: str) -> MountTable:
        return cls.of(parse(text))

    def __iter__(self) -> Iterator[Mount]:
        return iter(self.mounts)

    def __len__(self) -> int:
        return len(self.mounts)

    def root(self) -> Mount:
        """The mount whose parent is not in the table (the reader's '/')."""
        for m in self.mounts:
            if m.parent_id not in self.by_id or m.parent_id == m.mount_id:
                return m
        raise ParseError("mount table has no root")

    def at(self, mountpoint: str) -> Mount | None:
        """The topmost mount at exactly this mountpoint: the one no other mount at the same
        mountpoint sits on. (Not simply the last line: a mount propagated *under* an existing
        one, a "tucked" mount, is listed later but lies beneath.)"""
        return self._top(self.by_mountpoint.get(mountpoint, []))

    @staticmethod
    def _top(stack: list[Mount]) -> Mount | None:
        if len(stack) <= 1:
            return stack[0] if stack else None
        below = {m.parent_id for m in stack}
        tops = [m for m in stack if m.mount_id not in below]
        return tops[-1] if tops else stack[-1]

    def under(self, top: str) -> list[Mount]:
        return [m for m in self.mounts if is_under(m.mountpoint, top)]

    def children(self, mount_id: int) -> list[Mount]:
        return [m for m in self.mounts if m.parent_id == mount_id and m.mount_id != mount_id]

    def containing(self, path: str) -> Mount | None:
        """The mount a path lies on (longest mountpoint prefix, topmost of a stack)."""
        best = ""
        for m in self.mounts:
            if is_under(path, m.mountpoint) and len(m.mountpoint) > len(best):
                best = m.mountpoint
        return self.at(best) if best else None

    def peer_groups(self, exclude_under: str | None = None) -> set[int]:
        """Every shared peer group id in use, optionally ignoring a subtree."""
        return {m.shared for m in self.mounts if m.shared is not None
                and not (exclude_under and is_under(m.mountpoint, exclude_under))}

"""Output columns as util-linux prints them (findmnt, lsblk, lsns): one renderer for every
command that lists records (list, busy, busy --all, ps).

A command describes its columns once (a ``Columns`` of ``Column`` specs: the upper-case
name, one line of help, which to show by default), builds its rows as dicts keyed by column
name, and calls ``Columns.render`` with what the user asked for. The shared options below
(``OUTPUT_OPT``, ``NOHEADINGS_OPT``, ``RAW_OPT``, ``SORT_OPT``) give every such command the
same flags; ``Columns.epilog()`` is the "Available output columns" list for its --help
(pass it as ``@app.command(epilog=...)``)::

    PS = Columns([Column("PID", "host process id", numeric=True), ...], default=["PID", ...])

    @app.command(epilog=PS.epilog())
    def ps(..., output: Optional[str] = OUTPUT_OPT, noheadings: bool = NOHEADINGS_OPT,
           raw: bool = RAW_OPT, sort: Optional[str] = SORT_OPT):
        rows = [{"PID": 42, "USER": "root", ...}, ...]
        typer.echo(PS.render(rows, output, sort=sort, raw=raw, headings=not noheadings))

Three forms, as libsmartcols has them:
- table (the default): left-aligned columns two spaces apart, numeric ones right-aligned;
  control characters and backslashes escaped in octal, as the kernel does in mountinfo
  (``safe``), so a file name cannot forge a line.
- raw (-r): one record a line, one space between fields, and each value escaped by
  ``raw_escape``: blanks, backslashes and every byte that is not printable ASCII become
  ``\\xHH`` (util-linux include/carefulputc.h: fputs_nonblank), so awk's fields are the
  columns even for a path with a space.
- no headings (-n): either form without its header line.

A missing value (None or "") prints as "-", so no field is ever empty.

Errors: ``UsageError`` (exit 2, one line naming the valid columns) for an unknown column in
-o or --sort.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

from ..record import record
from ..errors import UsageError

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing: busy's fast path
if TYPE_CHECKING:       # prints through this module (cli/busyview.py)
    from typing import Any, Optional
    Row = Mapping[str, Any]


@record(frozen=True)
class Column:
    """One output column. ``name`` is upper-case, as -o, --sort and the header spell it;
    ``help`` is its one line in --help; ``numeric`` right-aligns it in a table and sorts it
    as a number."""

    name: str
    help: str
    numeric: bool = False


class Columns:
    """The columns a command can print, and the ones it prints when -o is not given."""

    def __init__(self, columns: Sequence[Column], default: Sequence[str]) -> None:
        self.columns = {c.name: c for c in columns}
        self.default = list(default)
        unknown = [d for d in self.default if d not in self.columns]
        assert not unknown, f"default columns not declared: {unknown}"

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def column(self, name: str, option: str = "--output") -> Column:
        """The column called ``name`` (any case). UsageError naming the valid ones."""
        col = self.columns.get(name.strip().upper())
        if col is None:
            raise UsageError(f"{option}: unknown column {name.strip()!r} "
                             f"(valid: {','.join(self.columns)})")
        return col

    def select(self, output: Optional[str],
               default: Optional[Sequence[str]] = None) -> list[Column]:
        """The columns of ``-o A,B,C`` in that order (any case); the defaults (``default``,
        or the Columns' own) for None. As findmnt, a leading '+' adds to the defaults:
        ``-o +CONFINE``."""
        default = self.default if default is None else list(default)
        if output is None:
            return [self.column(n) for n in default]
        names = output[1:] if output.startswith("+") else output
        picked = [self.column(n) for n in names.split(",") if n.strip()]
        if not picked:
            raise UsageError("--output: no column given "
                             f"(valid: {','.join(self.columns)})")
        if output.startswith("+"):
            picked = [self.column(n) for n in default] + picked
        return picked

    def render(self, rows: Iterable[Row], output: Optional[str] = None, *,
               sort: Optional[str] = None, raw: bool = False, headings: bool = True,
               default: Optional[Sequence[str]] = None) -> str:
        """The rows as text, without a trailing newline ("" for no rows and no heading).

        ``rows``: dicts keyed by column name; a key the row lacks prints "-". ``sort``: a
        column name; rows keep their order when None (Python's sort is stable, so equal
        keys keep it too). ``default``: the columns shown without -o, if not the Columns'
        own. Raises UsageError for an unknown column in ``output`` or ``sort``."""
        cols = self.select(output, default)
        rows = list(rows)
        if sort is not None:
            key = self.column(sort, "--sort")
            rows.sort(key=lambda r: _sort_key(r.get(key.name), key.numeric))
        cells = [[_text(r.get(c.name)) for c in cols] for r in rows]
        if raw:
            lines = [" ".join(raw_escape(v) for v in line) for line in cells]
            if headings:
                lines.insert(0, " ".join(c.name for c in cols))
            return "\n".join(lines)
        shown = [[safe(v) for v in line] for line in cells]
        widths = [max([len(c.name) if headings else 0, *(len(line[i]) for line in shown)])
                  for i, c in enumerate(cols)]
        out = []
        if headings:
            out.append(_line([c.name for c in cols], widths, [False] * len(cols)))
        numeric = [c.numeric for c in cols]
        out.extend(_line(line, widths, numeric) for line in shown)
        return "\n".join(out)

    def epilog(self) -> str:
        """The "Available output columns" list for --help (and the man page). The leading
        \\b keeps click from re-wrapping it into one paragraph."""
        width = max(len(n) for n in self.columns)
        lines = ["\b", "Available output columns:"]
        lines += [f"  {c.name.ljust(width)}  {c.help}" for c in self.columns.values()]
        lines.append(f"Default: -o {','.join(self.default)}")
        return "\n".join(lines)


def table(rows: list[list[str]], headers: list[str]) -> str:
    """util-linux style columns: upper-case headers, left-aligned, two spaces apart (cells
    as given: the caller escapes them)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _line(values: list[str], widths: list[int], right: list[bool]) -> str:
    return "  ".join(v.rjust(w) if r else v.ljust(w)
                     for v, w, r in zip(values, widths, right)).rstrip()


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _sort_key(value: Any, numeric: bool) -> tuple:
    """Missing values last; numbers as numbers (a column of pids sorts 9 before 10)."""
    if value is None or value == "" or value == [] or value == ():
        return (1, 0, "")
    if numeric:
        try:
            return (0, float(value), "")
        except (TypeError, ValueError):
            pass
    return (0, 0, _text(value))


def safe(text: str) -> str:
    """A value fit for a table cell: control characters, DEL and backslashes in octal
    (``\\012``), as mountinfo escapes them; everything else, spaces included, as is."""
    return "".join(f"\\{ord(c):03o}" if (ord(c) < 32 or c in "\\\x7f") else c for c in text)


def raw_escape(text: str) -> str:
    """A value for raw output (-r), byte by byte as util-linux's fputs_nonblank writes it:
    a blank (space, tab), a backslash, and any byte that is not printable ASCII
    (0x00-0x1f, 0x7f, and 0x80-0xff: UTF-8 and undecodable file names alike) become
    ``\\xHH``. The bytes are the file system's (os.fsencode: surrogate escapes undone)."""
    out = []
    for b in os.fsencode(text):
        if b in (0x20, 0x09, 0x5C) or not 0x20 <= b < 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(chr(b))
    return "".join(out)


# The options every column-printing command shares (same names, same help everywhere).
# Built on first use (PEP 562): the renderer above is also the fast path's (cli/fastpath.py),
# which must not import typer.
def _shared_options() -> dict[str, Any]:
    import typer
    return {
        "OUTPUT_OPT": typer.Option(None, "-o", "--output", metavar="COLS",
                                   help="Columns to print, comma-separated (see the list "
                                        "below); +COLS adds to the default ones."),
        "NOHEADINGS_OPT": typer.Option(False, "-n", "--noheadings", help="Print no header line."),
        "RAW_OPT": typer.Option(False, "-r", "--raw",
                                help="One record a line, fields one space apart; spaces and "
                                     "unsafe bytes escaped as \\xHH."),
        "SORT_OPT": typer.Option(None, "--sort", metavar="COL",
                                 help="Sort the records by this column."),
    }


def __getattr__(name: str) -> Any:
    if name in ("OUTPUT_OPT", "NOHEADINGS_OPT", "RAW_OPT", "SORT_OPT"):
        opts = _shared_options()
        globals().update(opts)       # built once: the same objects for every command
        return opts[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The hot path: `--version`, a plain `create` and a plain `busy TARGET`, parsed here
without typer or click.

Why: importing typer and click costs more than a guest's whole create (bench/results/
create.md), and a CLI create must not cost more than the shell recipe it replaces. So
entry.main asks ``run`` first; it answers only what it recognises completely and returns
None for everything else, which then goes to the typer CLI (cli/common.py), the one place
for anything a person reads: help, usage errors, completion.

What is recognised (anything else falls through, untouched):
- ``--version`` or ``-V`` alone;
- ``[--base DIR] [--state DIR] busy TARGET [-J|--json]`` (run_busy; the finder's answer
  printed through cli/busyview.py as cli/busy.py prints it);
- ``[--base DIR] [--state DIR] create NAME... [--rootfs DIR] [--hostname H] [--ns K,...]
  [--propagation P] [--confine C] [--drop-caps C,...]``, in click's syntax: options
  anywhere among the names, ``--opt VALUE`` or ``--opt=VALUE``, the last one given wins,
  ``--`` ends the options; MIRRORMOUNT_BASE and MIRRORMOUNT_STATE as typer reads them (an
  empty one counts as unset, as in click).
Falls through: any other option (--help, --json, --dry-run, --recipe, -h, a typo), a value
that starts with '-' or is missing, no name, or MIRRORMOUNT_NO_FASTPATH=1 (how the tests
run the same argv both ways, tests/test_fastpath.py and vm-tests/test_fastpath_live.py),
or _MIRRORMOUNT_COMPLETE set (shell completion is click's).

The work itself is the library's (guest/guests.py), called as cli/guests.py's create calls
it for these options; a bad value is found there (UsageError) and reported through
common.reports_errors' own translation (``_reported``), imported then: so the error path
pays for typer, and says exactly what the typer path says, with the same exit code.
"""
from __future__ import annotations

import os
import sys

from .. import __version__
from ..kernel import signals

GLOBALS = ("--base", "--state")
CREATE_VALUES = ("--rootfs", "--hostname", "--ns", "--propagation", "--confine", "--drop-caps")
VERSION = ("--version", "-V")


class _Fallback(Exception):
    """Not ours: let typer parse it."""


def run(argv: list[str]) -> int | None:
    """Run argv if it is a hot path; its exit status, or None to leave it to typer."""
    if os.environ.get("MIRRORMOUNT_NO_FASTPATH") == "1":
        return None
    if os.environ.get("_MIRRORMOUNT_COMPLETE"):     # shell completion asks click, never us
        return None
    if len(argv) == 1 and argv[0] in VERSION:
        try:
            sys.stdout.write(f"mirrormount {__version__}\n")
            sys.stdout.flush()
        except BrokenPipeError:     # the reader went away: silent, 141, as click's EPIPE
            signals.silence_stdout()
            return signals.EXIT_EPIPE
        return 0
    try:
        globals_, rest = _options(argv, GLOBALS, stop_at_positional=True)
        if rest and rest[0] == "busy":
            return run_busy(globals_, rest[1:])
        if not rest or rest[0] != "create":
            return None
        opts, names = _options(rest[1:], CREATE_VALUES, stop_at_positional=False)
    except _Fallback:
        return None
    if not names:
        return None
    base, state = _dirs(globals_)
    try:
        _create(base, state, names, opts)
    except BaseException as exc:
        return _failed(exc)
    signals.ending()
    return 0


def _dirs(globals_: dict[str, str]) -> tuple[str, str]:
    """--base and --state: given on the command line, even empty, it wins; else the
    variable, unless empty; else the default (as click reads them)."""
    base = globals_.get("--base", os.environ.get("MIRRORMOUNT_BASE") or "/container")
    state = globals_.get("--state", os.environ.get("MIRRORMOUNT_STATE") or "/run/mirrormount")
    return base, state


def _failed(exc: BaseException) -> int:
    """A command's exception as common.reports_errors reports it: one line on stderr, its
    exit status. typer is imported only here, to say what went wrong."""
    signals.ending()
    from .common import _reported
    reported = _reported(exc)
    if reported is exc:
        raise exc
    code = getattr(reported, "exit_code", None)
    if not isinstance(code, int):       # pragma: no cover - _reported returns typer.Exit
        raise exc
    return code


def _options(argv: list[str], known: tuple[str, ...], stop_at_positional: bool
             ) -> tuple[dict[str, str], list[str]]:
    """Split argv into {option: value} (the last wins) and positionals, as click does for
    options that each take one value. Anything else that looks like an option: _Fallback.
    stop_at_positional: a group's options end at its command name."""
    opts: dict[str, str] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            args.extend(argv[i + 1:])
            break
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            if name not in known:
                raise _Fallback(a)
            if not eq:
                i += 1
                if i >= len(argv) or argv[i].startswith("-"):
                    raise _Fallback(a)         # missing, or a dash value: click decides
                value = argv[i]
            opts[name] = value
        elif stop_at_positional:
            args.extend(argv[i:])
            break
        else:
            args.append(a)
        i += 1
    return opts, args


def _create(base: str, state: str, names: list[str], opts: dict[str, str]) -> None:
    """cli/guests.py's create, for a flag-built recipe with neither --dry-run nor --json.
    Checked whole before the first change; each guest a whole; a batch cut short says what
    was done (PartlyDone), as there."""
    from ..errors import UsageError
    from ..guest import faults
    from ..guest.guests import Guests
    from ..guest.model import (layout_of, parse_caps, parse_kinds, validate_confine,
                               validate_propagation)
    from ..guest.recipe import Recipe
    guests = Guests(layout_of(base, state))
    if len(set(names)) != len(names):
        raise UsageError("a name is given twice")
    recipe = Recipe(opts.get("--rootfs") or "/", opts.get("--hostname"),
                    parse_kinds(opts.get("--ns")),
                    validate_propagation(opts.get("--propagation")),
                    confine=validate_confine(opts.get("--confine")),
                    drop_caps=parse_caps(opts.get("--drop-caps")))
    reqs = [guests.validate_create(recipe.request(n)) for n in names]
    for req in reqs:
        guests.plan(req)
    done: list[str] = []
    for req in reqs:
        try:
            with signals.deferred():        # a stop lands between guests, or rolls one back
                info, _ = guests.create(req)
                done.append(info.name)
                sys.stdout.write(f"created {info.name}: {info.mirror} "
                                 f"(namespaces {','.join(info.namespaces)})\n")
                sys.stdout.flush()
                faults.at("reported")
        except BaseException as exc:
            signals.end_batch("create", exc, done, [r.name for r in reqs if r.name not in done])


# ---------------------------------------------------------------------------- busy TARGET
BUSY_FLAGS = ("--json", "-J")


def run_busy(globals_: dict[str, str], argv: list[str]) -> int | None:
    """``busy TARGET [-J|--json]`` (the flag anywhere, ``--`` ends the options): cli/busy.py's
    busy for one target without -o/-n/-r/--sort, printed through the same cli/busyview.py.
    None (typer's) for anything else: --all, --help, a column option, no or two targets, a
    target that starts with '-'."""
    json_out = False
    targets: list[str] = []
    for i, a in enumerate(argv):
        if a == "--":
            targets.extend(argv[i + 1:])
            break
        if a in BUSY_FLAGS:
            json_out = True
        elif a.startswith("-") and a != "-":
            return None
        else:
            targets.append(a)
    if len(targets) != 1:
        return None
    base, state = _dirs(globals_)
    try:
        code = _busy(base, state, targets[0], json_out)
    except BaseException as exc:
        return _failed(exc)
    signals.ending()
    return code


def _busy(base: str, state: str, target: str, json_out: bool) -> int:
    """Exit 3 busy, 0 not busy, as cli/busy.py."""
    from ..busy.finder import find_pins
    from ..errors import EXIT_BUSY, EXIT_OK
    from ..guest.model import layout_of
    rep = find_pins(target, layout_of(base, state))
    if json_out:
        import json
        _echo(json.dumps(rep.to_json(), indent=2, sort_keys=False))
    else:
        from .busyview import render_report
        _echo(render_report(rep))
    return EXIT_BUSY if rep.busy else EXIT_OK


def _echo(text: str) -> None:
    """As typer.echo (click.echo) writes it: text and a newline, flushed. click removes ANSI
    escapes when stdout is not a terminal and may re-wrap a stdout whose encoding it
    distrusts; for ASCII text without ESC that changes nothing, so only other text pays
    for importing click."""
    if text.isascii() and "\x1b" not in text:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        import click
        click.echo(text)

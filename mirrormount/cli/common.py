"""What every CLI command shares: the typer app and its global options (--base, --state,
--json, --version), the one error handler that turns domain and kernel errors into one
stderr line and an exit code (0 ok, 1 failed, 2 usage with nothing changed, 3 busy; 128+N
stopped by signal N: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; 141, silently, when stdout's
reader has gone), and the util-linux style rendering helpers. Command modules (guests.py,
busy.py) import this; it imports none of them.
"""
from __future__ import annotations

import functools
import json
import os
import signal
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from .. import __version__
from ..errors import EXIT_FAILED, MirrormountError, PartlyDone, describe
from ..guest.guests import Guests
from ..guest.model import Layout
from ..kernel import signals
from ..kernel.mountinfo import ParseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Mirror each guest's mount tree on the host with shared subtrees.")

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    def __init__(self, base: str, state: str, json_out: bool) -> None:
        self.layout = Layout(os.path.abspath(base), os.path.abspath(state))
        self.json = json_out

    @property
    def guests(self) -> Guests:
        return Guests(self.layout)


def fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"mirrormount: {message}", err=True)
    return typer.Exit(code)


def reports_errors(fn: F) -> F:
    """Turn domain and kernel errors into one stderr line and the documented exit code.

    MirrormountError: its exit_code. Any OSError (a KernelError from a syscall wrapper,
    also one raised in a forked child and re-raised here by kernel.child; an OSError from
    Python itself): exit 1, described by errors.describe, the only caller of it. A stop
    signal (signals.Stopped: Ctrl-C, SIGTERM, SIGHUP; or a KeyboardInterrupt where
    mirrormount.entry did not install the handlers): "interrupted", "terminated" or "hung
    up", exit 128+N, once the executor has rolled back. EPIPE on stdout (the reader went
    away): nothing to say and nobody to say it to, exit 141.

    Once the command is over, however it ends, later stop signals are ignored: the process
    only reports and exits (one line, not two)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            signals.ending()
            reported = _reported(exc)
            if reported is exc:
                raise
            raise reported from None
        signals.ending()
        return result

    return wrapper  # type: ignore[return-value]


def _reported(exc: BaseException) -> BaseException:
    """The exception that ends the command: typer.Exit after one line on stderr for what we
    know how to say; the exception itself for anything else (typer.Exit, a bug)."""
    if _reader_gone(exc) or (isinstance(exc, PartlyDone) and _reader_gone(exc.cause)):
        # Nobody is left to read a line, nor what a batch did (`create a b c | head -0`:
        # the first "created" line meets EPIPE and ends the batch): silent, 141.
        signals.silence_stdout()
        return typer.Exit(signals.EXIT_EPIPE)
    if isinstance(exc, PartlyDone):
        # One line: why the failing name failed, then what was and was not done. Exit 1,
        # or 128+N when a stop signal ended the batch.
        cause = exc.cause
        if isinstance(cause, OSError):
            text, code = describe(cause), EXIT_FAILED
        elif isinstance(cause, signals.Stopped):
            text, code = str(cause), cause.exit_code
        elif isinstance(cause, KeyboardInterrupt):
            text, code = signals.STOPS[signal.SIGINT], 128 + signal.SIGINT
        else:
            text, code = str(cause), EXIT_FAILED
        return fail(f"{text}; {exc.tail}", code)
    if isinstance(exc, MirrormountError):
        return fail(str(exc), exc.exit_code)
    if isinstance(exc, OSError):
        return fail(describe(exc), EXIT_FAILED)
    if isinstance(exc, ParseError):
        return fail(f"cannot read the mount table: {exc}", EXIT_FAILED)
    if isinstance(exc, signals.Stopped):
        return fail(str(exc), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return fail(signals.STOPS[signal.SIGINT], 128 + signal.SIGINT)
    return exc


def _reader_gone(exc: BaseException) -> bool:
    """EPIPE on our stdout (not a helper's pipe: that is an operation that failed)."""
    return isinstance(exc, BrokenPipeError) and signals.stdout_gone()


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def want_json(ctx: typer.Context, local: bool) -> bool:
    return local or settings(ctx).json


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """util-linux style columns: upper-case headers, left-aligned, two spaces apart."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mirrormount {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    base: str = typer.Option("/container", "--base", envvar="MIRRORMOUNT_BASE",
                             help="Where the mirrors live."),
    state: str = typer.Option("/run/mirrormount", "--state", envvar="MIRRORMOUNT_STATE",
                              help="Records and nsfs binds."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = Settings(base, state, json_out)


JSON_OPT = typer.Option(False, "--json", help="Machine-readable output on stdout.")

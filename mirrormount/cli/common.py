"""What every CLI command shares: the typer app and its global options (--base, --state,
-J/--json, -V/--version, -h/--help), the help format, the one error handler that turns
domain and kernel errors into one stderr line and an exit code (0 ok, 1 failed, 2 usage
with nothing changed, 3 busy; 128+N stopped by signal N: 130 Ctrl-C, 143 SIGTERM, 129
SIGHUP; 141, silently, when stdout's reader has gone), and JSON output (columns.py renders
tables). Command modules (guests.py, busy.py) import this; it imports none of them.

Every command registered with ``@app.command()`` is a ``Command`` (``App.command`` makes it
the default), so a new command gets, with no code of its own: -h as --help (click passes the
root's help_option_names down to every sub-context), help without typer's stray escapes and
with its arguments' help (``help_records``), a man page entry (cli/manpage.py walks the same
tree) and guest-name completion for an argument called ``name`` or ``names``
(cli/completion.attach).
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import signal
from collections.abc import Callable, MutableMapping
from typing import Any, Optional, TypeVar

import click
import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__
from ..errors import EXIT_FAILED, MirrormountError, PartlyDone, UsageError, describe
from ..guest.guests import Guests
from ..guest.model import Layout, layout_of
from ..kernel import signals
from ..kernel.mountinfo import ParseError
from .columns import table  # noqa: F401  (re-exported: commands import it from here)

HELP_OPTIONS = ["-h", "--help"]       # as util-linux: -h is --help on every command


def help_records(cmd: click.Command, ctx: click.Context
                 ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(arguments, options) of ``cmd`` as (term, text) rows, as --help and the man page
    show them.

    Two repairs of what typer 0.20 hands click 8.5 (both measured here, see
    tests/test_help.py):
    - An argument's help= is lost: TyperArgument sets ``self.help`` and then calls
      click's Parameter.__init__, which (click 8.5) assigns ``self.help`` itself (to
      None, as typer does not pass it on). We read it back from the command function's
      signature, where typer's ArgumentInfo keeps it.
    - Option help ends in "\\[default: 5.0]": typer escapes the "[...]" it appends with
      rich.markup.escape whenever rich is importable (for an HTML export), even with
      rich_markup_mode=None, when nothing will ever unescape it. We undo exactly that."""
    args: list[tuple[str, str]] = []
    opts: list[tuple[str, str]] = []
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Argument):
            args.append((param.make_metavar(ctx), argument_help(cmd, param)))
        else:
            rec = param.get_help_record(ctx)
            if rec is not None:
                opts.append((rec[0], rec[1].replace("\\[", "[")))
    return args, opts


def argument_help(cmd: click.Command, param: click.Parameter) -> str:
    """The help= given to typer.Argument for ``param`` ("" when none)."""
    if getattr(param, "help", None):
        return str(getattr(param, "help"))
    if cmd.callback is None or param.name is None:
        return ""
    try:
        declared = inspect.signature(cmd.callback).parameters.get(param.name)
    except (TypeError, ValueError):
        return ""
    text = getattr(declared.default, "help", None) if declared is not None else None
    return inspect.cleandoc(text) if isinstance(text, str) else ""


def _format_options(cmd: click.Command, ctx: click.Context,
                    formatter: click.HelpFormatter) -> None:
    args, opts = help_records(cmd, ctx)
    if args:
        with formatter.section("Arguments"):
            formatter.write_dl(args)
    if opts:
        with formatter.section("Options"):
            formatter.write_dl(opts)


class Command(TyperCommand):
    """Every mirrormount command (App.command's default class): click's plain help, with
    the repairs of help_records, and guest names completing for its NAME argument."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from .completion import attach
        attach(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _format_options(self, ctx, formatter)


class Group(TyperGroup):
    """The mirrormount command itself: plain help as Command, and typer's completion
    protocol (see cli/completion.py)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _format_options(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def _main_shell_completion(self, ctx_args: MutableMapping[str, Any], prog_name: str,
                               complete_var: Optional[str] = None) -> None:
        # typer's (and click's) name for the variable: _MIRRORMOUNT_COMPLETE
        var = complete_var or f"_{prog_name}_COMPLETE".replace("-", "_").upper()
        if os.environ.get(var):
            # Only when a shell asks (the variable is set): typer's completion classes
            # replace click's in click's registry; the scripts they print speak to them.
            from .completion import prepare
            prepare()
        super()._main_shell_completion(ctx_args, prog_name, complete_var)


def _show_usage_error(self: click.UsageError, file: Any = None) -> None:
    """How every usage error click finds is said (missing or unknown options, a bad value,
    a mistyped command): as util-linux says one, the error on one line under the program's
    name, then where help is, e.g.

        mirrormount: Missing argument 'NAME'.
        Try 'mirrormount status --help' for more information.

    instead of click's usage synopsis, hint, blank line and "Error:" (four lines). The exit
    status stays click's, 2. Set on click.UsageError, the base of every such error (a class
    attribute: click raises them from many places, none of which takes a hook)."""
    ctx = self.ctx
    where = ctx.command_path if ctx is not None else "mirrormount"
    message = " ".join(self.format_message().split())    # click's choice lists: one line
    click.echo(f"mirrormount: {message}\n"
               f"Try '{where} --help' for more information.", file=file, err=file is None)


click.UsageError.show = _show_usage_error  # type: ignore[method-assign]


class App(typer.Typer):
    """typer.Typer whose commands are ``Command`` unless one asks for another class."""

    def command(self, name: Optional[str] = None, *, cls: Optional[type[TyperCommand]] = None,
                **kwargs: Any) -> Callable[[F], F]:
        return super().command(name, cls=cls or Command, **kwargs)


F = TypeVar("F", bound=Callable[..., Any])

# suggest_commands off: click (8.2+) already says "Did you mean ...?" for a mistyped
# command, and typer's own suggestion said it a second time.
app = App(cls=Group, add_completion=False, no_args_is_help=True, suggest_commands=False,
          pretty_exceptions_enable=False, rich_markup_mode=None,
          context_settings={"help_option_names": HELP_OPTIONS},
          help="Mirror each guest's mount tree on the host with shared subtrees.")


class Settings:
    def __init__(self, base: str, state: str, json_out: bool) -> None:
        self.base, self.state = base, state
        self.json = json_out

    @property
    def layout(self) -> Layout:
        """Checked when a command asks (a relative path: exit 2, from the command's error
        handler), not while the options are parsed."""
        return layout_of(self.base, self.state)

    @property
    def guests(self) -> Guests:
        return Guests(self.layout)


def seconds(value: float | None, option: str) -> float | None:
    """A duration option (destroy --grace, umount --wait, stop --timeout, watch --timeout):
    a finite number of seconds, 0 or more; None (not given) passes. UsageError otherwise,
    in one wording for all of them (click lets -1, nan and inf through a float option)."""
    if value is not None and not (0 <= value < float("inf")):
        raise UsageError(f"{option} must be 0 or more seconds")
    return value


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


JSON_HELP = "JSON on stdout, for scripts (before or after the command)."
# Every command that prints takes -J/--json itself too, so it works before or after the
# command (`mirrormount -J list` and `mirrormount list -J`); want_json() reads both.
JSON_OPT = typer.Option(False, "-J", "--json", help=JSON_HELP)
NAME_HELP = "An existing guest's name."
DRY_RUN = typer.Option(False, "--dry-run", help="Print the plan as numbered shell steps "
                                                 "(with -J: as JSON); change nothing.")


def show_plan(ctx: typer.Context, json_local: bool, ops: list) -> None:
    """--dry-run's output: the numbered shell steps, or with -J the ops as JSON (a list of
    {"op": NAME, "why": ..., fields...}, guest/ops.py ops_json)."""
    from ..guest.ops import ops_json, render
    if want_json(ctx, json_local):
        emit_json(ops_json(ops))
    else:
        typer.echo(render(ops), nl=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mirrormount {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    ctx: typer.Context,
    base: str = typer.Option("/container", "--base", envvar="MIRRORMOUNT_BASE", metavar="DIR",
                             help="Where the mirrors live."),
    state: str = typer.Option("/run/mirrormount", "--state", envvar="MIRRORMOUNT_STATE",
                              metavar="DIR", help="Records and nsfs binds."),
    json_out: bool = typer.Option(False, "-J", "--json", help=JSON_HELP),
    version: bool = typer.Option(False, "-V", "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    ctx.obj = Settings(base, state, json_out)


"""The entry point of `mirrormount` (the console script) and `python -m mirrormount`.

It exists to come first: signals are set up (kernel/signals.py, which imports nothing heavy)
before anything else is imported, so a Ctrl-C at any moment ends in one line on stderr and
exit 130, never a traceback. Inside a command, cli/common.reports_errors reports a stop like
any error; here are only the moments outside one: the imports, the parsing, and the exit.
What remains is the interpreter's own start-up before this module runs (a few ms; Python's
default handler raises KeyboardInterrupt there), and, for the console script, pip's wrapper,
which imports `re` first.

A stop can also come back from an import disguised: Python 3.11 wraps whatever a class
body's ``__set_name__`` raises (functools.cached_property, for one) in a
RuntimeError, so a Ctrl-C landing there during an import arrives as "RuntimeError: Error
calling __set_name__" with the Stopped as its cause. ``_stop_in`` finds the Stopped in the
chain, and it is reported as the stop it is.

Then the fast path (cli/fastpath.py) gets the first look at the arguments: `--version` and
a plain `create` run without importing typer or click. Anything else, or anything unusual
in those (help, bad input, an option it does not know), goes to the typer CLI, which says
what a person reads, exactly as before.

A standard fd the CLI was started without (`>&-`) is held by a close-on-exec /dev/null
first (signals.hold_closed_std_fds), so nothing else takes its number and a command exec'd
in a guest still gets it closed.

It also closes stdout as util-linux's close_stdout does: if the reader went away (EPIPE),
nothing is said and the exit status is 141 (signals.close_stdout).
"""
from __future__ import annotations

import sys

from .kernel import signals


def main() -> None:
    # Before anything opens a file: a closed 0, 1 or 2 gets a close-on-exec placeholder.
    signals.hold_closed_std_fds()
    signals.install()
    code: object = 0
    try:
        from .cli import fastpath
        done = fastpath.run(sys.argv[1:])
        if done is not None:
            code = done
        else:
            from .cli import app
            app()                              # typer's standalone mode: ends by SystemExit
    except SystemExit as exit_:
        code = exit_.code
    except OSError as exc:                     # outside any command: --help, completion
        from .errors import describe, is_write_error    # only now: not needed to start
        if not is_write_error(exc):
            raise
        signals.silence_stdout()               # the buffered rest would fail again at exit
        print(f"mirrormount: {describe(exc)}", file=sys.stderr)
        code = 1
    except BaseException as exc:               # outside any command
        stop = _stop_in(exc)
        if stop is None:
            raise
        signals.ending()
        print(f"mirrormount: {stop}", file=sys.stderr)
        code = stop.exit_code
    signals.before_exit()
    if _click_met_epipe():
        code = signals.EXIT_EPIPE
    elif code is None:
        code = 0
    elif not isinstance(code, int):      # sys.exit("message"): Python's own convention
        print(code, file=sys.stderr)
        code = 1
    sys.exit(signals.close_stdout(code))


def _stop_in(exc: BaseException) -> signals.Stopped | None:
    """The Stopped that ended things: exc itself, or the cause it hides behind (an import's
    RuntimeError from __set_name__, see the module docstring). Only the explicit cause: an
    error raised while handling a stop (its context) is a bug, and keeps its traceback."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, signals.Stopped):
            return e
        seen.add(id(e))
        e = e.__cause__
    return None


def _click_met_epipe() -> bool:
    """click catches an EPIPE it meets itself (printing --help, --version) and exits 1 after
    wrapping stdout in its PacifyFlushWrapper: that wrapper is the only trace. We say 141 as
    for any other EPIPE on stdout. (Known by name: click 8.3 renamed the class
    _PacifyFlushWrapper and deprecated the old name, which typer still uses.)"""
    return type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper"

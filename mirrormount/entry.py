"""The entry point of `mirrormount` (the console script) and `python -m mirrormount`.

It exists to come first: signals are set up (kernel/signals.py) before typer and the CLI are
imported, which takes most of a command's start-up, so a Ctrl-C at any moment ends in one
line on stderr and exit 130, never a traceback. Inside a command, cli/common.reports_errors
reports a stop like any error; here are only the moments outside one: the imports, click's
parsing, and the exit. What remains is the interpreter's own start-up before this module
runs (a few ms; Python's default handler raises KeyboardInterrupt there).

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
        from .cli import app
        app()                                  # typer's standalone mode: ends by SystemExit
    except SystemExit as done:
        code = done.code
    except signals.Stopped as stop:            # outside any command
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


def _click_met_epipe() -> bool:
    """click catches an EPIPE it meets itself (printing --help, --version) and exits 1 after
    wrapping stdout in its PacifyFlushWrapper: that wrapper is the only trace. We say 141 as
    for any other EPIPE on stdout. (Known by name: click 8.3 renamed the class
    _PacifyFlushWrapper and deprecated the old name, which typer still uses.)"""
    return type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper"

"""The command line (typer): commands parse, call the library, render. common.py holds the
app and the one error handler; guests.py, exec.py, busy.py, lifecycle.py and the views'
modules register their commands on it when imported. The console entry point is
mirrormount.entry:main, which sets up signals first, then lets fastpath.py answer the hot
paths without typer.

``app`` is imported on first use (``from mirrormount.cli import app``), not with this
package: importing mirrormount.cli.fastpath must not pull typer and every command in."""
from __future__ import annotations

__all__ = ["app"]

TYPE_CHECKING = False        # typing itself is not imported: see kernel/signals.py
if TYPE_CHECKING:
    from .common import app


def __getattr__(name: str) -> object:
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Importing a command module registers its commands; --help lists them in this order.
    from . import guests  # noqa: F401
    from . import exec  # noqa: F401, I001
    from . import busy  # noqa: F401, I001
    from . import lifecycle  # noqa: F401, I001
    from . import graph  # noqa: F401, I001
    from . import metrics  # noqa: F401, I001
    from . import unit  # noqa: F401, I001
    from .common import app
    from .completion import completion_cmd
    app.command("completion")(completion_cmd)
    globals()["app"] = app
    return app

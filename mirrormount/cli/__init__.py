"""The command line (typer): commands parse, call the library, render. common.py holds the
app and the one error handler; guests.py and busy.py register their commands on it when
imported here. The console entry point is mirrormount.entry:main, which sets up signals
before importing this package."""
from __future__ import annotations

# Importing a command module registers its commands; --help lists them in this order.
from . import guests  # noqa: F401
from . import busy  # noqa: F401, I001
from . import lifecycle  # noqa: F401, I001
from .common import app


__all__ = ["app"]

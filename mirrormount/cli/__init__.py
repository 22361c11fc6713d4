"""The command line (typer): commands parse, call the library, render. One error handler."""
from .app import app, run

__all__ = ["app", "run"]

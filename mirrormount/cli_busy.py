"""CLI commands for the busy-mount detector (busy, watch). Registered on cli.app at import."""
from __future__ import annotations

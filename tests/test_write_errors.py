"""A full disk on stdout (`mirrormount ... > /dev/full`): one line, `mirrormount: write
error: No space left on device`, exit 1, never a traceback, whichever path printed: the fast
path (--version), click (--help), a command outside the error handler (completion), one
inside it (systemd-unit), or the flush at exit (entry, signals.close_stdout)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv", [["--version"], ["-V"], ["--help"], ["list", "-h"],
                                  ["completion", "bash"], ["systemd-unit"],
                                  ["metrics", "--help"]])
@pytest.mark.parametrize("fast", [True, False], ids=["fastpath", "typer"])
def test_a_full_disk_on_stdout_is_one_line_and_exit_1(argv, fast):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "LANG": "C.UTF-8"}
    if not fast:
        env["MIRRORMOUNT_NO_FASTPATH"] = "1"
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "mirrormount", *argv], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert (p.returncode, p.stderr) == (
        1, "mirrormount: write error: No space left on device\n"), p.stderr

"""The suite started as a background job (SIGINT and SIGQUIT ignored, SIGHUP too under
nohup) still gives its subprocesses the dispositions an interactive run has (the repository's
conftest.py), so the tests that send Ctrl-C to a command measure the command."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import subprocess, conftest
conftest.pytest_configure(None)
print(subprocess.run(["grep", "^SigIgn", "/proc/self/status"], capture_output=True,
                     text=True).stdout.split()[1])
"""


def test_a_background_launch_does_not_leave_ctrl_c_ignored_in_subprocesses():
    p = subprocess.run(["sh", "-c", 'trap "" INT QUIT HUP; exec "$0" -c "$1"',
                        sys.executable, PROBE], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    ignored = int(p.stdout.strip(), 16)
    assert ignored & 0b111 == 0, hex(ignored)     # bits 0-2: SIGHUP, SIGINT, SIGQUIT

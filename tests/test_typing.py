"""The package's annotations are checked, not decorative: mypy must pass on mirrormount/."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_mypy_passes():
    cp = subprocess.run([sys.executable, "-m", "mypy", "mirrormount"], cwd=REPO,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr

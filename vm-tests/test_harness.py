"""The harness itself: loop devices a test made are removed even when the test process is
killed (SIGKILL, a timeout) before its teardown runs; OwnLoops' guardian does it."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import wait_for

CHILD = r"""
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from conftest import OwnLoops
own = OwnLoops(3000, 3100)
dev = own.add()
subprocess.run(["losetup", dev, sys.argv[2]], check=True)
own.attached(dev)       # told twice is harmless
print(dev, flush=True)
time.sleep(300)         # killed here: close() never runs
"""


def test_loops_of_a_killed_test_are_detached_and_deleted():
    with tempfile.NamedTemporaryFile(dir="/tmp", prefix="harness-loop-") as img:
        img.truncate(1 << 20)
        img.flush()
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent),
                              img.name], stdout=subprocess.PIPE, text=True)
        dev = p.stdout.readline().strip()
        name = os.path.basename(dev)
        assert dev.startswith("/dev/loop") and os.path.exists(f"/sys/block/{name}/loop")
        p.kill()
        p.wait()
        p.stdout.close()
        assert wait_for(lambda: not os.path.exists(f"/sys/block/{name}"), timeout=30), \
            f"{dev} was left behind after its test was killed"

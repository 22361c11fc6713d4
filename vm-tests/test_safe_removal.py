"""remove_tree against real mounts: a bind of the sandbox's / (the mirror that once made the
suite delete a machine's /etc) inside a scratch tree is refused, and nothing is deleted."""
from __future__ import annotations

import sys

REMOVE = ("import sys\nfrom mirrormount.kernel.removal import remove_tree, MountsInside\n"
          "try:\n    remove_tree(sys.argv[1])\nexcept MountsInside as e:\n"
          "    print(e); sys.exit(3)\n")


def test_refuses_a_tree_holding_an_rbind_of_root(sandbox):
    sandbox.sh("mkdir -p /tmp/scratch/m /tmp/scratch/keep && echo k > /tmp/scratch/keep/f "
               "&& mount --rbind / /tmp/scratch/m && mount --make-rprivate /tmp/scratch/m")
    r = sandbox.run([sys.executable, "-c", REMOVE, "/tmp/scratch"])
    assert r.returncode == 3 and "/tmp/scratch/m" in r.stdout, (r.stdout, r.stderr)
    assert sandbox.sh("cat /tmp/scratch/keep/f").stdout == "k\n"
    assert sandbox.sh("ls /tmp/scratch/m/etc | wc -l").stdout.strip() != "0"
    sandbox.sh("umount -R /tmp/scratch/m")
    r = sandbox.run([sys.executable, "-c", REMOVE, "/tmp/scratch"])
    assert r.returncode == 0, r.stderr
    assert sandbox.sh("test -e /tmp/scratch", check=False).returncode == 1

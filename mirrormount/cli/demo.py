"""`mirrormount demo`: a guided tour that runs the real commands inside a throwaway sandbox
(mirrormount.sandbox: new mount + pid namespaces, tmpfs root). Nothing it does reaches the
machine's own mounts; when it ends, the kernel tears everything down.

Privilege: root.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from ..errors import OperationError

MM = [sys.executable, "-m", "mirrormount"]

STEPS: list[tuple[str, list[str]]] = [
    ("A guest with its own hostname: the thread's own example.",
     ["mirrormount create c1 --hostname serge",
      "hostname",
      "mirrormount exec c1 -- hostname"]),
    ("The host mounts into the guest's mirror; the guest sees it.",
     ["mkdir -p /container/c1/srv/from-host",
      "mount -t tmpfs from-host /container/c1/srv/from-host",
      "echo 'hello from the host' > /container/c1/srv/from-host/greeting",
      "mirrormount exec c1 -- cat /srv/from-host/greeting"]),
    ("The guest mounts something; the host sees it under /container/c1.",
     ["mirrormount exec c1 -- sh -c 'mkdir -p /srv/from-guest && "
      "mount -t tmpfs from-guest /srv/from-guest && echo hello from the guest > "
      "/srv/from-guest/note'",
      "cat /container/c1/srv/from-guest/note",
      "findmnt --list -o TARGET,SOURCE,FSTYPE,PROPAGATION | grep -E '^TARGET|/srv/from-'"]),
    ("A second guest sees neither the first guest's mounts nor /container.",
     ["mirrormount create c2",
      "mirrormount exec c2 -- sh -c 'findmnt /srv/from-guest || echo \"c2: no /srv/from-guest\"'",
      "mirrormount exec c2 -- ls -A /container"]),
    ("What the host knows about its guests.",
     ["mirrormount list",
      "mirrormount status c1"]),
    ("The thread's catch: a host shell 'camps' in the guest's mount ...",
     ["mirrormount exec c1 -- sh -c 'mkdir -p /mnt/usb && mount -t tmpfs usb /mnt/usb'",
      "cd /container/c1/mnt/usb && sleep 300 >/dev/null 2>&1 & sleep 0.3",
      "mirrormount umount c1 /mnt/usb    # the guest cannot unmount: exit 3, and why",
      "mirrormount busy c1:/mnt/usb",
      "pkill -x sleep; sleep 0.2; mirrormount umount c1 /mnt/usb && echo unmounted"]),
    ("... and the answer: a guest-only mount, which the host mirror shows as an empty dir.",
     ["mirrormount mount c1 usb2 /mnt/usb -t tmpfs --guest-only",
      "mirrormount exec c1 -- findmnt -n -o TARGET,FSTYPE /mnt/usb",
      "findmnt -n /container/c1/mnt/usb || echo 'host: a plain directory, nothing to pin'",
      "mirrormount umount c1 /mnt/usb && echo unmounted"]),
    ("Tidy up.",
     ["mirrormount destroy --force --grace 1 c1 c2",
      "mirrormount list"]),
]


def _run_inside() -> int:
    env = dict(os.environ)
    # `mirrormount` in the shown commands is this very interpreter's module.
    shim = "/run/mirrormount-demo-bin"
    os.makedirs(shim, exist_ok=True)
    with open(f"{shim}/mirrormount", "w") as f:
        f.write(f"#!/bin/sh\nexec {shlex.join(MM)} \"$@\"\n")
    os.chmod(f"{shim}/mirrormount", 0o755)
    env["PATH"] = f"{shim}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    tty = sys.stdout.isatty()
    bold, dim, off = ("\033[1m", "\033[2m", "\033[0m") if tty else ("", "", "")
    print(f"{bold}mirrormount demo{off} — inside a throwaway namespace whose / is a tmpfs.\n")
    for title, commands in STEPS:
        print(f"{bold}## {title}{off}")
        for cmd in commands:
            print(f"{dim}#{off} {cmd}", flush=True)
            cp = subprocess.run(["/bin/sh", "-c", cmd], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
            out = cp.stdout.rstrip("\n")
            if out:
                print("  " + out.replace("\n", "\n  "))
            if cp.returncode:
                print(f"  {dim}(exit {cp.returncode}){off}")
        print()
        time.sleep(0.05)
    print("Everything above happened in a throwaway namespace: this machine's own mounts\n"
          "were never touched, and the sandbox is gone now that the demo has ended.")
    return 0


def run_demo(propagation: str = "private") -> int:
    if os.geteuid() != 0:
        raise OperationError("demo needs root (CAP_SYS_ADMIN) to create namespaces; "
                             "nothing was changed")
    cp = subprocess.run([sys.executable, "-m", "mirrormount.sandbox", "--propagation",
                         propagation, "--", sys.executable, "-m", "mirrormount.cli.demo",
                         "--inside"])
    return cp.returncode


if __name__ == "__main__":
    if sys.argv[1:] == ["--inside"]:
        sys.exit(_run_inside())
    sys.exit(run_demo())

"""What every benchmark's two halves share: the outer half starts a throwaway sandbox
(`python -m mirrormount.sandbox`: new mount and pid namespaces, / a tmpfs) and runs the same
script inside it with --inside; the inner half refuses to run anywhere else, and may take the
source tree to measure as a tar on stdin.

The marker file is created by the sandbox's first shell line in the sandbox's own tmpfs root,
never on this machine, so its presence (with a pid that small) proves where we are.
"""
from __future__ import annotations

import io
import os
import sys
import tarfile


def sandbox_argv(marker: str, inner: list[str], propagation: str | None = None) -> list[str]:
    """argv that runs `inner` inside a fresh sandbox, with `marker` made in its root first."""
    prop = ["--propagation", propagation] if propagation else []
    return [sys.executable, "-m", "mirrormount.sandbox", *prop, "--",
            "/bin/sh", "-c", f'touch {marker} && exec "$@"', "sh", *inner]


def outside_sandbox(marker: str) -> bool:
    """True (and one line on stderr) when this is not the sandbox sandbox_argv started."""
    if os.getpid() > 10 or not os.path.exists(marker):
        print("bench: --inside must only run inside mirrormount.sandbox", file=sys.stderr)
        return True
    return False


def unpack_source(src: str) -> None:
    """Extract the tar on stdin (the tree to measure) into src, inside the sandbox's tmpfs, and
    import mirrormount from there, in this process and in every command it starts."""
    data = sys.stdin.buffer.read()
    os.makedirs(src, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(src)
    sys.path.insert(0, src)
    os.environ["PYTHONPATH"] = src
    os.chdir("/tmp")   # `python -c` / `-m` put the cwd first on sys.path: not the work tree

"""The fast path's creates are the typer path's creates (issue 10 part 6).

Each argv runs for real, in the sandbox, once through the fast path and once with
MIRRORMOUNT_NO_FASTPATH=1 (typer parses it), each time from no guests at all: the same
stdout, stderr and exit status, and the same state afterwards (the guests `list --json`
shows, their records, and the mounts under BASE and STATE with their propagation), with
what differs by nature (pids, mount ids, peer group numbers, creation times) left out.
tests/test_fastpath.py covers the refusals and the fall-through cases as non-root.
"""
from __future__ import annotations

import json
import re
import sys

import pytest

CASES = [
    (["create", "c1"], ()),
    (["create", "c1", "c2", "c3"], ()),
    (["create", "c1", "--ns", "pid,uts", "--hostname", "serge"], ()),
    (["create", "--ns=ipc,net", "c1", "--confine", "none", "--drop-caps", "sys_admin"], ()),
    (["create", "c1", "--rootfs", "/srv/r", "--propagation", "mirror+host"], ()),
    (["--base", "/srv/b", "--state", "/srv/s", "create", "c1"], ()),
    (["create", "c1", "c2"], ("c2",)),          # c2 exists: exit 2, nothing made
    (["create", "c1", "--rootfs", "/no/such"], ()),
]


def state(sb, base: str, state_dir: str) -> dict:
    env = ["--base", base, "--state", state_dir]
    listed = sb.mm(*env, "--json", "list")
    guests = json.loads(listed.stdout) if listed.returncode == 0 and listed.stdout else None
    for g in guests or []:
        g.pop("pids", None)
    records = sb.sh(f"cat {state_dir}/*/guest.json 2>/dev/null || true").stdout
    records = re.sub(r'"created": [0-9.]+', '"created": T', records)
    mounts = sb.sh("findmnt -rn -o TARGET,FSTYPE,SOURCE,PROPAGATION,OPTIONS").stdout
    ours = sorted(ln for ln in mounts.splitlines()
                  if ln.startswith((base, state_dir, "/container", "/run/mirrormount")))
    # Namespace ids (uts:[4026532257]) are new for every guest.
    return {k: _NS_ID.sub(":[N]", json.dumps(v)) for k, v in
            {"list": guests, "records": records, "mounts": ours}.items()}


_NS_ID = re.compile(r":\[\d+\]")


def names_in(sb, base: str, state_dir: str) -> list[str]:
    r = sb.mm("--base", base, "--state", state_dir, "--json", "list")
    return [g["name"] for g in json.loads(r.stdout)] if r.returncode == 0 and r.stdout else []


def one_way(sb, argv: list[str], before: tuple[str, ...], fast: bool) -> tuple:
    base = argv[argv.index("--base") + 1] if "--base" in argv else "/container"
    state_dir = argv[argv.index("--state") + 1] if "--state" in argv else "/run/mirrormount"
    for name in before:
        assert sb.mm("--base", base, "--state", state_dir, "create", name).returncode == 0
    env = [] if fast else ["env", "MIRRORMOUNT_NO_FASTPATH=1"]
    r = sb.run([*env, sys.executable, "-m", "mirrormount", *argv])
    seen = state(sb, base, state_dir)
    left = names_in(sb, base, state_dir)
    if left:
        d = sb.mm("--base", base, "--state", state_dir, "destroy", "--force", "--grace", "0",
                  *left)
        assert d.returncode == 0, d.stderr
    assert names_in(sb, base, state_dir) == []
    return (r.returncode, r.stdout, r.stderr), seen


@pytest.mark.parametrize("argv, before", CASES, ids=lambda v: " ".join(v) if isinstance(v, list)
                         else ",".join(v) or "-")
def test_a_create_is_the_same_on_both_paths(sandbox, argv, before):
    sandbox.sh("mkdir -p /srv/r/mnt /srv/b /srv/s")
    table = sandbox.mountinfo()
    fast = one_way(sandbox, argv, before, fast=True)
    assert sandbox.mountinfo() == table          # every guest gone, BASE and STATE too
    slow = one_way(sandbox, argv, before, fast=False)
    assert fast == slow
    assert sandbox.mountinfo() == table


def test_the_fast_path_was_the_one_taken(sandbox):
    """Without typer in the process: PYTHONVERBOSE-free proof, `-X importtime`."""
    r = sandbox.run([sys.executable, "-X", "importtime", "-m", "mirrormount",
                     "create", "c1"])
    assert (r.returncode, r.stdout) == (0, "created c1: /container/c1 (namespaces mnt)\n")
    mods = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines()}
    assert "mirrormount.cli.fastpath" in mods and "mirrormount.guest.guests" in mods
    assert not {m for m in mods if m.split(".")[0] in ("typer", "click", "pyseccomp")}
    assert sandbox.mm("destroy", "c1").returncode == 0

"""The fast path of a plain `busy TARGET [--json]` (mirrormount/cli/fastpath.py) says what the
typer CLI says, on a real busy mount: each argv runs twice in the sandbox, once as it comes
and once with MIRRORMOUNT_NO_FASTPATH=1, and stdout, stderr and the exit status must match.

The state: guest c1 (own pid namespace) with a tmpfs at /mnt/x, held by a host process's
cwd (through the mirror), an open fd, a guest process's cwd and a process in a private copy
of the host's namespace (a leaked copy); one cwd lies in a directory whose name has a
non-ASCII letter and an escape character, so the output goes through click on both paths
(see fastpath._echo). The sandbox has its own pid namespace: both runs see the same
processes, so their answers are the same byte for byte.
"""
from __future__ import annotations

from conftest import q
from test_busy import X, busy, campers, pins, start  # noqa: F401  (campers: a fixture)

ODD = "d\u00e9\x1b[1mx"


def both(sb, *argv: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    out = []
    for fast in (True, False):
        env = dict(sb.env, **({} if fast else {"MIRRORMOUNT_NO_FASTPATH": "1"}))
        r = sb.mm(*argv, env=env, timeout=120)
        out.append((r.returncode, r.stdout, r.stderr))
    return out[0], out[1]


def test_busy_fast_path_matches_typer_on_a_pinned_mount(sandbox, campers):  # noqa: F811
    sb = sandbox
    assert sb.mm("create", "--ns", "pid", "c1").returncode == 0
    sb.sh(f"mkdir -p {X}")
    r = sb.mm("mount", "c1", "tmpfs", "/mnt/x", "-t", "tmpfs", "-o", "size=4m")
    assert r.returncode == 0, r.stderr
    sb.sh(f"mkdir -p {q(X + '/' + ODD)} && echo x > {X}/file")
    # Not busy yet: exit 0 both ways.
    fast, slow = both(sb, "busy", "c1:/mnt/x")
    assert fast == slow and fast[0] == 0, (fast, slow)
    cwd = start(sb, campers, f"cd {q(X + '/' + ODD)} && echo $$ && exec sleep 300")
    fd = start(sb, campers, f"exec 3<{X}/file; echo $$; exec sleep 300")
    start(sb, campers, "cd /mnt/x && echo $$ && exec sleep 300", guest=True)
    leak = start(sb, campers, "exec unshare -m --propagation private sh -c "
                              "'echo $$; exec sleep 300'")
    js = busy(sb, "c1:/mnt/x", code=3)
    assert pins(js, "cwd", cwd) and pins(js, "fd", fd) and pins(js, "leaked-copy", leak)
    for argv in (["busy", "c1:/mnt/x"], ["busy", "--json", "c1:/mnt/x"],
                 ["busy", "c1:/mnt/x", "-J"], ["busy", X], ["busy", f"{X}/file"],
                 ["--base", "/container", "busy", "--", "c1:/mnt/x"],
                 ["busy", "c1:/mnt/nope"], ["busy", "nosuch:/mnt/x"]):
        fast, slow = both(sb, *argv)
        assert fast == slow, (argv, fast, slow)
        assert fast[0] in (2, 3), (argv, fast)
    # The odd name reached both outputs through click (escape removed, as not a terminal).
    fast, _ = both(sb, "busy", "c1:/mnt/x")
    assert "d\u00e9" in fast[1] and "\x1b" not in fast[1]

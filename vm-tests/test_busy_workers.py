"""busy's /proc pass striped over forked workers (busy/scan.py scan_processes) gives the same
answer as one pass, now that the finder reads the namespaces' tables while the workers
still scan (finder._gather's on_part): each part's processes are added as it arrives, and a
namespace whose processes all fall in a worker's stripe is read after it, or found first by
the kernel's namespace walk. MIRRORMOUNT_BUSY_WORKERS forces the count (the sandbox has far
fewer processes than the 300 that turn workers on by themselves).

The state: guest c1 with a tmpfs at /mnt/x held by a host cwd, an open fd, a guest
process's cwd and four processes each in a private copy of the host's namespace (leaked
copies), so that some land in the workers' stripes; checked with and without the walk.
"""
from __future__ import annotations

import json

from test_busy import X, campers, start  # noqa: F401  (campers: a fixture)


def answer(sb, *argv: str, workers: int, walk: bool) -> tuple[int, object]:
    env = dict(sb.env, MIRRORMOUNT_BUSY_WORKERS=str(workers))
    if not walk:
        env["MIRRORMOUNT_NO_NSWALK"] = "1"
    r = sb.mm(*argv, "--json", env=env, timeout=120)
    assert r.returncode in (0, 3), r.stderr
    js = json.loads(r.stdout)
    # Order within a report follows the pass; what is found must not depend on it.
    for rep in (js if isinstance(js, list) else [js]):
        rep["pins"] = sorted(rep["pins"], key=lambda p: json.dumps(p, sort_keys=True))
        rep["copies"] = sorted(rep["copies"], key=lambda c: json.dumps(c, sort_keys=True))
    return r.returncode, js


def test_striped_pass_finds_what_one_pass_finds(sandbox, campers):  # noqa: F811
    sb = sandbox
    assert sb.mm("create", "--ns", "pid", "c1").returncode == 0
    sb.sh(f"mkdir -p {X}")
    r = sb.mm("mount", "c1", "tmpfs", "/mnt/x", "-t", "tmpfs", "-o", "size=4m")
    assert r.returncode == 0, r.stderr
    sb.sh(f"echo x > {X}/file")
    cwd = start(sb, campers, f"cd {X} && echo $$ && exec sleep 300")
    fd = start(sb, campers, f"exec 3<{X}/file; echo $$; exec sleep 300")
    start(sb, campers, "cd /mnt/x && echo $$ && exec sleep 300", guest=True)
    leaks = [start(sb, campers, "exec unshare -m --propagation private sh -c "
                                "'echo $$; exec sleep 300'") for _ in range(4)]
    for walk in (True, False):
        one = answer(sb, "busy", "c1:/mnt/x", workers=1, walk=walk)
        assert one[0] == 3
        got = {(p["how"], p["pid"]) for p in one[1]["pins"]}
        assert {("cwd", cwd), ("fd", fd)} <= got
        assert {("leaked-copy", pid) for pid in leaks} <= got, got
        for workers in (2, 3, 4):
            assert answer(sb, "busy", "c1:/mnt/x", workers=workers, walk=walk) == one, \
                (workers, walk)
        every = answer(sb, "busy", "--all", workers=1, walk=walk)
        assert answer(sb, "busy", "--all", workers=3, walk=walk) == every, walk

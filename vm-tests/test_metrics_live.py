"""`metrics` against live guests (issue 10), read with the reference parser
(prometheus_client.parser): guests by state, mounts on each side as `status` counts them,
mirror intact (1, then 0 for a guest that cut itself off), pins as `busy --all` counts them,
fs.mount-max headroom per namespace; and the README's textfile-collector recipe. Both
sandbox modes."""
from __future__ import annotations

import select
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, Sandbox


def readme_metrics_command() -> str:
    """The shell command of the README's textfile-collector service (its ExecStart=,
    /bin/sh -c '...'; tests/test_metrics.py verifies the unit around it)."""
    block = (REPO / "README.md").read_text().split("```ini\n", 1)[1].split("```", 1)[0]
    line = next(x for x in block.splitlines() if x.startswith("ExecStart=/bin/sh -c '"))
    return line[len("ExecStart=/bin/sh -c '"):-1]


def create(sb: Sandbox, *args: str) -> None:
    r = sb.mm("create", *args)
    assert r.returncode == 0, r.stderr


def parsed(text: str) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        assert fam.type == "gauge"
        out[fam.name] = {tuple(sorted(s.labels.items())): s.value for s in fam.samples}
    return out


def metrics(sb: Sandbox, *args: str) -> dict[str, dict[tuple, float]]:
    r = sb.mm("metrics", *args, timeout=180)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return parsed(r.stdout)


@pytest.fixture
def campers():
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:       # our nsenter; what it started dies with the sandbox
        p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


def camp(sb: Sandbox, campers: list, script: str) -> int:
    p = sb.popen(script)
    campers.append(p)
    ready, _, _ = select.select([p.stdout], [], [], 30)
    line = p.stdout.readline() if ready else ""
    assert line.strip().isdigit(), f"camper did not start: {line!r}"
    return int(line)


def test_metrics_of_live_guests(sandbox, campers):
    create(sandbox, "c1")
    create(sandbox, "c2")
    create(sandbox, "c3", "--confine", "none")
    # c1 runs a process and has a mount of its own, pinned by a host process's cwd.
    camp(sandbox, campers, "exec /usr/bin/env python3 -m mirrormount exec c1 -- "
                           "/bin/sh -c 'echo $$; exec sleep 300'")
    sandbox.sh("mkdir -p /container/c1/srv/m && mount -t tmpfs m /container/c1/srv/m")
    camp(sandbox, campers, "cd /container/c1/srv/m && echo $$ && exec sleep 300")
    # c3 cuts itself off its mirror.
    r = sandbox.mm("exec", "c3", "--", "mount", "--make-rprivate", "/")
    assert r.returncode == 0, r.stderr
    m = metrics(sandbox)
    states = {s["name"]: s["state"] for s in sandbox.mm("--json", "list").json}
    assert states["c1"] == "running"
    for state in ("running", "stopped", "broken"):
        assert m["mirrormount_guests"][(("state", state),)] == \
            sum(1 for s in states.values() if s == state)
    for name, state in states.items():
        assert m["mirrormount_guest_state"][(("guest", name), ("state", state))] == 1
    for name in ("c1", "c2", "c3"):
        st = sandbox.mm("--json", "status", name).json
        mounts = m["mirrormount_guest_mounts"]
        assert mounts[(("guest", name), ("side", "host"))] == st["mounts_host"] > 5
        assert mounts[(("guest", name), ("side", "guest"))] == st["mounts_guest"] > 5
        assert m["mirrormount_mirror_intact"][(("guest", name),)] == int(st["mirror_intact"])
    assert m["mirrormount_mirror_intact"][(("guest", "c3"),)] == 0
    assert m["mirrormount_mirror_intact"][(("guest", "c1"),)] == 1
    # Pins: as busy --all counts them.
    busy = sandbox.mm("--json", "busy", "--all", timeout=180)
    assert busy.returncode == 3, busy.stderr
    c1_pins = sum(len(r["pins"]) for r in busy.json if r["target"].startswith("c1:"))
    assert c1_pins >= 1
    assert m["mirrormount_guest_pins"][(("guest", "c1"),)] == c1_pins
    assert m["mirrormount_guest_pinned_mounts"][(("guest", "c1"),)] == 1
    assert m["mirrormount_guest_pins"][(("guest", "c2"),)] == 0
    # fs.mount-max headroom: the sysctl minus the lines of each namespace's mountinfo.
    limit = int(sandbox.sh("cat /proc/sys/fs/mount-max").stdout)
    assert m["mirrormount_mount_max"][()] == limit
    host_lines = len(sandbox.sh("cat /proc/self/mountinfo").stdout.splitlines())
    assert m["mirrormount_namespace_mounts"][(("namespace", "host"),)] == host_lines
    assert m["mirrormount_mount_max_headroom"][(("namespace", "host"),)] == limit - host_lines
    c2_lines = len(sandbox.mm("exec", "c2", "--", "cat", "/proc/self/mountinfo")
                   .stdout.splitlines())
    assert m["mirrormount_mount_max_headroom"][(("namespace", "c2"),)] == limit - c2_lines
    # --no-pins: no /proc pass, no pin families; the rest is the same.
    quick = metrics(sandbox, "--no-pins")
    assert "mirrormount_guest_pins" not in quick
    assert quick["mirrormount_mirror_intact"] == m["mirrormount_mirror_intact"]
    # -J: the same families and samples as the text, as JSON (fresh --no-pins on both sides).
    js = sandbox.mm("metrics", "--no-pins", "-J", timeout=180).json
    assert {f["name"]: {tuple(sorted(x["labels"].items())): x["value"] for x in f["samples"]}
            for f in js} == quick


def test_textfile_collector_recipe_writes_a_whole_file(sandbox):
    create(sandbox, "c1")
    # The README's service command, as written there: a temporary file in the same
    # directory, then rename(2), so a scrape never reads half a file.
    command = readme_metrics_command()
    d = "/var/lib/node_exporter/textfile_collector"
    assert d in command
    sandbox.sh(f"mkdir -p {d}")
    r = sandbox.sh(command, check=False)
    assert r.returncode == 0, r.stderr
    assert sandbox.sh(f"ls {d}").stdout.split() == ["mirrormount.prom"]
    m = parsed(sandbox.sh(f"cat {d}/mirrormount.prom").stdout)
    assert m["mirrormount_guests"][(("state", "stopped"),)] == 1
    assert m["mirrormount_mirror_intact"][(("guest", "c1"),)] == 1


def test_no_guests(sandbox):
    m = metrics(sandbox)
    assert all(v == 0 for v in m["mirrormount_guests"].values())
    assert m["mirrormount_guest_state"] == {}
    js = sandbox.mm("--json", "metrics").json
    assert {f["name"] for f in js} >= {"mirrormount_guests", "mirrormount_mount_max"}

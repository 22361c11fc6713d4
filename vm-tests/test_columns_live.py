"""util-linux style output on live guests (issue 10, part 1): a path with a space survives
awk through `-r` (escaped \\x20, one record a line), -o/-n/--sort pick and order the columns
of `list`, `busy --all` and `busy TARGET`, -J works before and after the command, and
`create --dry-run -J` is the plan as JSON, with nothing changed."""
from __future__ import annotations

import json
import select

import pytest

DISK = "/mnt/my disk"


@pytest.fixture
def camper(sandbox):
    """A host shell whose working directory is the guest mount's mirror (it pins it)."""
    p = sandbox.popen(f"cd '/container/c1{DISK}' && echo $$ && exec sleep 300")
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        line = p.stdout.readline() if ready else ""
        assert line.strip().isdigit(), line
        yield int(line)
    finally:
        p.kill()
        p.wait()
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()


@pytest.fixture
def guest(sandbox):
    sb = sandbox
    assert sb.mm("create", "c1", "--confine", "none").returncode == 0
    sb.sh(f"mkdir -p '/container/c1{DISK}'")
    r = sb.mm("mount", "c1", "disk", DISK, "-t", "tmpfs")
    assert r.returncode == 0, r.stderr
    return sb


def test_busy_all_raw_survives_awk(guest, camper):
    sb = guest
    r = sb.sh("mirrormount busy --all -r -n -o PID,TARGET,HOW | awk '{print $1 \"|\" $2 \"|\" $3}'",
              check=False)
    assert r.stderr == ""
    assert f"{camper}|c1:/mnt/my\\x20disk|cwd" in r.stdout.splitlines(), r.stdout
    # the table form keeps the space; the header names the columns asked for
    r = sb.mm("busy", "--all", "-o", "TARGET,PID", "--sort", "PID")
    assert r.returncode == 3
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "PID"]
    assert any(ln.startswith(f"c1:{DISK} ") and ln.split()[-1] == str(camper) for ln in lines)


def test_busy_target_records(guest, camper):
    sb = guest
    r = sb.mm("busy", f"c1:{DISK}", "-r", "-o", "HOW,PID,PATH")
    assert r.returncode == 3, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "HOW PID PATH"
    assert f"cwd {camper} /container/c1/mnt/my\\x20disk" in lines
    r = sb.mm("busy", f"c1:{DISK}", "-o", "NOPE")
    assert r.returncode == 2 and "valid: TARGET,HOW,PID" in r.stderr


def test_list_columns_and_json_either_side(guest):
    sb = guest
    assert sb.mm("create", "a0", "--confine", "none").returncode == 0
    r = sb.mm("list", "-r", "-n", "-o", "NAME,CONFINE,MIRROR", "--sort", "NAME")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["a0 none /container/a0", "c1 none /container/c1"]
    before, after = sb.mm("-J", "list"), sb.mm("list", "-J")
    assert before.stdout == after.stdout
    assert [g["name"] for g in before.json] == ["a0", "c1"]


def test_create_dry_run_json_changes_nothing(sandbox):
    sb = sandbox
    table = sb.sh("cat /proc/self/mountinfo").stdout
    r = sb.mm("create", "c9", "--hostname", "h9", "--dry-run", "-J")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [p["name"] for p in plan] == ["c9"]
    ops = [o["op"] for o in plan[0]["ops"]]
    assert "SpawnGuest" in ops and ops[-1] == "WriteRecord"
    spawn = next(o for o in plan[0]["ops"] if o["op"] == "SpawnGuest")
    assert spawn["hostname"] == "h9" and "uts" in spawn["kinds"] and spawn["why"]
    assert all(isinstance(o["shell"], list) for o in plan[0]["ops"])
    assert sb.sh("cat /proc/self/mountinfo").stdout == table
    assert sb.mm("-J", "list").json == []

"""Every recipe in recipes/ through create, start, stop and destroy, on the real kernel,
with / private and rshared. A recipe whose rootfs is one of prepare-rootfs's gets it built
first, as its comment tells a new user to; guests that others join are made first and
destroyed last. At the end the sandbox's mount table is what it was."""
from __future__ import annotations

import tomllib

from conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.toml"))
PREPARED = "/var/lib/mirrormount/rootfs/"


def ordered():
    """(path, name, guest table) with every joined guest before its joiners."""
    items = []
    for path in RECIPES:
        guest = tomllib.loads(path.read_text())["guest"]
        items.append((path, guest.get("name", path.stem), guest))
    done: list = []
    while len(done) < len(items):
        names = {n for _, n, _ in done}
        ready = [i for i in items if i not in done
                 and set(i[2].get("joins", {}).values()) <= names]
        assert ready, "recipes join one another in a loop, or a guest no recipe makes"
        done += ready
    return done


def state(sb, name):
    return next(g["state"] for g in sb.mm("--json", "list", check=True).json
                if g["name"] == name)


def test_recipes_are_there():
    names = {p.name for p in RECIPES}
    assert {"thread-guest.toml", "vserver-guest.toml", "init-guest.toml",
            "composed-guest.toml"} <= names


def test_every_recipe_round_trips(sandbox):
    sb = sandbox
    before = sb.mountpoints()
    made = []
    for path, name, guest in ordered():
        rootfs = guest.get("rootfs", "/")
        if rootfs.startswith(PREPARED):
            kind = "init" if "init" in guest else "vserver"
            sb.sh(f"{REPO}/recipes/prepare-rootfs {rootfs} {kind}")
        args = ["create", "--recipe", str(path)] + ([] if "name" in guest else [name])
        r = sb.mm(*args)
        assert r.returncode == 0, (path.name, r.stderr)
        made.append(name)
        assert sb.mm("status", name).returncode == 0, path.name
        if "init" in guest:
            assert state(sb, name) == "running", path.name      # starts at once
            assert sb.mm("stop", name).returncode == 0
            assert state(sb, name) == "stopped"
        r = sb.mm("start", name)
        assert r.returncode == 0, (path.name, r.stderr)
        if "init" in guest or guest.get("start"):
            assert state(sb, name) == "running", path.name
            rows = sb.mm("ps", name, "--json").json
            assert any(p["guest_pid"] == 1 for p in rows), path.name
        r = sb.mm("stop", name)
        assert r.returncode == 0, (path.name, r.stderr)
        assert "warning" not in r.stderr, (path.name, r.stderr)   # each ends in time
        assert state(sb, name) == "stopped", path.name
        if guest.get("shutdown") or "init" in guest:
            log = sb.sh(f"cat /container/{name}/var/log/rc.log").stdout
            assert "shutdown" in log, (path.name, log)
        if "init" not in guest:
            assert sb.mm("exec", name, "--", "true").returncode == 0   # namespaces stay
        # and start again, as after a reboot of the guest
        assert sb.mm("start", name).returncode == 0, path.name
    for name in reversed(made):
        assert sb.mm("stop", name).returncode == 0
        r = sb.mm("destroy", name)
        assert r.returncode == 0, (name, r.stderr)
    assert sb.mountpoints() == before
    assert sb.mm("--json", "list").json == []

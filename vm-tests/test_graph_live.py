"""`graph` on a known set-up, on the real kernel (issue 8): a `mirror` guest is one peer group
with its mirror and a slave of nothing; a `mirror+host` guest and its mirror are slaves of the
host's / peer group; BASE and STATE are unbindable; a guest that made a mount private shows
no flow there, and says why; `dot` accepts the drawing. Both sandbox modes."""
from __future__ import annotations

import subprocess

from conftest import Sandbox


def create(sb: Sandbox, *args: str) -> None:
    r = sb.mm("create", *args)
    assert r.returncode == 0, r.stderr


def guest_sh(sb: Sandbox, name: str, script: str) -> None:
    r = sb.mm("exec", name, "--", "/bin/sh", "-c", script)
    assert r.returncode == 0, f"{script}: {r.stderr}{r.stdout}"


def graph_json(sb: Sandbox, *args: str) -> dict:
    r = sb.mm("graph", *args, "--json")
    assert r.returncode == 0, r.stderr
    return r.json


def node(g: dict, ns: str, path: str) -> dict:
    found = [n for n in g["nodes"] if n["namespace"] == ns and n["mountpoint"] == path]
    assert found, (ns, path)
    return found[-1]


def dot_accepts(text: str) -> None:
    cp = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0 and cp.stderr == "" and "<svg" in cp.stdout, cp.stderr


def test_mirror_and_mirror_host_edges(sandbox):
    create(sandbox, "c1")                             # / as the sandbox mode left it
    if sandbox.propagation == "private":
        sandbox.sh("mount --make-rshared /")          # mirror+host needs a shared host /
    create(sandbox, "c2", "--propagation", "mirror+host")
    # A mount made through c1's mirror afterwards is drawn on both sides, as peers.
    sandbox.sh("mkdir -p /container/c1/srv/x && mount -t tmpfs x /container/c1/srv/x")
    g = graph_json(sandbox)
    assert g["guests"] == ["c1", "c2"]
    slaves = {(s["master"], s["node"]) for s in g["slaves"]}
    host_root = node(g, "host", "/")
    # c1 (mirror): mirror and guest / one peer group; no master link anywhere in c1.
    m1, r1 = node(g, "host", "/container/c1"), node(g, "c1", "/")
    assert m1["shared"] is not None and m1["shared"] == r1["shared"]
    group = next(p for p in g["peer_groups"] if p["group"] == m1["shared"])
    assert set(group["members"]) == {m1["id"], r1["id"]}
    c1_ids = {n["id"] for n in g["nodes"] if n["namespace"] == "c1"
              or n["mountpoint"].startswith("/container/c1")}
    assert not [s for s in slaves if s[1] in c1_ids]
    x_host, x_guest = node(g, "host", "/container/c1/srv/x"), node(g, "c1", "/srv/x")
    assert x_host["shared"] == x_guest["shared"] is not None
    # c2 (mirror+host): a peer of its mirror, both slaves of the host's / peer group.
    m2, r2 = node(g, "host", "/container/c2"), node(g, "c2", "/")
    assert m2["shared"] == r2["shared"] and m2["shared"] != host_root["shared"]
    assert (host_root["shared"], m2["id"]) in slaves
    assert (host_root["shared"], r2["id"]) in slaves
    # Every guest mount flows both ways with its host copy.
    assert g["flows"] and {f["flow"] for f in g["flows"]} == {"both ways"}
    # BASE and STATE: private and unbindable.
    for path in ("/container", "/run/mirrormount"):
        n = node(g, "host", path)
        assert n["unbindable"] and n["shared"] is None and n["master"] is None
    # The same facts in the forms an admin reads.
    dot = sandbox.mm("graph", "--format", "dot")
    assert dot.returncode == 0, dot.stderr
    dot_accepts(dot.stdout)
    assert f'"pg:{host_root["shared"]}" -> "host:{m2["mount_id"]}" [style=dashed' in dot.stdout
    text = sandbox.mm("graph", "c2")
    assert text.returncode == 0, text.stderr
    assert f"c2: /container/c2 is a slave of host peer group {host_root['shared']} (/)" \
        in text.stdout
    one = graph_json(sandbox, "c1")
    assert one["guests"] == ["c1"]
    assert not [n for n in one["nodes"] if n["mountpoint"].startswith("/container/c2")]


def test_a_private_guest_mount_shows_no_flow_and_why(sandbox):
    create(sandbox, "c3", "--confine", "none")       # confined, it could not do this
    guest_sh(sandbox, "c3", "mount --make-private /tmp && mkdir -p /tmp/g && "
                            "mount -t tmpfs g /tmp/g")
    g = graph_json(sandbox, "c3")
    flows = {f["guest_path"]: f for f in g["flows"]}
    assert flows["/tmp"]["flow"] == "none" and flows["/tmp"]["host_node"] is not None
    assert flows["/tmp/g"]["flow"] == "none" and flows["/tmp/g"]["host_node"] is None
    assert flows["/"]["flow"] == "both ways"
    assert any(n.startswith("c3: 2 guest mount(s) are private") for n in g["notes"])
    dot = sandbox.mm("graph", "c3", "--format", "dot")
    assert dot.returncode == 0 and 'label="no propagation"' in dot.stdout
    dot_accepts(dot.stdout)


def test_graph_without_guests_and_bad_input(sandbox):
    r = sandbox.mm("graph")
    assert r.returncode == 0 and "BASE /container is not mounted" in r.stdout, r.stderr
    dot = sandbox.mm("graph", "--format", "dot")
    dot_accepts(dot.stdout)
    before = sandbox.mountinfo()
    for args in (["graph", "nosuch"], ["graph", "--format", "svg"], ["graph", "bad/name"]):
        r = sandbox.mm(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert sandbox.mountinfo() == before

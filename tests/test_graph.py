"""views.graph and views.graph_render on captured mount tables (fixtures/mountinfo/README.md):
the shared and slave edges of `mirror` and `mirror+host` guests, a guest that cut itself off
its mirror, a guest-only mount, unbindable BASE and STATE, and escaping in dot and text. Peer
group numbers are derived from the files, never hard-coded. `dot` (graphviz) must accept
every dot output."""
from __future__ import annotations

import json
import subprocess

import pytest

from fixture_files import mountinfo_table
from mirrormount.guest.model import Layout
from mirrormount.views.graph import (BOTH, HOST, NONE, ROLE_BASE, ROLE_MIRROR, ROLE_ROOT,
                                     ROLE_STATE, GuestView, Graph, build, flow_of)
from mirrormount.views.graph_render import dot_quote, to_dot, to_text

LAYOUT = Layout("/container", "/run/mirrormount")


def graph_of(scenario: str, guests: dict[str, str], whole_host: bool = False) -> Graph:
    """guests: name -> propagation mode, each with its captured guest table."""
    host = mountinfo_table(f"{scenario}.host")
    views = [GuestView(n, f"/container/{n}", mode, mountinfo_table(f"{scenario}.guest-{n}"))
             for n, mode in guests.items()]
    return build(host, LAYOUT, views, whole_host=whole_host)


def host_node(g: Graph, path: str):
    return next(n for n in g.nodes if n.namespace == HOST and n.mountpoint == path)


def guest_node(g: Graph, name: str, path: str):
    return next(n for n in g.nodes if n.namespace == name and n.mountpoint == path)


def dot_accepts(text: str) -> str:
    cp = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                        timeout=120)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    assert "<svg" in cp.stdout
    return cp.stdout


C123 = {"c1": "mirror", "c2": "mirror+host", "c3": "mirror"}


# ------------------------------------------------------------------ mirror: shared edges only
@pytest.mark.parametrize("scenario", ["private-c1", "rshared-c1", "private-c123"])
def test_mirror_guest_and_its_mirror_are_one_peer_group_with_no_master(scenario):
    g = graph_of(scenario, {"c1": "mirror"})
    mirror, root = host_node(g, "/container/c1"), guest_node(g, "c1", "/")
    assert mirror.shared is not None and mirror.shared == root.shared
    assert set(g.peer_groups[mirror.shared]) == {mirror.id, root.id}
    # No master/slave link into c1 at all: mirror mode ties nothing to the host.
    c1_ids = {n.id for n in g.nodes if n.namespace == "c1" or n.role == ROLE_MIRROR}
    assert not [s for s in g.slaves if s[1] in c1_ids]
    assert all(f.flow == BOTH for f in g.flows), [f for f in g.flows if f.flow != BOTH]
    assert len(g.flows) == len(mountinfo_table(f"{scenario}.guest-c1"))
    assert any("never reach the guest (mirror mode)" in n for n in g.notes)


def test_stacked_mounts_are_matched_to_their_own_copy():
    # /dev/shm and /dev/pts are each mounted twice; c3 has its own /proc on the mirrored one.
    g = graph_of("private-c123", C123)
    for name, path in (("c1", "/dev/shm"), ("c1", "/dev/pts"), ("c3", "/proc")):
        flows = [f for f in g.flows if f.guest == name and f.guest_path == path]
        assert len(flows) == 2 and {f.flow for f in flows} == {BOTH}
        assert len({f.host_node for f in flows}) == 2       # two different host copies


# ------------------------------------------------------------------ mirror+host: slave edges
def test_mirror_host_guest_is_a_slave_of_the_host_and_a_peer_of_its_mirror():
    g = graph_of("private-c123", C123)
    host_root = host_node(g, "/")
    mirror, root = host_node(g, "/container/c2"), guest_node(g, "c2", "/")
    assert host_root.role == ROLE_ROOT and host_root.shared is not None
    assert mirror.shared == root.shared and mirror.shared != host_root.shared
    # Both the mirror and the guest's / receive from the host's / peer group.
    assert (host_root.shared, mirror.id) in g.slaves
    assert (host_root.shared, root.id) in g.slaves
    # Every host mount c2's mirror is a slave of is drawn, with its own peer group.
    for n in g.nodes:
        if n.namespace == HOST and n.role == ROLE_MIRROR and n.master is not None \
                and n.mountpoint.startswith("/container/c2"):
            master = [h for h in g.nodes if h.namespace == HOST and h.shared == n.master]
            assert master and master[0].role in (ROLE_ROOT, "host"), n
    assert all(f.flow == BOTH for f in g.flows if f.guest == "c2")
    note = next(n for n in g.notes if n.startswith("c2: /container/c2 is a slave"))
    assert f"host peer group {host_root.shared} (/)" in note
    # c1 and c3 (mirror) get no slave edge even beside a mirror+host guest.
    assert not [s for s in g.slaves if s[1].split(":")[0] in ("c1", "c3")]


def test_graph_of_one_guest_draws_only_the_host_mounts_it_is_tied_to():
    only_c1 = graph_of("private-c123", {"c1": "mirror"})
    roles = {n.role for n in only_c1.nodes if n.namespace == HOST}
    assert roles == {ROLE_ROOT, ROLE_BASE, ROLE_STATE, ROLE_MIRROR}
    assert not any(n.mountpoint.startswith(("/container/c2", "/container/c3"))
                   for n in only_c1.nodes)
    only_c2 = graph_of("private-c123", {"c2": "mirror+host"})
    assert host_node(only_c2, "/usr").role == "host"     # c2's /usr receives from it
    everything = graph_of("private-c123", C123, whole_host=True)
    assert len([n for n in everything.nodes if n.namespace == HOST]) > \
        len([n for n in only_c2.nodes if n.namespace == HOST])
    # STATE's contents (nsfs binds, the nursery) tell nothing about propagation.
    assert not any(n.fstype == "nsfs" for n in everything.nodes)


# ------------------------------------------------------------------ BASE and STATE
def test_base_and_state_are_drawn_unbindable_and_private():
    g = graph_of("private-c1", {"c1": "mirror"})
    for role, path in ((ROLE_BASE, "/container"), (ROLE_STATE, "/run/mirrormount")):
        n = host_node(g, path)
        assert n.role == role and n.unbindable and n.shared is None and n.master is None
        assert n.propagation == "private unbindable"
        assert any(note.startswith(f"{role.upper()} {path} is private and unbindable")
                   for note in g.notes)
    dot = to_dot(g)
    assert 'style="filled,dashed"' in dot and "(BASE)" in dot and "(STATE)" in dot


def test_bare_host_says_base_and_state_are_not_mounted():
    g = build(mountinfo_table("private-bare.host"), LAYOUT, [], whole_host=True)
    assert g.guests == () and not g.flows
    assert [n for n in g.notes if "is not mounted" in n] and len(g.notes) == 2
    dot_accepts(to_dot(g))


# ------------------------------------------------------------------ why a mount did not flow
def test_guest_that_made_its_root_private_flows_nowhere_and_says_why():
    g = graph_of("rshared-c1-rprivate", {"c1": "mirror"})
    assert g.flows and all(f.flow == NONE for f in g.flows)
    assert all(f.host_node is not None for f in g.flows)   # copies exist, but no tie
    mirror = host_node(g, "/container/c1")
    note = next(n for n in g.notes if "is no peer of /container/c1" in n)
    assert f"shared:{mirror.shared}" in note and "mirrormount repair c1" in note
    assert set(g.peer_groups[mirror.shared]) == {mirror.id}
    dot = to_dot(g)
    assert dot.count('label="no propagation"') == len(g.flows)
    dot_accepts(dot)


def test_guest_only_mount_has_no_host_copy():
    g = graph_of("private-c1-guestonly", {"c1": "mirror"})
    go = next(f for f in g.flows if f.guest_path == "/tmp/go")
    assert go.flow == NONE and go.host_node is None and "no copy" in go.why
    tmp = next(f for f in g.flows if f.guest_path == "/tmp")
    assert tmp.flow == NONE and tmp.host_node is not None      # made private in the guest
    assert "guest private" in tmp.why
    assert any("are private (/tmp" in n for n in g.notes)


def test_flow_directions():
    host = mountinfo_table("propagate-from.host")
    a = next(m for m in host if m.mountpoint == "/srv/r/a")
    b = next(m for m in host if m.mountpoint == "/srv/b")
    from mirrormount.views.graph import _node
    na, nb = _node(HOST, a, "host"), _node("g", b, "guest")
    # b is a slave of a's peer group: what is mounted under a arrives under b, not back.
    assert flow_of(nb, na)[0] == "host to guest"
    assert flow_of(na, nb)[0] == "guest to host"
    assert flow_of(na, na)[0] == BOTH


def test_unreadable_guest_is_said_and_its_mirror_still_drawn():
    host = mountinfo_table("private-c1.host")
    g = build(host, LAYOUT, [GuestView("c1", "/container/c1", "mirror", None)], False)
    assert any(n.role == ROLE_MIRROR for n in g.nodes)
    assert not [n for n in g.nodes if n.namespace == "c1"]
    assert any("cannot be read" in n for n in g.notes)
    assert "(its mount namespace cannot be read)" in to_text(g)
    dot_accepts(to_dot(g))


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("scenario,guests", [
    ("private-c123", C123), ("rshared-c1", {"c1": "mirror"}),
    ("rshared-c1-rprivate", {"c1": "mirror"}), ("private-c1-guestonly", {"c1": "mirror"})])
def test_dot_is_accepted_and_draws_every_node_and_edge(scenario, guests):
    for whole in (False, True):
        g = graph_of(scenario, guests, whole)
        dot = to_dot(g)
        svg = dot_accepts(dot)
        assert svg.count('class="node"') == len(g.nodes) + len(
            set(g.peer_groups) | {m for m, _ in g.slaves})
        members = sum(len(v) for v in g.peer_groups.values())
        assert dot.count("[dir=none];") == members
        assert dot.count('[style=dashed, label="master"]') == len(g.slaves)


def test_dot_escapes_hostile_paths():
    # Spaces, tabs, newlines, backslashes, a literal "\040" and control bytes in mountpoints.
    for name in ("optional-fields.host", "control-chars.host"):
        g = build(mountinfo_table(name), LAYOUT, [], whole_host=True)
        dot = to_dot(g)
        dot_accepts(dot)
        for line in dot.splitlines():
            assert line.startswith(("digraph", "}", "  ")), line   # no forged line
    assert dot_quote('a"b\\c\nd') == '"a\\"b\\\\134c\\\\012d"'


def test_text_has_one_row_per_mount_and_escapes_paths():
    g = graph_of("private-c123", C123)
    text = to_text(g)
    for section in ("host", "guest c1", "guest c2", "guest c3", "peer groups", "why"):
        assert f"\n{section}\n" in f"\n{text}\n"
    header = next(line for line in text.splitlines() if "HOST PROPAGATION" in line)
    assert header.split() == ["ID", "TARGET", "PROPAGATION", "HOST", "COPY", "HOST",
                              "PROPAGATION", "FLOW"]
    assert text.count(" both ways") == len(g.flows)
    hostile = build(mountinfo_table("optional-fields.host"), LAYOUT, [], whole_host=True)
    lines = to_text(hostile).splitlines()
    assert any("new\\012line" in line for line in lines)
    assert not any(line.startswith("line") for line in lines)


def test_json_shape():
    g = graph_of("private-c123", {"c2": "mirror+host"})
    data = json.loads(json.dumps(g.to_json()))
    assert set(data) == {"guests", "nodes", "peer_groups", "slaves", "flows", "notes"}
    assert set(data["nodes"][0]) == {"id", "namespace", "mount_id", "mountpoint", "fstype",
                                     "source", "shared", "master", "unbindable", "role"}
    assert set(data["flows"][0]) == {"guest", "guest_path", "guest_node", "host_path",
                                     "host_node", "flow", "why"}
    assert data["slaves"] and set(data["slaves"][0]) == {"master", "node"}
    assert data["guests"] == ["c2"]

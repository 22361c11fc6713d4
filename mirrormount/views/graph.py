"""The propagation graph of the host, the mirrors and the guests, built from parsed mountinfo.

Pure: takes the host's MountTable and each guest's (read by the Guests facade) and returns a
frozen Graph; graph_render.py turns it into Graphviz dot, text or JSON.

What it draws (proc_pid_mountinfo(5) optional fields; Documentation/filesystems/
sharedsubtree.rst):
  * a node per mount, grouped by mount namespace (the host, each guest);
  * a node per peer group (`shared:N`), joined to each of its members: a mount or unmount
    beneath any member propagates to every other member;
  * a master/slave edge from peer group N to each mount that shows `master:N`: events flow
    from the group to the slave, never back;
  * BASE and STATE, unbindable (and private): every rbind of / prunes them, so no guest sees
    them, and nothing propagates into or out of them.

What it explains (Flow): for each guest mount, its copy under the mirror on the host (the
same path under BASE/NAME) and whether mounts made beneath one appear beneath the other:
  both ways      the two are peers (one peer group);
  host to guest  the guest's copy is a slave of the host copy's peer group;
  guest to host  the host's copy is a slave of the guest copy's peer group;
  none           no peer group or master link joins them (or there is no copy).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..record import record
from ..guest.health import guest_to_host
from ..guest.model import Layout
from ..kernel.mountinfo import Mount, MountTable, is_under

HOST = "host"

# Node roles: what a mount is to mirrormount.
ROLE_ROOT = "root"        # the host's /
ROLE_BASE = "base"        # BASE: mirrormount's tmpfs holding the mirrors
ROLE_STATE = "state"      # STATE: its tmpfs holding records and nsfs binds
ROLE_MIRROR = "mirror"    # a mount of a guest's mirror, under BASE/NAME on the host
ROLE_GUEST = "guest"      # a mount in a guest's own mount namespace
ROLE_HOST = "host"        # any other host mount

BOTH, TO_GUEST, TO_HOST, NONE = "both ways", "host to guest", "guest to host", "none"


@record(frozen=True)
class GuestView:
    """One guest as the graph needs it. table is None when its mount namespace could not be
    read (its nsfs file is gone)."""

    name: str
    mirror: str                  # BASE/NAME, a real path
    propagation: str             # mirror | mirror+host
    table: MountTable | None


@record(frozen=True)
class Node:
    """One mount in one namespace. id is "NAMESPACE:MOUNT_ID" (mount ids are unique in the
    whole system, the namespace makes the id readable)."""

    id: str
    namespace: str               # "host" or a guest's name
    mount_id: int
    mountpoint: str              # as that namespace sees it
    fstype: str
    source: str
    shared: int | None           # peer group it belongs to
    master: int | None           # peer group it receives from
    unbindable: bool
    role: str

    @property
    def propagation(self) -> str:
        """The mountinfo optional fields, "private" when there are none to share or receive:
        "shared:158 master:1135", "private", "private unbindable"."""
        words = [f"{k}:{v}" for k, v in (("shared", self.shared), ("master", self.master))
                 if v is not None] or ["private"]
        if self.unbindable:
            words.append("unbindable")
        return " ".join(words)

    def to_json(self) -> dict:
        return {"id": self.id, "namespace": self.namespace, "mount_id": self.mount_id,
                "mountpoint": self.mountpoint, "fstype": self.fstype, "source": self.source,
                "shared": self.shared, "master": self.master, "unbindable": self.unbindable,
                "role": self.role}


@record(frozen=True)
class Flow:
    """Whether mounts made beneath a guest mount and beneath its host copy reach each other."""

    guest: str
    guest_path: str
    guest_node: str
    host_path: str               # BASE/NAME + guest_path
    host_node: str | None        # None: nothing is mounted there on the host
    flow: str                    # BOTH | TO_GUEST | TO_HOST | NONE
    why: str

    def to_json(self) -> dict:
        return {"guest": self.guest, "guest_path": self.guest_path,
                "guest_node": self.guest_node, "host_path": self.host_path,
                "host_node": self.host_node, "flow": self.flow, "why": self.why}


@record(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    peer_groups: dict[int, tuple[str, ...]]      # peer group -> ids of its member nodes
    slaves: tuple[tuple[int, str], ...]          # (master peer group, slave node id)
    flows: tuple[Flow, ...]
    notes: tuple[str, ...]                       # one sentence each: why things (don't) flow
    guests: tuple[str, ...]                      # guest names drawn, in order

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def to_json(self) -> dict:
        return {"guests": list(self.guests), "nodes": [n.to_json() for n in self.nodes],
                "peer_groups": [{"group": g, "members": list(m)}
                                for g, m in sorted(self.peer_groups.items())],
                "slaves": [{"master": g, "node": n} for g, n in self.slaves],
                "flows": [f.to_json() for f in self.flows], "notes": list(self.notes)}


def _node(ns: str, m: Mount, role: str) -> Node:
    return Node(f"{ns}:{m.mount_id}", ns, m.mount_id, m.mountpoint, m.fstype, m.source,
                m.shared, m.master, m.unbindable, role)


def _host_role(m: Mount, layout: Layout, mirrors: Sequence[str], root_id: int) -> str:
    if m.mount_id == root_id:
        return ROLE_ROOT
    if m.mountpoint == layout.base:
        return ROLE_BASE
    if m.mountpoint == layout.state:
        return ROLE_STATE
    if any(is_under(m.mountpoint, mirror) for mirror in mirrors):
        return ROLE_MIRROR
    return ROLE_HOST


def host_mounts(host: MountTable, layout: Layout, guests: Sequence[GuestView],
                whole_host: bool) -> list[Mount]:
    """The host mounts to draw: /, BASE, STATE (not what STATE holds: nsfs binds and the
    nursery tell nothing about propagation) and the drawn guests' mirrors. With whole_host,
    every other host mount too; otherwise only the host mounts a mirror mount is a peer or
    a slave of, which are what a mirror+host guest receives from."""
    mirrors = [g.mirror for g in guests]
    root = host.root()
    in_mirror = [m for m in host if any(is_under(m.mountpoint, g) for g in mirrors)]
    related = {m.shared for m in in_mirror} | {m.master for m in in_mirror}
    related.discard(None)
    out = []
    for m in host:
        if is_under(m.mountpoint, layout.state) and m.mountpoint != layout.state:
            continue
        if is_under(m.mountpoint, layout.base) and m.mountpoint != layout.base:
            if any(is_under(m.mountpoint, g) for g in mirrors):
                out.append(m)
            continue
        if (whole_host or m.mount_id == root.mount_id or m.mountpoint in
                (layout.base, layout.state) or m.shared in related):
            out.append(m)
    return out


def _copy_of(gn: Node, host: MountTable, hpath: str, host_nodes: dict[int, Node]
             ) -> Node | None:
    """The host mount at hpath that is gn's copy. Mounts stack (a guest's own /proc over the
    mirrored one, /dev/shm twice): of the stack there, the one joined to gn by a peer group
    or a master link, else the topmost (what a path lookup reaches)."""
    stack = [host_nodes[m.mount_id] for m in host.by_mountpoint.get(hpath, [])
             if m.mount_id in host_nodes]
    for h in stack:
        if flow_of(gn, h)[0] != NONE:
            return h
    top = host.at(hpath)
    return host_nodes.get(top.mount_id) if top is not None else None


def _describe(node: Node | None) -> str:
    return "nothing mounted" if node is None else node.propagation


def flow_of(guest: Node, host: Node | None) -> tuple[str, str]:
    """(flow, why) between a guest mount and its host copy; see the module docstring."""
    if host is None:
        return NONE, ("no copy under the mirror: it was made on a private mount in the guest, "
                      "or guest-only")
    if guest.shared is not None and guest.shared == host.shared:
        return BOTH, f"peers in peer group {guest.shared}: a mount beneath either appears " \
                     "beneath the other"
    if host.shared is not None and guest.master == host.shared:
        return TO_GUEST, (f"the guest's copy is a slave of peer group {host.shared}: host "
                          "mounts arrive, the guest's stay in the guest")
    if guest.shared is not None and host.master == guest.shared:
        return TO_HOST, (f"the host's copy is a slave of peer group {guest.shared}: guest "
                         "mounts arrive on the host, host mounts stay on the host")
    return NONE, (f"guest {guest.propagation}, host {host.propagation}: no peer group or "
                  "master link joins them")


def build(host: MountTable, layout: Layout, guests: Sequence[GuestView],
          whole_host: bool = True) -> Graph:
    """The graph of `guests` (each a GuestView) on `host` (the host's own mount table).

    whole_host: draw every host mount (`graph` without NAME); otherwise only /, BASE, STATE
    and the host mounts the mirrors are peers or slaves of (`graph NAME`). Raises ParseError
    when the host table has no root."""
    mirrors = [g.mirror for g in guests]
    root_id = host.root().mount_id
    nodes: list[Node] = [_node(HOST, m, _host_role(m, layout, mirrors, root_id))
                         for m in host_mounts(host, layout, guests, whole_host)]
    host_nodes = {n.mount_id: n for n in nodes}
    flows: list[Flow] = []
    notes: list[str] = list(_layout_notes(host, layout))
    for g in guests:
        if g.table is None:
            notes.append(f"{g.name}: its mount namespace cannot be read (its nsfs file is "
                         "gone): only the mirror is drawn")
            continue
        gnodes = [_node(g.name, m, ROLE_GUEST) for m in g.table]
        nodes.extend(gnodes)
        for gn in gnodes:
            hpath = guest_to_host(g.mirror, gn.mountpoint)
            hn = _copy_of(gn, host, hpath, host_nodes)
            flow, why = flow_of(gn, hn)
            flows.append(Flow(g.name, gn.mountpoint, gn.id, hpath, hn.id if hn else None,
                              flow, why))
        notes.extend(_guest_notes(g, host, layout))
    groups: dict[int, list[str]] = {}
    for n in nodes:
        if n.shared is not None:
            groups.setdefault(n.shared, []).append(n.id)
    slaves = tuple((n.master, n.id) for n in nodes if n.master is not None)
    return Graph(tuple(nodes), {k: tuple(v) for k, v in sorted(groups.items())}, slaves,
                 tuple(flows), tuple(notes), tuple(g.name for g in guests))


def _layout_notes(host: MountTable, layout: Layout) -> Iterable[str]:
    for what, path in (("BASE", layout.base), ("STATE", layout.state)):
        m = host.at(path)
        if m is None:
            yield f"{what} {path} is not mounted (no guest was created yet)"
        elif m.unbindable and m.shared is None and m.master is None:
            yield (f"{what} {path} is private and unbindable: every rbind of / prunes it, so "
                   "no guest sees it, and nothing propagates into or out of it")
        else:
            yield (f"{what} {path} is {_describe(_node(HOST, m, ''))}, not private and "
                   "unbindable: guests made from an rbind of / may see it; hint: mirrormount "
                   "doctor")


def _guest_notes(g: GuestView, host: MountTable, layout: Layout) -> Iterable[str]:
    """Why mounts do or do not flow between the guest, its mirror and the host at large."""
    assert g.table is not None
    top = host.at(g.mirror)
    groot = g.table.root()
    if top is None:
        yield f"{g.name}: {g.mirror} is not mounted: the mirror is gone"
        return
    if top.shared is not None and groot.shared == top.shared:
        yield (f"{g.name}: {g.mirror} and the guest's / are peer group {top.shared}: a mount "
               f"made under either appears under the other")
    else:
        yield (f"{g.name}: the guest's / ({_describe(_node(g.name, groot, ''))}) is no peer "
               f"of {g.mirror} ({_describe(_node(HOST, top, ''))}): nothing flows between "
               f"them; hint: mirrormount status {g.name}, mirrormount repair {g.name}")
    outside = {m.shared: m for m in host if m.shared is not None
               and not is_under(m.mountpoint, g.mirror) and not is_under(m.mountpoint,
                                                                         layout.base)}
    masters = [(m, outside[m.master]) for m in host.under(g.mirror) if m.master in outside]
    if masters:
        m, src = masters[0]
        rest = len(masters) - 1
        more = f" (and {rest} more mount{'s' if rest > 1 else ''})" if rest else ""
        yield (f"{g.name}: {m.mountpoint} is a slave of host peer group {m.master} "
               f"({src.mountpoint}){more}: host mounts there arrive in the guest, and "
               f"the guest's never reach the host's own {src.mountpoint}" +
               ("" if g.propagation == "mirror+host" else "; mirror mode forbids it"))
    elif g.propagation == "mirror+host":
        yield (f"{g.name}: mirror+host, but no mirror mount is a slave of a host peer group: "
               "host mounts never arrive; hint: make the host mount that holds the rootfs "
               "shared, then re-create the guest")
    else:
        yield (f"{g.name}: no mirror mount is a peer or slave of a host peer group: mounts "
               f"made on the host outside {g.mirror} never reach the guest (mirror mode)")
    cut = [f for f in g.table if f.mountpoint != "/" and f.shared is None and f.master is None]
    if cut:
        yield (f"{g.name}: {len(cut)} guest mount(s) are private ({cut[0].mountpoint}"
               f"{', ...' if len(cut) > 1 else ''}): mounts made beneath them stay in the "
               "guest")

"""The propagation Graph (graph.py) as Graphviz dot or as text. Pure: Graph in, str out.

dot: one cluster per mount namespace (host, each guest), a box per mount, an ellipse per
peer group joined to its members by plain lines, a dashed arrow from a peer group to each of
its slaves ("master"), and a dotted red line between a guest mount and its host copy when
nothing flows between them. `dot -Tsvg` renders it (graphviz).

text: the host's mounts drawn, then per guest each mount beside its host copy with the flow
between them, the peer groups with their members and slaves, and the why, one sentence each.
Paths are escaped as mountinfo does (busy.report.shown) so that a name cannot forge a line.
"""
from __future__ import annotations

from ..busy.report import shown
from .graph import (HOST, NONE, ROLE_BASE, ROLE_GUEST, ROLE_HOST, ROLE_MIRROR, ROLE_ROOT,
                    ROLE_STATE, Graph, Node)

_ROLE_WORD = {ROLE_ROOT: "/", ROLE_BASE: "BASE", ROLE_STATE: "STATE", ROLE_MIRROR: "mirror",
              ROLE_HOST: "-", ROLE_GUEST: "guest"}
_FILL = {ROLE_ROOT: "white", ROLE_HOST: "white", ROLE_BASE: "mistyrose",
         ROLE_STATE: "mistyrose", ROLE_MIRROR: "lightyellow", ROLE_GUEST: "lightcyan"}


# ------------------------------------------------------------------------------ dot
def dot_quote(text: str) -> str:
    """A dot double-quoted string (the DOT language: only \\" is an escape in an ID; in a
    label a backslash starts an escString such as \\n, so backslashes are doubled too).
    Control characters are shown as octal first, as in mountinfo."""
    return '"' + shown(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    # Each line quoted on its own, then joined by dot's line break escape \n.
    return '"' + "\\n".join(dot_quote(x)[1:-1] for x in lines) + '"'


def _mount_node(n: Node) -> str:
    lines = [n.mountpoint, f"mount {n.mount_id}, {n.fstype}", n.propagation]
    if n.role in (ROLE_BASE, ROLE_STATE):
        lines[1] += f" ({_ROLE_WORD[n.role]})"
    attrs = [f"label={_label(lines)}", "style=filled", f"fillcolor={_FILL[n.role]}"]
    if n.unbindable:
        # Drawn as pruned: no rbind takes it, nothing propagates in or out.
        attrs[1] = 'style="filled,dashed"'
        attrs.append("color=red")
    elif n.shared is None and n.master is None:
        attrs.append("color=gray50")
        attrs.append("fontcolor=gray30")
    return f"    {dot_quote(n.id)} [{', '.join(attrs)}];"


def to_dot(graph: Graph) -> str:
    out = ["digraph mirrormount {",
           '  graph [rankdir=LR, fontname="Helvetica", compound=true, labelloc=t, '
           'label="mirrormount propagation: ellipses are peer groups (a mount beneath one '
           'member appears beneath every member); dashed arrows go from a master peer group '
           'to its slaves; red dashed boxes are unbindable"];',
           '  node [shape=box, fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=9];']
    spaces = [HOST, *graph.guests]
    for i, ns in enumerate(spaces):
        members = [n for n in graph.nodes if n.namespace == ns]
        if not members:
            continue
        title = "host" if ns == HOST else f"guest {ns}"
        out.append(f"  subgraph {dot_quote(f'cluster_{i}')} {{")
        out.append(f"    label={dot_quote(title)};")
        out.extend(_mount_node(n) for n in members)
        out.append("  }")
    known = set(graph.peer_groups) | {g for g, _ in graph.slaves}
    for g in sorted(known):
        seen = g in graph.peer_groups
        label = f"peer group {g}" if seen else f"peer group {g}\\n(no member drawn)"
        out.append(f'  "pg:{g}" [shape=ellipse, label="{label}"'
                   f"{'' if seen else ', style=dashed'}];")
    for g, member_ids in graph.peer_groups.items():
        for m_id in member_ids:
            out.append(f'  {dot_quote(m_id)} -> "pg:{g}" [dir=none];')
    for g, slave in graph.slaves:
        out.append(f'  "pg:{g}" -> {dot_quote(slave)} [style=dashed, label="master"];')
    for f in graph.flows:
        if f.flow == NONE and f.host_node is not None:
            out.append(f"  {dot_quote(f.guest_node)} -> {dot_quote(f.host_node)} "
                       '[dir=none, style=dotted, color=red, label="no propagation"];')
    out.append("}")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------ text
def _columns(rows: list[list[str]], headers: list[str]) -> list[str]:
    """util-linux columns: upper-case headers, left-aligned, two spaces apart."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [headers, *rows]]


def _where(n: Node) -> str:
    return f"{n.namespace}:{shown(n.mountpoint)}"


def to_text(graph: Graph) -> str:
    by_id = {n.id: n for n in graph.nodes}
    out = ["host"]
    out.extend("  " + line for line in _columns(
        [[str(n.mount_id), shown(n.mountpoint), n.propagation, _ROLE_WORD[n.role]]
         for n in graph.nodes if n.namespace == HOST],
        ["ID", "TARGET", "PROPAGATION", "ROLE"]))
    for name in graph.guests:
        flows = [f for f in graph.flows if f.guest == name]
        out.append("")
        out.append(f"guest {name}")
        if not flows:
            out.append("  (its mount namespace cannot be read)")
            continue
        rows = []
        for f in flows:
            g = by_id[f.guest_node]
            h = by_id.get(f.host_node) if f.host_node else None
            rows.append([str(g.mount_id), shown(f.guest_path), g.propagation,
                         shown(f.host_path) if h else "-", h.propagation if h else "-",
                         f.flow])
        out.extend("  " + line for line in _columns(
            rows, ["ID", "TARGET", "PROPAGATION", "HOST COPY", "HOST PROPAGATION", "FLOW"]))
    slaves_of: dict[int, list[str]] = {}
    for group, slave in graph.slaves:
        slaves_of.setdefault(group, []).append(_where(by_id[slave]))
    groups = sorted(set(graph.peer_groups) | set(slaves_of))
    if groups:
        out.append("")
        out.append("peer groups")
        out.extend("  " + line for line in _columns(
            [[str(g), " ".join(_where(by_id[m]) for m in graph.peer_groups.get(g, ())) or
              "(no member drawn)", " ".join(slaves_of.get(g, [])) or "-"] for g in groups],
            ["GROUP", "MEMBERS", "SLAVES"]))
    if graph.notes:
        out.append("")
        out.append("why")
        out.extend(f"  - {shown(n)}" for n in graph.notes)
    return "\n".join(out)

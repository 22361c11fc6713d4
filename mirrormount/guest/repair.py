"""Pure planning of `repair`: from the host's and the guest's mount tables to the operations
that put a broken mirror back together. Nothing here touches the system.

A mirror is whole when every mount of the guest and its copy under BASE/NAME are peers (one
peer group per mount), so that mounts made beneath either flow to the other. A guest that
ran `mount --make-rprivate /` (or rslave, or unbindable) left every group; mounts made
while it was broken exist on one side only. kernel-findings §13 measured the way back:
move_mount(MOVE_MOUNT_SET_GROUP) (Linux 5.15+, fs/namespace.c do_set_group) puts a private
mount into the peer group of another mount of the same superblock whose root is at or
above its own.

Mounts are matched by guest path and by their place in the stack at that path (0: the
bottom one), and are the same mount when they show the same filesystem and root. Then:

1. host side first: a host mount of a broken pair that is not shared is made shared (a
   group of its own), so the guest's copy has a group to join;
2. the guest's copy of each broken pair is made private, since do_set_group takes only a
   private target; so is the parent under which a missing tree will be attached when that
   parent is still a peer of the source's parent (else the attach would propagate back and
   stack a second copy on the source side); that parent then rejoins in step 4;
3. what one side has and the other lacks (mounts made while the mirror was broken) is
   copied: its mounts are made shared where they are not (the clone of a shared mount is
   its peer), then cloned recursively and attached at the same path on the other side;
4. every target of step 2 joins its counterpart's group (MOVE_MOUNT_SET_GROUP).

Planning again after a failure or a kill starts from the tables as they are then, and so
completes the job. A broken mount hidden beneath another is left as it is (no path reaches
it, and nothing can be mounted on it), and said in ``RepairPlan.left``. What cannot be healed is said, with why, in ``RepairPlan.cannot``: a
mirror that is gone, a guest namespace that cannot be read, a path where the two sides show
different filesystems, a broken mount that another hides, mounts tied to host peer groups
outside the mirror (mirror mode), a mirror+host mirror no longer receiving from the host.

Skipped on both sides: guest-only mounts (and an interrupted one), and what a mirrormount
run inside the guest keeps under its own BASE and STATE (private by design).
"""
from __future__ import annotations


from ..record import field, record
from ..kernel.mountinfo import Mount, MountTable, is_under
from .health import RECREATE
from .mountops import CopyTree, JoinGroup, Propagate
from .ops import Op
from .owner import LABELS, made_by_us

Key = tuple[str, int]          # (guest path, place in the stack there, 0 = bottom)


@record(frozen=True)
class RepairFacts:
    """What the planner needs, gathered by the caller (guests.py)."""

    mirror: str
    holder: str                 # the guest's mnt nsfs file
    propagation: str            # mirror | mirror+host
    host: MountTable
    guest: MountTable | None    # None: the guest's namespace cannot be read
    base: str
    skip: tuple[str, ...] = ()  # guest-only paths, and an interrupted one


@record(frozen=True)
class RepairPlan:
    ops: list[Op] = field(default_factory=list)
    cannot: list[str] = field(default_factory=list)
    broken: int = 0             # pairs that were not peers
    missing: int = 0            # trees found on one side only
    left: list[str] = field(default_factory=list)   # harmless, and out of reach: said only


def kind(m: Mount) -> str:
    """The propagation word that puts a mount back as it is (rollback's undo_flag)."""
    if m.shared is not None:
        return "shared"
    if m.unbindable:
        return "unbindable"
    return "slave" if m.master is not None else "private"


def _view(table: MountTable, top: Mount, prefix: str) -> dict[Key, Mount]:
    """Every mount descending from top, keyed by guest path and stack place."""
    out: dict[Key, Mount] = {}
    todo = [top]
    while todo:
        m = todo.pop()
        path = m.mountpoint[len(prefix):] if prefix else m.mountpoint
        path = path or "/"
        if m is top:
            path = "/"
        place = 0
        parent = table.by_id.get(m.parent_id)
        while m is not top and parent is not None and parent.mountpoint == m.mountpoint:
            place += 1
            parent = table.by_id.get(parent.parent_id)
        out[(path, place)] = m
        todo.extend(c for c in table.children(m.mount_id))
    return out


def _same_fs(a: Mount, b: Mount) -> bool:
    return (a.major, a.minor, a.root) == (b.major, b.minor, b.root)


def _peers(g: Mount, h: Mount) -> bool:
    return g.shared is not None and g.shared == h.shared


def _parent_key(view: dict[Key, Mount], table: MountTable, m: Mount) -> Key | None:
    parent = table.by_id.get(m.parent_id)
    for key, other in view.items():
        if other is parent:
            return key
    return None


def plan_repair(f: RepairFacts) -> RepairPlan:
    top = f.host.at(f.mirror)
    if top is None:
        return RepairPlan(cannot=[f"{f.mirror} is not mounted: the mirror is gone; "
                                  f"hint: {RECREATE}"])
    if f.guest is None:
        return RepairPlan(cannot=["the guest's mount namespace cannot be read (its nsfs "
                                  f"file is missing); hint: {RECREATE}"])
    host = _view(f.host, top, f.mirror.rstrip("/"))
    guest = _view(f.guest, f.guest.root(), "")
    cannot: list[str] = []
    left: list[str] = []

    # Skipped on both sides: guest-only paths, and nested BASE/STATE with what lies beneath.
    nested = [k[0] for k, g in guest.items() if k[0] != "/"
              and any(made_by_us(g, what) for what in LABELS)]
    skipped = [*f.skip, *nested]

    def skip(path: str) -> bool:
        return any(is_under(path, p) for p in skipped)

    host = {k: m for k, m in host.items() if not skip(k[0])}
    guest = {k: m for k, m in guest.items() if not skip(k[0])}

    # Ties to the host outside the mirror: repair does not cut them (status says so).
    outside = {m.shared: m for m in f.host if m.shared is not None
               and not is_under(m.mountpoint, f.mirror) and not is_under(m.mountpoint, f.base)}
    for (path, _), h in sorted(host.items()):
        if h.shared in outside:
            cannot.append(f"{f.mirror.rstrip('/')}{'' if path == '/' else path} shares peer "
                          f"group {h.shared} with host mount {outside[h.shared].mountpoint}: "
                          f"mounts leak both ways; hint: {RECREATE}")
        elif f.propagation == "mirror" and h.master in outside:
            cannot.append(f"{f.mirror.rstrip('/')}{'' if path == '/' else path} receives from "
                          f"host peer group {h.master}, which mirror mode forbids; "
                          f"hint: {RECREATE}")
    if f.propagation == "mirror+host" and top.master is None:
        cannot.append(f"{f.mirror} no longer receives from the host's peer group (mirror+host "
                      f"mode); repair does not re-tie it to the host; hint: {RECREATE}")

    def stack_top(view: dict[Key, Mount], key: Key) -> bool:
        return (key[0], key[1] + 1) not in view

    pairs: list[Key] = []           # broken pairs: the guest's copy joins the host's group
    hosts_to_share: list[Key] = []
    diverged: set[Key] = set()
    for key in sorted(set(host) & set(guest)):
        g, h = guest[key], host[key]
        if not _same_fs(g, h):
            diverged.add(key)
            cannot.append(f"{key[0]}: the host side shows {h.fstype} {h.source} "
                          f"({h.root}), the guest {g.fstype} {g.source} ({g.root}): two "
                          "mounts, one path; unmount it (once the mirror is whole, both "
                          "sides' go) and mount the one to keep again")
            continue
        if _peers(g, h):
            continue
        if not (stack_top(host, key) and stack_top(guest, key)):
            # No path reaches a mount another one hides; nothing can be mounted on it either,
            # so the mirror works without it.
            left.append(f"{key[0]}: a mount hidden beneath another stays out of its copy's "
                        "peer group (no path reaches it; nothing can be mounted on it)")
            continue
        pairs.append(key)
        if h.shared is None:
            hosts_to_share.append(key)

    # Trees one side lacks: only their topmost mount, whose parent both sides have.
    missing: list[tuple[str, Key, Mount]] = []      # (side that lacks it, key, source mount)
    for lacks, have, have_table, other in (("host", guest, f.guest, host),
                                           ("guest", host, f.host, guest)):
        for key in sorted(set(have) - set(other)):
            m = have[key]
            pkey = _parent_key(have, have_table, m)
            if pkey is None or pkey not in other:
                continue                            # inside a missing tree: copied with it
            # Attached at the same path on the other side, it lands on whatever is topmost
            # there: the parent's counterpart must be that, and the same filesystem.
            if pkey in diverged or not stack_top(other, pkey):
                cannot.append(f"{key[0]}: on the {'guest' if lacks == 'host' else 'host'} side "
                              "only, beneath a mount that differs between the sides or is "
                              "hidden on one: unmount what should not be there, then run "
                              "repair again")
                continue
            tree = _subtree(have, have_table, m)
            if any(skip(k[0]) for k in tree) or len(tree) != len(_all_below(have_table, m)):
                cannot.append(f"{key[0]}: on one side only, with a guest-only or nested "
                              "mirrormount mount inside: unmount it, then run repair again")
                continue
            missing.append((lacks, key, m))

    ops: list[Op] = []
    rejoin: list[tuple[str, Key]] = [("guest", k) for k in pairs]

    def prop(side: str, key: Key, m: Mount, flag: str, why: str) -> Propagate:
        return Propagate(why, f.mirror, f.holder, side, key[0], flag, kind(m))

    # 1. host side: a group for the guest's copy to join
    for key in hosts_to_share:
        ops.append(prop("host", key, host[key], "shared",
                        f"{key[0]}: the host's copy is {host[key].propagation}; shared, so "
                        "that the guest's copy has a peer group to join"))
    # 2. targets private: the guest's copy of each broken pair ...
    for key in pairs:
        g = guest[key]
        if g.shared is not None or g.master is not None or g.unbindable:
            ops.append(prop("guest", key, g, "private",
                            f"{key[0]}: the guest's copy is {g.propagation}; private first: "
                            "only a private mount can join a peer group"))
    # ... and a parent still a peer of the source's parent, before a tree is attached under it
    for lacks, key, m in missing:
        have, other = (guest, host) if lacks == "host" else (host, guest)
        table = f.guest if lacks == "host" else f.host
        pkey = _parent_key(have, table, m)
        assert pkey is not None
        if any(k == pkey for _, k in rejoin):
            continue            # made private in step 2 already
        if _peers(guest[pkey], host[pkey]):
            ops.append(prop(lacks, pkey, other[pkey], "private",
                            f"{pkey[0]}: private on the {lacks} side for a moment, so the copy "
                            f"of {key[0]} attached beneath it does not propagate back"))
            rejoin.append((lacks, pkey))
    # 3. copy what one side lacks
    for lacks, key, m in missing:
        have = guest if lacks == "host" else host
        table = f.guest if lacks == "host" else f.host
        source = "guest" if lacks == "host" else "host"
        tree = _subtree(have, table, m)
        for k in sorted(tree):
            if have[k].shared is None:
                ops.append(prop(source, k, have[k], "shared",
                                f"{k[0]}: shared on the {source} side, so its copy on the "
                                f"{lacks} side is its peer"))
        ops.append(CopyTree(f"{key[0]}: made on the {source} side while the mirror was "
                            f"broken; copied to the {lacks} side ({len(tree)} mount(s))",
                            f.mirror, f.holder, lacks, key[0], len(tree)))
    # 4. every target joins its counterpart's group
    for side, key in rejoin:
        peer = "host" if side == "guest" else "guest"
        ops.append(JoinGroup(f"{key[0]}: the {side}'s copy joins the peer group of the "
                             f"{peer}'s again (MOVE_MOUNT_SET_GROUP)",
                             f.mirror, f.holder, side, key[0]))
    return RepairPlan(ops, cannot, len(pairs), len(missing), left)


def _all_below(table: MountTable, m: Mount) -> list[Mount]:
    out, todo = [], [m]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(table.children(x.mount_id))
    return out


def _subtree(view: dict[Key, Mount], table: MountTable, m: Mount) -> list[Key]:
    """The keys of m and every mount beneath it that the view holds."""
    below = {id(x) for x in _all_below(table, m)}
    return [k for k, x in view.items() if id(x) in below]

"""Pure planning: a request plus the current mount table become an ordered list of operations.

The same list is printed by ``--dry-run`` (as mount(8)/unshare(1)/pivot_root(8) lines, each
with the reason) and carried out by ``apply.py``, so what is printed is what is done.
Nothing here touches the system.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..errors import UsageError
from ..kernel.mountinfo import MountTable, is_under
from .model import KIND, Layout, ordered_kinds, validate_name, validate_propagation

@dataclass(frozen=True)
class CreateRequest:
    name: str
    rootfs: str = "/"
    hostname: str | None = None
    kinds: frozenset[str] = frozenset()     # extra namespace kinds; mnt is implied
    propagation: str = "mirror"

    @property
    def all_kinds(self) -> tuple[str, ...]:
        return ordered_kinds(set(self.kinds) | ({"uts"} if self.hostname else set()))


# ----------------------------------------------------------------------------- operations
@dataclass(frozen=True)
class Op:
    """One step. ``why`` is printed beside the shell line: it says why, in propagation terms."""

    why: str

    def shell(self) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class MakeDir(Op):
    path: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p {shlex.quote(self.path)}"]


@dataclass(frozen=True)
class MountTmpfs(Op):
    path: str = ""
    source: str = ""
    options: str = "mode=0700"

    def shell(self) -> list[str]:
        return [f"mount -t tmpfs -o {self.options} {self.source} {shlex.quote(self.path)}"]


@dataclass(frozen=True)
class SetPropagation(Op):
    path: str = ""
    flag: str = "private"        # private | shared | slave | unbindable
    recursive: bool = False
    undo_flag: str | None = None  # what to restore if a later step fails

    def shell(self) -> list[str]:
        r = "r" if self.recursive else ""
        return [f"mount --make-{r}{self.flag} {shlex.quote(self.path)}"]


@dataclass(frozen=True)
class RBind(Op):
    source: str = ""
    target: str = ""

    def shell(self) -> list[str]:
        return [f"mount --rbind {shlex.quote(self.source)} {shlex.quote(self.target)}"]


@dataclass(frozen=True)
class StartNursery(Op):
    """A persistent, nearly empty mount namespace held by an nsfs bind at ``holder``.
    Guests are cloned from it, so a create copies ~1 mount instead of the whole host table."""

    holder: str = ""
    root: str = ""   # where its tmpfs is mounted, in the child's private copy only

    def shell(self) -> list[str]:
        q = shlex.quote
        root = q(self.root)
        inner = (f"mkdir -p {root}; mount -t tmpfs -o mode=0700,size=64k mirrormount-nursery "
                 f"{root}; mkdir {root}/newroot {root}/old; cd {root}; pivot_root . old; "
                 "umount -l /old; exec sleep infinity")
        return [
            f"touch {q(self.holder)}",
            f"unshare --mount --propagation private sh -e -c {q(inner)} &",
            "# bound from the host, so the nsfs file lands in the host's table",
            f"mount --bind /proc/$!/ns/mnt {q(self.holder)}; kill $!",
        ]


@dataclass(frozen=True)
class SpawnGuest(Op):
    """Fork a child that builds the guest's namespaces from the nursery; bind them to STATE."""

    name: str = ""
    mirror: str = ""
    nursery: str = ""
    ns_dir: str = ""
    kinds: tuple[str, ...] = ("mnt",)
    hostname: str | None = None
    put_old: str = "mnt"  # an existing directory of the rootfs, used only during pivot_root

    def shell(self) -> list[str]:
        q = shlex.quote
        flags = " ".join(KIND[k].unshare_opt for k in self.kinds)
        old = f"/{self.put_old}"
        steps = [
            "# open_tree(MIRROR, OPEN_TREE_CLONE|AT_RECURSIVE) then move_mount(tree -> /newroot):",
            "# a detached copy whose mounts are peers of the mirror; no shell equivalent, it is",
            f"# what `mount --rbind {self.mirror} /newroot` would do from a namespace seeing both.",
            "mount --rbind MIRROR_TREE /newroot",
            f"# put_old must not be on a shared mount: a private self-bind of {old}, for a moment",
            f"mount --bind /newroot{old} /newroot{old}",
            f"mount --make-private /newroot{old}",
            f"cd /newroot && pivot_root . {self.put_old}",
            "cd /",
            f"mount --make-rprivate {old}     # never let the detach propagate (findings §3)",
            f"umount -l {old}                 # the nursery's tmpfs",
            f"umount {old}                    # the self-bind; its host copy goes with it",
        ]
        if self.hostname:
            steps.append(f"hostname {q(self.hostname)}")
        if "pid" in self.kinds:
            steps.append("mount -t proc proc /proc   # by the guest's PID 1 (mirrormount reaper)")
        # Trailing comments explain each step here but must not reach `sh -c`, where the
        # first '#' would swallow every later step.
        inner = "; ".join(s.split("  #")[0].rstrip() for s in steps if not s.startswith("#"))
        lines = [f"# guest {self.name}: " + s[2:] for s in steps if s.startswith("#")]
        lines.append(f"nsenter --mount={q(self.nursery)} unshare {flags} "
                     f"--propagation unchanged sh -e -c {q(inner)} &")
        for kind in self.kinds:
            # with --fork, $! is unshare itself: its children are in the new pid namespace
            src = "pid_for_children" if kind == "pid" else kind
            lines.append(f"touch {q(self.ns_dir)}/{kind}; "
                         f"mount --bind /proc/$!/ns/{src} {q(self.ns_dir)}/{kind}")
        return lines


@dataclass(frozen=True)
class WriteRecord(Op):
    path: str = ""
    record: dict = field(default_factory=dict, hash=False, compare=False)

    def shell(self) -> list[str]:
        return [f"echo '<guest record>' > {shlex.quote(self.path)}.tmp && "
                f"mv {shlex.quote(self.path)}.tmp {shlex.quote(self.path)}"]


def render(ops: list[Op]) -> str:
    """The dry-run text: each operation's shell lines, the reason as a trailing comment."""
    out = []
    for number, op in enumerate(ops, start=1):
        out.append(f"# step {number}: {op.why}")
        out.extend(op.shell())
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- planners
@dataclass(frozen=True)
class HostFacts:
    """What the planner needs to know about the host, gathered by the caller."""

    table: MountTable
    existing: frozenset[str] = frozenset()
    nursery_ready: bool = False
    put_old: str = "mnt"       # chosen by the caller from the rootfs's directories


def _is_self_mount(table: MountTable, path: str, *, private: bool, unbindable: bool) -> bool:
    m = table.at(path)
    if m is None:
        return False
    ok = True
    if private:
        ok &= m.shared is None and m.master is None
    if unbindable:
        ok &= m.unbindable
    return ok


def plan_base(layout: Layout, table: MountTable) -> list[Op]:
    """BASE and STATE: each a tmpfs of its own, private and unbindable (findings §5, §5b)."""
    ops: list[Op] = []
    for path, label, what in ((layout.base, "mirrormount-base", "BASE"),
                              (layout.state, "mirrormount-state", "STATE")):
        if _is_self_mount(table, path, private=True, unbindable=True):
            continue
        if table.at(path) is None:
            ops.append(MakeDir(f"{what}: the directory", path))
            ops.append(MountTmpfs(
                f"{what}: a tmpfs of its own, so the directory beneath stays empty and a guest "
                "whose rootfs is / sees no names in it (findings §5b)", path, label,
                "mode=0755" if what == "BASE" else "mode=0700"))
        ops.append(SetPropagation(
            f"{what}: private, so mounts made here never propagate to the host's peers", path,
            "private"))
        ops.append(SetPropagation(
            f"{what}: unbindable, so an rbind of / prunes it: guests never see other guests "
            "or nsfs files (an nsfs file inside a tree makes move_mount fail with ELOOP)",
            path, "unbindable"))
    return ops


def plan_create(req: CreateRequest, layout: Layout, facts: HostFacts) -> list[Op]:
    validate_name(req.name)
    validate_propagation(req.propagation)
    if req.name in facts.existing:
        raise UsageError(f"guest {req.name} already exists")
    for top, what in ((layout.base, "BASE"), (layout.state, "STATE")):
        if is_under(req.rootfs, top):
            raise UsageError(f"rootfs {req.rootfs} lies inside {what} {top}")
    table = facts.table
    ops = plan_base(layout, table)
    if not facts.nursery_ready:
        ops.append(MakeDir("the nursery's holder directory", layout.nursery_dir))
        ops.append(StartNursery(
            "the nursery: guests are cloned from this near-empty namespace, so the cost of a "
            "create does not grow with the number of guests (findings §4)",
            layout.nursery_file, f"{layout.nursery_dir}/root"))
    mirror = layout.mirror(req.name)
    if req.propagation == "mirror+host":
        # Host mounts can only flow into the mirror from mounts that are shared. Make each
        # private host mount under the rootfs shared (its own new group), as systemd does.
        seen: set[str] = set()
        for m in table.under(req.rootfs):
            # A mountpoint names only its topmost mount: one make-shared per path.
            if m.mountpoint in seen:
                continue
            seen.add(m.mountpoint)
            if m.shared is None and m.master is None and not m.unbindable and not (
                    is_under(m.mountpoint, layout.base) or is_under(m.mountpoint, layout.state)):
                ops.append(SetPropagation(
                    "mirror+host: a private host mount sends nothing to its copies; make it "
                    "shared so the mirror can become its slave", m.mountpoint, "shared",
                    undo_flag="private"))
    ops += [
        MakeDir("the mirror's mountpoint (inside BASE's tmpfs)", mirror),
        RBind("the mirror: every mount of the rootfs, copied; BASE and STATE are unbindable "
              "and so pruned", req.rootfs, mirror),
    ]
    if req.propagation == "mirror":
        ops.append(SetPropagation(
            "cut every tie to the host's peer groups: when / is shared, rbind copies join the "
            "host's groups, and make-rshared alone would keep them", mirror, "private",
            recursive=True))
    else:
        ops.append(SetPropagation(
            "mirror+host: receive the host's mounts (slave of its groups) but send nothing back",
            mirror, "slave", recursive=True))
    ops.append(SetPropagation(
        "a fresh peer group per mount of the mirror, which the guest's copy will join: "
        "mounts then flow both ways between BASE/NAME and the guest", mirror, "shared",
        recursive=True))
    ops.append(MakeDir("the guest's state directory (0700)", layout.guest_dir(req.name)))
    ops.append(MakeDir("where its nsfs binds live", layout.ns_dir(req.name)))
    ops.append(SpawnGuest(
        "the guest's namespaces, cloned from the nursery and pivot_rooted into the mirror; "
        "kept alive by nsfs binds, so the guest needs no process",
        req.name, mirror, layout.nursery_file, layout.ns_dir(req.name), req.all_kinds,
        req.hostname, facts.put_old))
    ops.append(WriteRecord("the guest's record, written atomically (temp file + rename)",
                           layout.record(req.name)))
    return ops

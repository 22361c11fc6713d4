"""The operations a plan is made of: each a frozen record (record.py) that says why (in propagation
terms) and how (``shell()``: the equivalent mount(8)/unshare(1)/nsenter(1) lines that
``--dry-run`` prints). ``plan.py`` builds lists of them, ``apply.py`` carries them out.
Those only mount, umount and repair plan are in mountops.py.
Nothing here touches the system.
"""
from __future__ import annotations

import json
import shlex

from ..record import field, fields, is_record, record
from .model import KIND


# ----------------------------------------------------------------------------- operations
# Operations are frozen and never compared (eq=False): two steps with the same fields are
# still two steps of a plan.
@record(frozen=True, eq=False)
class Op:
    """One step. ``why`` is printed beside the shell line: it says why, in propagation terms."""

    why: str

    def shell(self) -> list[str]:
        raise NotImplementedError


@record(frozen=True, eq=False)
class MakeDir(Op):
    """mkdir -p of a directory mirrormount owns (BASE, STATE, a guest's own); undone if it
    made it."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class MountTmpfs(Op):
    """A tmpfs of mirrormount's own (BASE, STATE, the nursery's holder)."""

    path: str = ""
    source: str = ""
    options: str = "mode=0700"

    def shell(self) -> list[str]:
        return [f"mount -t tmpfs -o {self.options} {self.source} {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class SetPropagation(Op):
    """A propagation change on a path (MS_PRIVATE, MS_SHARED, ...), with what to restore on
    undo."""

    path: str = ""
    flag: str = "private"        # private | shared | slave | unbindable
    recursive: bool = False
    undo_flag: str | None = None  # what to restore if a later step fails

    def shell(self) -> list[str]:
        r = "r" if self.recursive else ""
        return [f"mount --make-{r}{self.flag} {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class RBind(Op):
    """A recursive bind (the mirror: ROOTFS onto BASE/NAME)."""

    source: str = ""
    target: str = ""

    def shell(self) -> list[str]:
        return [f"mount --rbind {shlex.quote(self.source)} {shlex.quote(self.target)}"]


@record(frozen=True, eq=False)
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


@record(frozen=True, eq=False)
class SpawnGuest(Op):
    """Fork a child that builds the guest's namespaces from the nursery; bind them to STATE."""

    name: str = ""
    mirror: str = ""
    nursery: str = ""
    ns_dir: str = ""
    kinds: tuple[str, ...] = ("mnt",)
    hostname: str | None = None
    put_old: str = "mnt"  # an existing directory of the rootfs, used only during pivot_root
    confine: str = "none"           # model.CONFINE_MODES: for the guest's init (reaper)
    drop_caps: tuple[str, ...] = ()
    # STATE, when the guest has a cgroup of its own (guest/cgroup.py finds it from STATE):
    # the child joins it before it unshares, so the cgroup namespace is rooted there.
    cgroup_state: str = ""
    init: tuple[str, ...] = ()      # the user's PID 1 (argv); () for mirrormount's reaper
    # (kind, nsfs pin of another guest): setns onto it instead of unsharing that kind
    joins: tuple[tuple[str, str], ...] = ()

    def shell(self) -> list[str]:
        q = shlex.quote
        joined = {k for k, _ in self.joins}
        flags = " ".join(KIND[k].unshare_opt for k in self.kinds if k not in joined)
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
        for kind, pin in self.joins:
            steps.append(f"# {kind}: shared with another guest: setns onto its pin {pin} "
                         f"(nsenter --{KIND[kind].unshare_opt.lstrip('-')}={pin})")
        if self.hostname:
            steps.append(f"hostname {q(self.hostname)}")
        if "pid" in self.kinds:
            who = (f"the guest's init ({shlex.join(self.init)})" if self.init
                   else "the guest's PID 1 (mirrormount reaper)")
            steps.append("umount -l /proc            # the host's /proc, beneath: no way back to "
                         "the host's processes")
            steps.append(f"mount -t proc proc /proc   # by {who}")
            steps.extend(confinement_lines(self.confine, self.drop_caps,
                                           "the init" if self.init else "the reaper"))
            if self.init:
                steps.append(f"exec {shlex.join(self.init)}   # PID 1, once the pins are bound")
        # Trailing comments explain each step here but must not reach `sh -c`, where the
        # first '#' would swallow every later step.
        if self.cgroup_state:
            steps.insert(0, "# first, into the guest's cgroup, so that its cgroup namespace is "
                            "rooted there: echo 0 > CGROUP/cgroup.procs")
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


def confinement_lines(confine: str, drop_caps: tuple[str, ...], who: str) -> list[str]:
    """Comment lines saying what `who` will run under (no shell has a seccomp verb)."""
    out = []
    if confine == "mirror":
        out.append(f"# {who} and all it starts: seccomp refuses mount(2) with MS_PRIVATE, "
                   "MS_SLAVE or MS_UNBINDABLE (EPERM), mount_setattr (ENOSYS) and "
                   "open_by_handle_at (EPERM): the guest cannot cut itself off its mirror")
    if drop_caps:
        out.append(f"# {who}: capabilities dropped from the bounding set: "
                   f"{','.join(drop_caps)}  (like setpriv --bounding-set -{',-'.join(drop_caps)})")
    return out


@record(frozen=True, eq=False)
class WriteRecord(Op):
    """The guest's record, whole: everything it holds is known when planning, so it travels
    here and nothing fills it in later. ``previous`` is what to restore on rollback (None:
    there was no record, so rollback removes it)."""

    path: str = ""
    record: dict = field(default_factory=dict, hash=False, compare=False)
    previous: dict | None = field(default=None, hash=False, compare=False)

    def shell(self) -> list[str]:
        q = shlex.quote
        text = json.dumps(self.record, sort_keys=True)
        return [f"printf '%s\\n' {q(text)} > {q(self.path)}.tmp && "
                f"mv {q(self.path)}.tmp {q(self.path)}"]


# ----------------------------------------------------------------------------- teardown
# destroy's steps undo nothing: a detached mirror cannot be put back. Each is idempotent
# instead, so a destroy that failed or was killed midway is completed by the next one.
@record(frozen=True, eq=False)
class StopProcesses(Op):
    """TERM, a grace period, then KILL, for the processes inside a guest."""

    pids: tuple[int, ...] = ()
    grace: float = 0.0          # seconds between TERM and KILL; 0: KILL at once

    def shell(self) -> list[str]:
        pids = " ".join(map(str, self.pids))
        if self.grace > 0:
            return [f"kill -TERM {pids}; sleep {self.grace:g}; kill -KILL {pids}"]
        return [f"kill -KILL {pids}"]


@record(frozen=True, eq=False)
class MakeCgroup(Op):
    """The guest's own cgroup (guest/cgroup.py: where, and why there). Nothing when the
    cgroup v2 hierarchy is missing or read-only (doctor says so)."""

    name: str = ""
    state: str = ""

    def shell(self) -> list[str]:
        return [f"mkdir -p /sys/fs/cgroup/mirrormount/{shlex.quote(self.name)}.STATE_DEV"
                "    # STATE_DEV: MAJ-MIN of STATE's tmpfs; cgroup2 may be at .../unified"]


@record(frozen=True, eq=False)
class RemoveCgroup(Op):
    """Remove the guest's cgroup once its processes are gone (rmdir; destroy, rollback)."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"rmdir {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class ReleaseNsFile(Op):
    """Detach an nsfs bind and remove its file: the namespace lives on only if something
    else holds it."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"umount -l {shlex.quote(self.path)}; rm -f {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class Detach(Op):
    """Private first, then detach: a detach of a shared tree would propagate the unmount
    into every peer (kernel-findings §3), i.e. into the guest."""

    path: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote(self.path)
        return [f"mount --make-rprivate {q}", f"umount -l {q}"]


@record(frozen=True, eq=False)
class Unmount(Op):
    """Unmount BASE or STATE, only while it is still mirrormount's tmpfs (``label``)."""

    path: str = ""
    label: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote
        return [f"findmnt -n -o SOURCE {q(self.path)} | grep -qx {q(self.label)} && "
                f"umount -l {q(self.path)}"]


@record(frozen=True, eq=False)
class RemoveDir(Op):
    """rmdir, never rm -r: a directory that still holds files (or a mount) stays."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"rmdir {shlex.quote(self.path)}"]


@record(frozen=True, eq=False)
class RemoveFile(Op):
    """Remove a file mirrormount wrote (a record, a claim)."""

    path: str = ""

    def shell(self) -> list[str]:
        return [f"rm -f {shlex.quote(self.path)}"]



def render(ops: list[Op]) -> str:
    """The dry-run text: each operation's shell lines, the reason as a trailing comment."""
    out = []
    for number, op in enumerate(ops, start=1):
        out.append(f"# step {number}: {op.why}")
        out.extend(op.shell())
    return "\n".join(out) + "\n"


def op_json(op: Op) -> dict:
    """One operation for `--dry-run --json`: {"op": its class name, then every field by
    name ("why" first), then "shell": the lines --dry-run prints for it}. Values as JSON
    has them: tuples become lists, a nested record (MountOptions) an object."""
    out: dict = {"op": type(op).__name__}
    out.update({f.name: _jsonable(getattr(op, f.name)) for f in fields(op)})
    out["shell"] = op.shell()
    return out


def _jsonable(value: object) -> object:
    if is_record(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def ops_json(ops: list[Op]) -> list[dict]:
    """The plan as JSON: one object per step, in order (``op_json``)."""
    return [op_json(op) for op in ops]

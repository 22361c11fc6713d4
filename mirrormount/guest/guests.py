"""Guests: create, destroy, list, status, exec (mount and umount: guest/mounting.py).

This is the library's public face; the CLI only parses arguments and renders what these
functions return. Mount-table changes in the host namespace happen here (through apply.py);
anything inside a guest happens in a forked child (nsexec.py / nursery.py).

Privilege: root for everything except reading records.
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time

from ..record import replace
from ..errors import BusyError, OperationError, UsageError
from ..kernel import mountinfo
from ..kernel.mountinfo import MountTable
from ..kernel.mountquery import cheap as mounts_cheap
from ..kernel.mountns import ns_of_path, table_around, unique_mounts
from ..kernel.mountquery import mounts_at, table_beside
from ..kernel.procfs import (ns_id, ns_inode, parse_nspid, parse_status, pids_by_mnt_ns,
                             read_text)
from .health import RECREATE, assess
from .mounting import MountVerbs, require_root
from .reports import GuestInfo, RepairReport, StatusReport
from .model import CreateRequest, Layout, validate_hostname, validate_name
from .nsexec import in_namespaces, read_own_mountinfo
from .state import GuestRecord, StateLock, guest_names, load

# The planner, the executor and what they drive (nursery, guest-only mounts) are imported by
# the methods that plan or change something: every CLI call imports this module, and the
# read-only ones (list, status, exec, busy, --help) should not pay for the rest at start-up.
if TYPE_CHECKING:
    from .apply import Outcome
    from .nsexec import Finished
    from .ops import Op
    from .plan import HostFacts, Teardown
    from .recipe import RecipeMount
    from .repair import RepairPlan

# Directories tried, in order, for pivot_root's put_old (see nursery._guest_child).
PUT_OLD_CANDIDATES = ("mnt", "tmp", "media", "srv", "opt", "home", "root", "var", "etc", "usr")


def choose_put_old(rootfs: str) -> str:
    for cand in PUT_OLD_CANDIDATES:
        p = os.path.join(rootfs, cand)
        if os.path.isdir(p) and not os.path.islink(p):
            return cand
    try:
        with os.scandir(rootfs) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    return e.name
    except OSError:
        pass
    raise UsageError(f"rootfs {rootfs} has no directory: pivot_root needs one to use as put_old")


def host_table() -> MountTable:
    return MountTable.of(mountinfo.read())


class Guests(MountVerbs):
    """Every verb on guests, for one Layout (BASE and STATE). mount and umount come from
    MountVerbs (guest/mounting.py)."""

    def __init__(self, layout: Layout) -> None:
        # Real paths, once: a symlink in BASE or STATE (/var/run -> /run) would otherwise make
        # the mount table, which names real paths, look as if nothing were mounted there.
        self.layout = Layout(os.path.realpath(layout.base), os.path.realpath(layout.state))

    # ------------------------------------------------------------------ records and facts
    def record(self, name: str) -> GuestRecord:
        validate_name(name)
        rec = load(self.layout, name)
        if rec is None:
            if name in guest_names(self.layout):
                raise OperationError(f"guest {name} is broken: its record is missing; "
                                     f"hint: mirrormount destroy {name}")
            raise UsageError(self.no_such(name))
        return rec

    def no_such(self, name: str) -> str:
        """"no such guest in STATE ...", saying so when BASE has a mirror of that name:
        it is then another STATE's guest (a mistyped --state?), never this one's."""
        text = f"no such guest in STATE {self.layout.state}: {name}"
        if os.path.lexists(self.layout.mirror(name)):
            text += (f" ({self.layout.mirror(name)} exists, but no record here names it: "
                     "another --state?)")
        return text

    def check_layout(self) -> None:
        """BASE and STATE, before a create changes anything: directories (or to be made),
        writable, apart, and no mount there that mirrormount did not make. UsageError."""
        from .owner import layout_problems, path_problems
        lay = self.layout
        problems = [*path_problems(lay.base, "BASE"), *path_problems(lay.state, "STATE")]
        if not problems:    # the mount table only makes sense for directories
            problems = layout_problems(lay, mounts_at((lay.base, lay.state)))
        if problems:
            raise UsageError(problems[0])

    def ns_files(self, rec: GuestRecord) -> dict[str, str]:
        return {k: self.layout.ns_file(rec.name, k) for k in rec.kinds}

    def facts(self, req: CreateRequest, table: MountTable | None = None) -> HostFacts:
        """What the planner needs, in O(1) of the mount table (mountquery), except for
        mirror+host, which must look at every host mount under the rootfs."""
        lay = self.layout
        if table is None:
            table = (host_table() if req.propagation == "mirror+host"
                     else mounts_at((lay.base, lay.state, lay.nursery_file)))
        from .plan import HostFacts
        nursery = table.at(lay.nursery_file)
        # A guest exists when this STATE holds its record. A half-made one (a create killed
        # midway) is not in the way: create cleans it up first. A mirror directory that no
        # record or claim here names belongs to someone else: never reused, never touched.
        from .owner import claimed_mirror
        exists = os.path.lexists(lay.record(req.name))
        if not exists and os.path.lexists(lay.mirror(req.name)) and \
                claimed_mirror(lay, req.name) is None:
            raise UsageError(f"{lay.mirror(req.name)} exists, but no record in STATE "
                             f"{lay.state} names it (another --state's guest?): choose "
                             "another name")
        return HostFacts(table=table, existing=frozenset({req.name} if exists else ()),
                         nursery_ready=nursery is not None and nursery.fstype == "nsfs",
                         put_old=choose_put_old(req.rootfs),
                         rootfs_sys=os.path.isdir(os.path.join(req.rootfs, "sys"))
                         and not os.path.islink(os.path.join(req.rootfs, "sys")))

    # ------------------------------------------------------------------ create
    def validate_create(self, req: CreateRequest) -> CreateRequest:
        validate_name(req.name)
        try:
            self.check_layout()
        except PermissionError:
            require_root("create")   # BASE or STATE not ours to look at: said as such
            raise
        if not os.path.isdir(req.rootfs):
            raise UsageError(f"rootfs {req.rootfs} is not a directory")
        validate_hostname(req.hostname)
        from ..kernel.confine import propagation_refused, unavailable
        if propagation_refused():
            raise OperationError("this process runs under a seccomp filter that refuses "
                                 "propagation changes (in a guest made with --confine "
                                 "mirror?): mirrormount cannot set up its mounts here; "
                                 "nothing was changed; hint: make the outer guest with "
                                 "--confine none")
        from .joins import check_create
        check_create(self.layout, req, self.no_such)
        if req.confine == "mirror":
            why = unavailable()
            if why:
                raise OperationError(f"--confine mirror: {why}; nothing was changed "
                                     "(--confine none creates an unconfined guest)")
        return replace(req, rootfs=os.path.realpath(req.rootfs))

    def plan(self, req: CreateRequest) -> list[Op]:
        from .plan import plan_create
        try:
            facts = self.facts(req)
        except PermissionError:
            # STATE is 0700: without root the first look into it is refused. Said as every
            # verb says it, not as the statx that met it.
            require_root("create")
            raise
        return plan_create(req, self.layout, facts, created=time.time())

    def dry_run(self, reqs: list[CreateRequest]) -> str:
        from .ops import render
        return "".join(render(self.plan(req)) for req in reqs)

    def half_made(self, name: str) -> bool:
        """Traces of a guest but no record: a create that was killed midway (the record is
        written last). The next create of that name cleans it up and starts again."""
        return load(self.layout, name) is None and name in guest_names(self.layout)

    def create(self, req: CreateRequest) -> tuple[GuestInfo, Outcome]:
        require_root("create")
        from .apply import Executor
        from .ops import WriteRecord
        from .plan import plan_destroy
        from .joinscan import index_after, index_begin
        with StateLock(self.layout.state, create=True) as lock:
            if self.half_made(req.name):
                # Not the last-guest teardown: BASE and STATE stay for the create itself.
                leftovers = replace(self.teardown(req.name, 0.0), last=False)
                Executor(lock=lock).run(plan_destroy(leftovers, self.layout))
            ops = self.plan(req)
            # The reverse join index (joinscan.py): whether it is true before the change,
            # so that after it only the change is applied to it, and it is stamped again.
            joins_true = index_begin(self.layout)
            outcome = Executor(lock=lock).run(ops)
            index_after(self.layout, joins_true, added=(req.name, dict(req.joins)))
        rec = GuestRecord.from_json(next(op.record for op in reversed(ops)
                                           if isinstance(op, WriteRecord)))
        # Described from what we just made, not from a scan of the (large) host table.
        namespaces = {k: ns_id(p) or "?" for k, p in self.ns_files(rec).items()}
        pids = [outcome.reaper_pid] if outcome.reaper_pid else []
        return GuestInfo(rec.name, rec.mirror, rec.rootfs,
                         "running" if rec.init else "stopped", namespaces, pids,
                         rec.propagation, rec.hostname, confine=rec.confine,
                         drop_caps=list(rec.drop_caps), init=list(rec.init),
                         joins=dict(rec.joins)), outcome

    # ------------------------------------------------------------------ list / status
    def info(self, name: str, table: MountTable | None = None,
             by_ns: dict[int, list[int]] | None = None,
             joins: dict[str, list[tuple[str, str]]] | None = None) -> GuestInfo:
        rec = load(self.layout, name)
        if rec is None:
            return GuestInfo(name, self.layout.mirror(name), "?", "broken", {}, [],
                             problems=["record missing"])
        namespaces, problems = self._held(rec, table)
        pids: list[int] = []
        mnt = namespaces.get("mnt")
        if mnt:
            if by_ns is None:
                by_ns = pids_by_mnt_ns()
            ino = int(mnt.split("[")[1].rstrip("]"))
            pids = sorted(by_ns.get(ino, []))
        reapers = [p for p in pids if is_our_reaper(p)]
        # An init-based guest without its init is stopped (its pid namespace ended with
        # it; `start` makes a fresh one). An init-less one keeps its reaper while it lives.
        if "pid" in rec.kinds and "pid" in namespaces and mnt and not reapers \
                and not rec.init:
            problems.append("the pid namespace's init (mirrormount reaper) is gone; "
                            f"hint: mirrormount start {rec.name}")
        if rec.pending:
            problems.append(f"a guest-only mount on {rec.pending.get('path')} was "
                            "interrupted: run the same `mount --guest-only` again")
        others = [p for p in pids if p not in reapers]
        state = "broken" if problems else ("running" if others else "stopped")
        # One guest (status): the reverse join index create and destroy keep, else a raw
        # look at each record (guest/joinscan.py); list passes the index it built once.
        from .joinscan import joiners_of
        by: dict[str, list[str]] = {}
        for other, kind in (joins.get(rec.name, []) if joins is not None
                            else joiners_of(self.layout, rec.name)):
            by.setdefault(other, []).append(kind)
        return GuestInfo(rec.name, rec.mirror, rec.rootfs, state, namespaces, pids,
                         rec.propagation, rec.hostname, list(rec.guest_only), problems,
                         rec.confine, list(rec.drop_caps), list(rec.init), dict(rec.joins),
                         by)

    def _held(self, rec: GuestRecord, table: MountTable | None = None
              ) -> tuple[dict[str, str], list[str]]:
        """The namespaces still held by nsfs binds ({kind: "mnt:[ino]"}) and what is broken."""
        if table is None:
            # Only this guest's mirror and nsfs files matter: O(1) lookups, not the table.
            table = mounts_at([rec.mirror, *self.ns_files(rec).values()])
        namespaces: dict[str, str] = {}
        problems: list[str] = []
        for kind, path in self.ns_files(rec).items():
            held = table.at(path)
            if held is None or held.fstype != "nsfs":
                problems.append(f"{kind} namespace is not held ({path})")
                continue
            namespaces[kind] = ns_id(path) or "?"
        if table.at(rec.mirror) is None:
            problems.append(f"mirror {rec.mirror} is not mounted")
        return namespaces, problems

    def list_all(self) -> list[GuestInfo]:
        require_root("list")  # STATE is 0700: anyone else would just see no guests
        names = guest_names(self.layout)
        # Per-guest statmount lookups beat parsing tens of thousands of mountinfo lines.
        # Without statmount, one scan of the table that parses only the lines at the paths
        # info() asks about (a mirror and its nsfs files per guest): parsing every line made
        # `list` take ~0.75 s at 1,000 guests (bench/results/scale.md).
        table = None if mounts_cheap() else mounts_at(
            p for n in names if (rec := load(self.layout, n)) is not None
            for p in (rec.mirror, *self.ns_files(rec).values()))
        by_ns = pids_by_mnt_ns()
        from .state import joins_index
        joins = joins_index(self.layout)     # every record read once, not once per guest
        return [self.info(n, table, by_ns, joins) for n in names]

    def guest_table(self, rec: GuestRecord) -> MountTable | None:
        holder = self.layout.ns_file(rec.name, "mnt")
        if not os.path.exists(holder):
            return None
        try:
            # listmount + statmount by the namespace's id (6.11+): no fork, no setns.
            ns = ns_of_path(holder)
            if ns.ns_id:
                return MountTable.of(unique_mounts(ns.ns_id).values())
        except NotImplementedError:
            pass
        except OSError:
            return None
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
        try:
            text = in_namespaces({"mnt": holder}, read_own_mountinfo, proc_fd)
        except OSError:
            return None
        finally:
            os.close(proc_fd)
        return MountTable.parse(text)

    def status(self, name: str) -> StatusReport:
        require_root("status")
        rec = self.record(name)
        # What assess() and info() look at: this mirror's subtree, the host outside BASE
        # (peer groups a mirror mount must not share) and the nsfs files. Other guests'
        # mirrors, nearly all of a big host's table, are never parsed: at 1,000 guests
        # parsing all 52k lines made `status` take 0.8-1.0 s (bench/results/scale.md).
        # With listmount (6.8+), not even that: only the ids of other guests' mounts are
        # listed, and only this mirror, the host outside BASE and STATE, and the nsfs files
        # are described (kernel/mountns.py table_around). STATE is private and unbindable
        # (layout_problems), so its nsfs binds share no peer group a mirror could join.
        keep = tuple(self.ns_files(rec).values())
        try:
            table = table_around(rec.mirror, (self.layout.base, self.layout.state), keep)
        except NotImplementedError:
            table = table_beside(self.layout.base, [rec.mirror, *keep])
        info = self.info(name, table)
        guest = self.guest_table(rec) if "mnt" in info.namespaces else None
        pending = (str(rec.pending.get("path")),) if rec.pending else ()
        health = assess(rec.mirror, rec.propagation, table, guest, self.layout.base,
                        rec.guest_only + pending)
        return StatusReport(name, rec.mirror, health, info)

    # ------------------------------------------------------------------ repair
    def plan_repair(self, name: str) -> RepairPlan:
        """repair's plan (guest/repair.py) from the host's table and the guest's. Raises
        OperationError when it needs MOVE_MOUNT_SET_GROUP and the kernel has none."""
        from .rejoin import set_group_available
        from .repair import RepairFacts, plan_repair
        from .mountops import JoinGroup
        rec = self.record(name)
        holder = self.layout.ns_file(name, "mnt")
        guest = self.guest_table(rec) if os.path.exists(holder) else None
        skip = (*rec.guest_only, *((str(rec.pending.get("path")),) if rec.pending else ()))
        plan = plan_repair(RepairFacts(rec.mirror, holder, rec.propagation, host_table(),
                                       guest, self.layout.base, skip))
        if any(isinstance(op, JoinGroup) for op in plan.ops) and not set_group_available():
            raise OperationError(f"repair {name}: mounts must rejoin their peer groups, which "
                                 "needs move_mount(MOVE_MOUNT_SET_GROUP), Linux 5.15+; this "
                                 f"kernel has none; nothing was changed; hint: {RECREATE}")
        return plan

    def repair(self, name: str, dry_run: bool = False) -> RepairReport:
        """Re-join a broken mirror (guest/repair.py says how), then judge it as status does."""
        require_root("repair")
        from .apply import Executor
        self.record(name)       # no such guest: said before STATE is opened
        with StateLock(self.layout.state) as lock:
            plan = self.plan_repair(name)
            if not dry_run:
                Executor(lock=lock).run(plan.ops)
        return RepairReport(name, [op.why for op in plan.ops], plan.cannot, plan.left,
                            None if dry_run else self.status(name), dry_run)

    # ------------------------------------------------------------------ exec
    def exec(self, name: str, argv: list[str]) -> int:
        """argv in the guest as `mirrormount exec NAME -- argv` runs it; its shell status."""
        return self.exec_command(name, argv).code

    def exec_command(self, name: str, argv: list[str] | None, *, user: str | None = None,
                     wd: str = "/", env: Sequence[tuple[str, str]] = (),
                     keep_env: bool = False) -> Finished:
        """Run argv (None: a shell, as `enter`) in all of the guest's namespaces and its
        cgroup; guest/execenv.py says what environment it gets. Raises OperationError (exit
        1) naming what is gone when the guest is broken: a namespace no longer held by its
        nsfs file, or (found by the child) a pid namespace whose init has exited."""
        from .execenv import caller_environ
        from .nsexec import ExecSpec, run_command
        require_root("exec" if argv is not None else "enter")
        rec = self.record(name)
        namespaces, problems = self._held(rec)   # no /proc scan: exec needs no pid list
        broken = (f"guest {name} is broken: {'; '.join(problems)}; nothing was run; hint: "
                  f"mirrormount destroy --force {name}, then create it again")
        if "mnt" not in namespaces:
            raise OperationError(broken)
        from .joins import init_alive
        if rec.init and "pid" in rec.kinds and not init_alive(self.layout, rec):
            # Its pid namespace ended with its init: nothing can be forked into it, and a
            # process left in the host's pid namespace could mount the host's /proc.
            # Issue 14: a pid namespace whose PID 1 is gone is a holder gone: exit 1, naming
            # it and the fix (here: start, which gives the init a fresh pid namespace).
            raise OperationError(f"guest {name} is stopped: its init is gone, and its pid "
                                 "namespace with it, so nothing can run in it; nothing was "
                                 f"run; hint: mirrormount start {name}")
        if any(k not in namespaces for k in rec.kinds):
            raise OperationError(broken)
        from ..kernel import confine
        from .model import cap_numbers
        if rec.confine == "mirror" and (why := confine.unavailable()):
            raise OperationError(f"guest {name} is confined, but {why}; nothing was run")
        spec = ExecSpec(name, (tuple(argv),) if argv else (), caller_environ(), tuple(env),
                        keep_env, user, wd, set_shell=argv is None,
                        cgroup_procs=self.cgroup_procs(rec))
        # Built here, in the host's view; the child enforces it just before its exec.
        prepared = confine.prepare(rec.confine == "mirror", cap_numbers(rec.drop_caps))
        with confine.armed(prepared):
            return run_command(self.ns_files(rec), spec)

    def cgroup_procs(self, rec: GuestRecord) -> str | None:
        """The cgroup.procs of the guest's own cgroup, when it has one (guest/cgroup.py)."""
        if "cgroup" not in rec.kinds:
            return None
        from . import cgroup
        own = cgroup.guest_dir(self.layout.state, rec.name)
        return f"{own}/cgroup.procs" if own is not None and os.path.isdir(own) else None

    def add_mounts(self, name: str, mounts: Sequence[RecipeMount]) -> None:
        """A recipe's mounts, in order, each as `mirrormount mount` would make it."""
        for m in mounts:
            self.mount(name, m.source, m.target, m.fstype, m.options, m.bind, m.guest_only,
                       m.mkdir)

    def _pids_in(self, name: str) -> list[int]:
        """Processes in the guest's mount namespace (none if it is not held any more)."""
        holder = self.layout.ns_file(name, "mnt")
        held = mounts_at([holder]).at(holder)
        if held is None or held.fstype != "nsfs":
            return []
        ino = ns_inode(holder)
        return sorted(pids_by_mnt_ns().get(ino, [])) if ino else []

    # ------------------------------------------------------------------ destroy
    def teardown(self, name: str, grace: float) -> Teardown:
        """What destroy must undo, read from the system itself, not from the record: a
        create killed before writing its record leaves a reaper nobody recorded."""
        from .plan import Teardown
        pids = self._pids_in(name)
        reapers = tuple(p for p in pids if is_our_reaper(p))
        inside = tuple(p for p in pids if p not in reapers)
        ns_dir = self.layout.ns_dir(name)
        try:
            with os.scandir(ns_dir) as it:
                held = tuple(sorted(e.path for e in it))
        except (FileNotFoundError, NotADirectoryError):
            held = ()
        from .owner import claimed_mirror
        mirror = claimed_mirror(self.layout, name)   # None: nothing in BASE is provably its
        mounted = mirror is not None and mounts_at([mirror]).at(mirror) is not None
        others = [n for n in guest_names(self.layout) if n != name]
        from . import cgroup
        own = cgroup.guest_dir(self.layout.state, name)
        return Teardown(name, inside, reapers, held, mirror, mounted,
                        mirror is not None and os.path.isdir(mirror)
                        and not os.path.islink(mirror),
                        os.path.lexists(self.layout.record(name)),
                        os.path.lexists(self.layout.claim(name)), grace, last=not others,
                        cgroup=own if own is not None and os.path.isdir(own) else None)

    def require_existing(self, names: Sequence[str]) -> None:
        """A batch's (valid) names checked before anything else is said of any of them:
        UsageError (exit 2) for the first that is no guest."""
        have = set(guest_names(self.layout))
        for n in names:
            if n not in have:
                raise UsageError(self.no_such(n))

    def destroy_order(self, names: Sequence[str]) -> list[str]:
        """`names` in an order a batch destroy can follow: a guest that joined another's
        namespaces (create --join) before that guest, when both are in the batch; otherwise
        as given. (A join points to a guest that existed first, so there is no cycle.)"""
        from .joinscan import joiners_of
        batch = set(names)
        waits = {n: {g for g, _ in joiners_of(self.layout, n) if g in batch and g != n}
                 for n in names}
        order: list[str] = []
        while len(order) < len(names):
            placed = set(order)
            ready = next((n for n in names if n not in placed and waits[n] <= placed), None)
            if ready is None:           # pragma: no cover - a cycle: keep the given order
                return order + [n for n in names if n not in placed]
            order.append(ready)
        return order

    def plan_destroy(self, name: str, force: bool = False, grace: float = 5.0,
                     locked: bool = False, going: Sequence[str] = ()) -> list[Op]:
        """The plan of `destroy`. locked: the caller holds the StateLock (destroy itself);
        without it (the CLI checking a whole batch first) a busy verdict is checked again
        under the lock. going: guests destroyed before this one in the same batch (a
        guest that joined this one's namespaces may be among them)."""
        from .plan import plan_destroy
        validate_name(name)
        if name not in guest_names(self.layout):
            raise UsageError(self.no_such(name))
        from .joinscan import joiners_of
        joiners = [(g, k) for g, k in joiners_of(self.layout, name) if g not in going]
        if joiners:
            shown = ", ".join(f"{g} ({k})" for g, k in joiners)
            raise BusyError(f"guest {name} shares namespaces with guests that joined them: "
                            f"{shown}; destroy those first")
        t = self.teardown(name, grace)
        if t.inside and not force:
            if not locked:
                # Race fix: a create of this name may be under way beside us, holding the
                # lock. Its forked child sits in the guest's mount namespace until the
                # namespaces are bound, and was counted as a process inside (exit 3, "use
                # --force"). Once no change is under way, only real processes are left.
                with StateLock(self.layout.state, shared=True):
                    return self.plan_destroy(name, force, grace, locked=True, going=going)
            raise BusyError(f"guest {name} still has {len(t.inside)} process(es) inside "
                            f"(pids {' '.join(map(str, t.inside[:10]))}); "
                            "use --force to stop them")
        return plan_destroy(t, self.layout)

    def destroy(self, name: str, force: bool = False, grace: float = 5.0) -> list[int]:
        """Tear a guest down; returns the pids that were signalled. Never removes a file
        through a mount: mirrors are detached first, then only empty directories go."""
        require_root("destroy")
        from .apply import Executor
        from .ops import StopProcesses
        validate_name(name)
        if name not in guest_names(self.layout):   # said before STATE is opened
            raise UsageError(self.no_such(name))
        from .joinscan import index_after, index_begin
        with StateLock(self.layout.state) as lock:
            ops = self.plan_destroy(name, force, grace, locked=True)
            joins_true, rec = index_begin(self.layout), load(self.layout, name)
            Executor(lock=lock).run(ops)
            index_after(self.layout, joins_true,
                        removed=(name, dict(rec.joins) if rec is not None else None))
        return [p for op in ops if isinstance(op, StopProcesses) for p in op.pids]


def is_our_reaper(pid: int) -> bool:
    """mirrormount's own PID 1 of a guest pid namespace (nursery._reaper): named mm-reaper
    and pid 1 in its innermost namespace. Killing it is part of destroying the guest."""
    status = read_text(f"/proc/{pid}/status") or ""
    fields = parse_status(status)
    return fields.get("Name") == "mm-reaper" and parse_nspid(status)[-1:] == (1,)

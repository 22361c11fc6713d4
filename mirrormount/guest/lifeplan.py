"""Pure planning of `start` and `stop`: the thread's two lifecycles as operations.

Herbert's two shutdown styles (the 2007 thread, ../shared/seed/):
- an init-less, lightweight guest: its shutdown scripts run, then TERM and KILL go to its
  processes; its namespaces stay (a pid namespace keeps mirrormount's reaper as PID 1);
- an init-based guest: a signal goes to its init, which shuts the guest down; whatever is
  left when the timeout runs out is killed. The pid namespace ends with its init; `start`
  gives the guest a fresh one, with its /proc, keeping every other namespace and the mirror.

The operations are carried out by the one executor (apply.py), which hands them to
lifecycle.py. Nothing here touches the system.
"""
from __future__ import annotations

import shlex

from ..record import field, record
from ..errors import UsageError
from .model import Layout, parse_signal, signal_name
from .ops import Op, confinement_lines
from .state import GuestRecord

DEFAULT_TIMEOUT = 10.0


# ----------------------------------------------------------------------------- operations
@record(frozen=True, eq=False)
class StartInit(Op):
    """A fresh pid namespace for the guest: a child enters every other namespace of the
    guest (its pins), unshares CLONE_NEWPID and forks PID 1, which puts its own /proc in
    place of the old one and execs the guest's init (or, init-less, stays as the reaper).
    The pid pin under STATE is bound again onto the new namespace; PID 1 goes on only once
    that is done (a byte on a pipe), else it exits: a kill midway leaves the guest stopped."""

    name: str = ""
    pins: tuple[tuple[str, str], ...] = ()     # (kind, nsfs pin): every kind but pid
    pid_pin: str = ""
    init: tuple[str, ...] = ()
    confine: str = "none"
    drop_caps: tuple[str, ...] = ()
    # The guest's own cgroup (guest/cgroup.py), "" for none: PID 1 is placed in it before it
    # enters the guest's cgroup namespace, as create's spawn and every exec are, so the init
    # and all it starts are in the guest's cgroup (shown as / inside), not the caller's.
    cgroup: str = ""

    def shell(self) -> list[str]:
        q = shlex.quote
        enter = " ".join(f"--{k if k != 'mnt' else 'mount'}={q(p)}" for k, p in self.pins)
        what = shlex.join(self.init) if self.init else "# mirrormount's reaper (no shell form)"
        inner = f"umount -l /proc; mount -t proc proc /proc; exec {what}"
        return [*confinement_lines(self.confine, self.drop_caps, "PID 1"),
                f"nsenter {enter} unshare --pid --fork sh -c "
                f"{q(inner)} &",
                f"umount -l {q(self.pid_pin)}; mount --bind /proc/$!/ns/pid_for_children "
                f"{q(self.pid_pin)}"]


@record(frozen=True, eq=False)
class RunInGuest(Op):
    """A recipe's start or shutdown command: `/bin/sh -c CMD` in every namespace of the
    guest, stdin on /dev/null, its output passed on; waited for. ``must``: a failure stops
    the plan (start); otherwise it is a warning and the shutdown goes on (stop)."""

    name: str = ""
    pins: tuple[tuple[str, str], ...] = ()
    command: str = ""
    must: bool = True
    confine: str = "none"
    drop_caps: tuple[str, ...] = ()
    cgroup: str = ""        # as StartInit's: the command runs in the guest's own cgroup

    def shell(self) -> list[str]:
        q = shlex.quote
        enter = " ".join(f"--{k if k != 'mnt' else 'mount'}={q(p)}" for k, p in self.pins)
        fork = " --fork" if any(k == "pid" for k, _ in self.pins) else ""
        return [f"nsenter {enter}{fork} /bin/sh -c {q(self.command)} </dev/null"]


@record(frozen=True, eq=False)
class SignalInit(Op):
    """Init-based stop: the stop signal to the guest's init (a signal from an ancestor pid
    namespace reaches it only if it has a handler, pid_namespaces(7)), then a wait until
    every process of the guest is gone; at the timeout, KILL, and a warning."""

    name: str = ""
    mnt_pin: str = ""
    init_pid: int = 0
    signal: int = 15
    timeout: float = DEFAULT_TIMEOUT

    def shell(self) -> list[str]:
        return [f"kill -s {signal_name(self.signal).removeprefix('SIG')} {self.init_pid}; "
                f"wait up to {self.timeout:g}s for the guest's processes; "
                f"kill -KILL {self.init_pid} and what is left"]


@record(frozen=True, eq=False)
class StopAll(Op):
    """Init-less stop: TERM to every process in the guest's mount namespace but its reaper
    (found when the step runs, after the shutdown commands), a wait, then KILL what is left
    (and a warning)."""

    name: str = ""
    mnt_pin: str = ""
    timeout: float = DEFAULT_TIMEOUT

    def shell(self) -> list[str]:
        return [f"pids=$(processes in the mount namespace {shlex.quote(self.mnt_pin)}, "
                "mirrormount's reaper aside)",
                f"kill -TERM $pids; wait up to {self.timeout:g}s; kill -KILL $pids"]


# ----------------------------------------------------------------------------- facts
@record(frozen=True)
class LifeFacts:
    """What start and stop need to know, gathered by lifecycle.py from /proc and STATE."""

    rec: GuestRecord
    held: frozenset[str] = frozenset()      # kinds whose pin is an nsfs bind now
    pid1: int = 0                 # the guest's live PID 1 (host pid): its init or the reaper
    pid1_is_reaper: bool = False
    inside: tuple[int, ...] = ()  # processes in the guest, PID 1 and the reaper aside
    extra: dict[str, str] = field(default_factory=dict)
    cgroup: str = ""              # the guest's own cgroup directory, "" for none


def pins(rec: GuestRecord, layout: Layout, with_pid: bool) -> tuple[tuple[str, str], ...]:
    return tuple((k, layout.ns_file(rec.name, k)) for k in rec.kinds
                 if with_pid or k != "pid")


def _check_held(f: LifeFacts, verb: str) -> None:
    missing = [k for k in f.rec.kinds if k not in f.held]
    if missing:
        raise UsageError(f"{verb} {f.rec.name}: the guest is broken (namespace(s) "
                         f"{','.join(missing)} not held); hint: mirrormount status "
                         f"{f.rec.name}, or destroy and create it again")


def plan_start(f: LifeFacts, layout: Layout) -> list[Op]:
    """start: an init-based guest gets its init again in a fresh pid namespace (nothing to
    do while it runs); an init-less one runs its start commands, after a fresh reaper if
    its pid namespace lost it."""
    rec = f.rec
    _check_held(f, "start")
    ops: list[Op] = []
    needs_pid1 = "pid" in rec.kinds and not f.pid1
    if rec.init:
        if f.pid1 and not f.pid1_is_reaper:
            return []          # running already: `start` again changes nothing
        if f.inside:
            raise UsageError(f"start {rec.name}: {len(f.inside)} process(es) of its last "
                             "run are still inside and its init is gone; hint: mirrormount "
                             f"stop {rec.name} first")
    if needs_pid1:
        ops.append(StartInit(
            ("the guest's init in a fresh pid namespace, with its own /proc; the mount "
             "namespace, the mirror and the other namespaces are kept") if rec.init else
            ("a fresh pid namespace for the guest, its reaper as PID 1 with its own /proc "
             "(the last one had ended)"),
            rec.name, pins(rec, layout, False), layout.ns_file(rec.name, "pid"), rec.init,
            rec.confine, rec.drop_caps, f.cgroup))
    if not rec.init:
        for cmd in rec.start:
            ops.append(RunInGuest("the recipe's start command, inside the guest",
                                  rec.name, pins(rec, layout, True), cmd, True,
                                  rec.confine, rec.drop_caps, f.cgroup))
    return ops


def plan_stop(f: LifeFacts, layout: Layout, timeout: float | None = None,
              sig: str | None = None) -> list[Op]:
    """stop: the init-based protocol (signal to init, wait, KILL) or the init-less one
    (shutdown commands, TERM, wait, KILL). A guest with nothing running plans nothing."""
    rec = f.rec
    if timeout is not None and timeout < 0:
        raise UsageError("--timeout must be 0 or more seconds")
    wait = DEFAULT_TIMEOUT if timeout is None else timeout
    number = parse_signal(sig if sig is not None else rec.stop_signal) or 15
    mnt_pin = layout.ns_file(rec.name, "mnt")
    if rec.init:
        ops: list[Op] = []
        if f.pid1 and not f.pid1_is_reaper:
            ops.append(SignalInit(f"the stop signal ({signal_name(number)}) to the guest's "
                                  "init, which shuts the guest down; KILL at the timeout",
                                  rec.name, mnt_pin, f.pid1, number, wait))
        if f.inside or ops:
            ops.append(StopAll("whatever is left in the guest's mount namespace (outside "
                               "its pid namespace): TERM, wait, KILL", rec.name, mnt_pin,
                               wait))
        return ops
    if not f.inside and not rec.shutdown:
        return []
    _check_held(f, "stop")
    ops = [RunInGuest("the recipe's shutdown command, inside the guest; a failure is a "
                      "warning, the shutdown goes on", rec.name, pins(rec, layout, True),
                      cmd, False, rec.confine, rec.drop_caps, f.cgroup)
           for cmd in rec.shutdown] if f.inside else []
    ops.append(StopAll("every process in the guest but its reaper: TERM, wait, then KILL "
                       "what is left", rec.name, mnt_pin, wait))
    return ops

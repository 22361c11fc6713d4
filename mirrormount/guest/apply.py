"""Carry out a plan, step by step; on failure undo the completed steps in reverse order.

Each operation type from plan.py has one do-function here and, where it changes something,
an undo. The undo of a mount is always "make it private, then detach": the detach must not
propagate into any peer (kernel-findings §3).

Privilege: root.
"""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from . import faults
from ..kernel import syscalls as sc
from .nursery import kill_and_wait, release_ns_file, spawn_guest, start_nursery
from .plan import (MakeDir, MountTmpfs, Op, RBind, SetPropagation, SpawnGuest, StartNursery,
                   WriteRecord)
from .state import StateLock, write_atomic

PROPAGATION = {"private": sc.MS_PRIVATE, "shared": sc.MS_SHARED, "slave": sc.MS_SLAVE,
               "unbindable": sc.MS_UNBINDABLE}


def detach(path: str) -> None:
    """Unmount a tree without letting the unmount propagate anywhere."""
    sc.mount(None, path, None, sc.MS_REC | sc.MS_PRIVATE)
    sc.umount2(path, sc.MNT_DETACH)


def remove_empty_dir(path: str) -> None:
    """rmdir, never rm -r: a directory that still holds files (or is a mount) stays."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY):
            raise


def _sub_point(step: int, point: int) -> None:
    faults.at(f"{step}.{point}")


@dataclass
class Outcome:
    reaper_pid: int | None = None
    attempts: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Executor:
    lock: StateLock | None = None
    outcome: Outcome = field(default_factory=Outcome)
    undo: list[Callable[[], None]] = field(default_factory=list)
    record_factory: Callable[[Outcome], dict] | None = None

    def run(self, ops: list[Op]) -> Outcome:
        """Do each step; on any failure (or Ctrl-C) undo the completed ones in reverse.
        Fault points (faults.py): "0" before the first step, "N" after step N (numbered
        from 1, as --dry-run numbers them), "N.M" inside step N."""
        try:
            faults.at("0")
            for number, op in enumerate(ops, start=1):
                t0 = time.perf_counter()
                self._do(op, partial(_sub_point, number))
                key = type(op).__name__
                self.outcome.seconds[key] = (self.outcome.seconds.get(key, 0.0)
                                             + time.perf_counter() - t0)
                faults.at(str(number))
        except BaseException:
            self.rollback()
            raise
        self.undo.clear()
        return self.outcome

    def rollback(self) -> None:
        done = 0
        while self.undo:
            step = self.undo.pop()
            try:
                step()
            except OSError:
                pass  # best effort; the remaining steps still run
            done += 1
            faults.at(f"undo{done}")

    def _do(self, op: Op, checkpoint: Callable[[int], None]) -> None:
        if isinstance(op, MakeDir):
            created = not os.path.isdir(op.path)
            os.makedirs(op.path, mode=0o700, exist_ok=True)
            if created:
                self.undo.append(partial(remove_empty_dir, op.path))
        elif isinstance(op, MountTmpfs):
            sc.mount(op.source, op.path, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, op.options)
            self.undo.append(partial(detach, op.path))
            if self.lock is not None:
                self.lock.refresh()
        elif isinstance(op, SetPropagation):
            flags = PROPAGATION[op.flag] | (sc.MS_REC if op.recursive else 0)
            sc.mount(None, op.path, None, flags)
            if op.undo_flag:
                self.undo.append(partial(sc.mount, None, op.path, None,
                                         PROPAGATION[op.undo_flag]))
        elif isinstance(op, RBind):
            sc.mount(op.source, op.target, None, sc.MS_BIND | sc.MS_REC)
            self.undo.append(partial(detach, op.target))
        elif isinstance(op, StartNursery):
            start_nursery(op, checkpoint)
            self.undo.append(partial(release_ns_file, op.holder))
        elif isinstance(op, SpawnGuest):
            spawned = spawn_guest(op, checkpoint)
            self.outcome.reaper_pid = spawned.reaper_pid
            self.outcome.attempts = spawned.attempts

            def undo_spawn(op: SpawnGuest = op, reaper: int | None = spawned.reaper_pid) -> None:
                if reaper:
                    kill_and_wait(reaper)
                for kind in op.kinds:
                    release_ns_file(f"{op.ns_dir}/{kind}")
            self.undo.append(undo_spawn)
        elif isinstance(op, WriteRecord):
            record = (self.record_factory(self.outcome) if self.record_factory is not None
                      else dict(op.record))
            write_atomic(op.path, record)
            self.undo.append(partial(os.unlink, op.path))
        else:  # pragma: no cover - a planner bug
            raise TypeError(f"no executor for {type(op).__name__}")

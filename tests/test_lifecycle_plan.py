"""The pure planners of start and stop (guest/lifeplan.py) on made-up facts: which protocol,
which steps, in which order, and what a guest in each state plans."""
from __future__ import annotations

import pytest

from mirrormount.errors import UsageError
from mirrormount.guest.lifeplan import (LifeFacts, RunInGuest, SignalInit, StartInit, StopAll,
                                        plan_start, plan_stop)
from mirrormount.guest.model import CreateRequest, Layout
from mirrormount.guest.ops import render
from mirrormount.guest.plan import HostFacts, plan_create
from mirrormount.guest.state import GuestRecord
from mirrormount.kernel.mountinfo import MountTable

LAY = Layout("/container", "/run/mirrormount")
ALL = frozenset({"uts", "pid", "mnt"})


def rec(**kw):
    base = dict(name="c1", mirror="/container/c1", rootfs="/", kinds=("uts", "pid", "mnt"))
    base.update(kw)
    return GuestRecord(**base)


def kinds(ops):
    return [type(op).__name__ for op in ops]


def test_init_based_start_of_a_stopped_guest_is_a_fresh_pid_namespace():
    ops = plan_start(LifeFacts(rec(init=("/sbin/init",)), ALL), LAY)
    assert kinds(ops) == ["StartInit"]
    op = ops[0]
    assert isinstance(op, StartInit)
    assert op.pid_pin == "/run/mirrormount/c1/ns/pid" and op.init == ("/sbin/init",)
    assert [k for k, _ in op.pins] == ["uts", "mnt"]      # every kind but pid, mnt last
    assert "unshare --pid" in render(ops)


def test_start_of_a_running_init_guest_plans_nothing():
    assert plan_start(LifeFacts(rec(init=("x",)), ALL, pid1=42), LAY) == []


def test_start_refuses_leftovers_of_an_init_guest():
    with pytest.raises(UsageError, match="stop c1 first"):
        plan_start(LifeFacts(rec(init=("x",)), ALL, inside=(7,)), LAY)


def test_init_less_start_runs_commands_and_replaces_a_lost_reaper():
    r = rec(start=("a", "b"))
    assert kinds(plan_start(LifeFacts(r, ALL, pid1=5, pid1_is_reaper=True), LAY)) == \
        ["RunInGuest", "RunInGuest"]
    ops = plan_start(LifeFacts(r, ALL), LAY)
    assert kinds(ops) == ["StartInit", "RunInGuest", "RunInGuest"]
    assert ops[0].init == ()                             # the reaper
    assert all(op.must for op in ops[1:] if isinstance(op, RunInGuest))


def test_start_of_a_broken_guest_is_refused():
    with pytest.raises(UsageError, match="broken"):
        plan_start(LifeFacts(rec(), frozenset({"pid"})), LAY)


def test_init_based_stop_signals_init_then_sweeps():
    ops = plan_stop(LifeFacts(rec(init=("x",), stop_signal="SIGRTMIN+3"), ALL, pid1=9),
                    LAY, timeout=3)
    assert kinds(ops) == ["SignalInit", "StopAll"]
    sig = ops[0]
    assert isinstance(sig, SignalInit) and sig.init_pid == 9 and sig.timeout == 3
    import signal
    assert sig.signal == int(signal.SIGRTMIN) + 3
    ops = plan_stop(LifeFacts(rec(init=("x",), stop_signal="USR1"), ALL, pid1=9), LAY,
                    sig="HUP")
    assert ops[0].signal == 1                            # --signal wins over the record


def test_init_less_stop_runs_shutdown_commands_then_term_and_kill():
    ops = plan_stop(LifeFacts(rec(shutdown=("s1", "s2")), ALL, pid1=3, pid1_is_reaper=True,
                              inside=(10, 11)), LAY)
    assert kinds(ops) == ["RunInGuest", "RunInGuest", "StopAll"]
    assert [op.command for op in ops[:2]] == ["s1", "s2"]
    assert not any(op.must for op in ops[:2])            # a failing script: warn, go on
    assert isinstance(ops[2], StopAll) and ops[2].mnt_pin.endswith("/c1/ns/mnt")


def test_stop_of_a_stopped_guest_plans_nothing():
    assert plan_stop(LifeFacts(rec(init=("x",)), ALL), LAY) == []
    assert plan_stop(LifeFacts(rec(), ALL, pid1=3, pid1_is_reaper=True), LAY) == []


def test_stop_bad_input():
    f = LifeFacts(rec(init=("x",)), ALL, pid1=9)
    with pytest.raises(UsageError):
        plan_stop(f, LAY, timeout=-1)
    with pytest.raises(UsageError):
        plan_stop(f, LAY, sig="KILL")


def test_create_plan_carries_init_and_joins():
    req = CreateRequest("c2", init=("/sbin/init", "-x"), joins=(("net", "c1"),))
    ops = plan_create(req, LAY, HostFacts(table=MountTable.parse("")), created=1.0)
    spawn = next(op for op in ops if type(op).__name__ == "SpawnGuest")
    assert spawn.init == ("/sbin/init", "-x")
    assert spawn.joins == (("net", "/run/mirrormount/c1/ns/net"),)
    assert spawn.kinds == ("net", "pid", "mnt")
    text = render(ops)
    assert "--net" not in text.split("unshare", 1)[1].split("sh -e")[0]   # joined, not new
    assert "exec /sbin/init -x" in text
    record = ops[-1].record
    assert record["init"] == ["/sbin/init", "-x"] and record["joins"] == {"net": "c1"}
    assert GuestRecord.from_json(record).init == ("/sbin/init", "-x")


def test_old_records_read_as_init_less_without_joins():
    r = GuestRecord.from_json({"name": "c1", "mirror": "/container/c1", "rootfs": "/",
                               "kinds": ["mnt"]})
    assert r.init == () and r.joins == {} and r.start == () and r.stop_signal is None

"""The executor (guest/apply.py) undoes completed steps in reverse order when a step fails, a
fault is injected (MIRRORMOUNT_FAULT, guest/faults.py) or Ctrl-C arrives.

Unprivileged: only MakeDir steps, in tmp_path (conftest.py refuses every mount). Nested
directories prove the order: undoing a parent before its child would leave the parent
behind (rmdir refuses a non-empty directory, and the executor's rmdir never deletes more).
"""
from __future__ import annotations

import pytest

from mirrormount.errors import OperationError
from mirrormount.guest import faults
from mirrormount.guest.apply import Executor
from mirrormount.guest.faults import FAULT_ENV, InjectedFault
from mirrormount.guest.ops import MakeDir


def plan(tmp_path) -> list[MakeDir]:
    """Four steps: a, a/b, a/b/c (each inside the one before), and d."""
    paths = [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c", tmp_path / "d"]
    return [MakeDir(f"step {i}", path=str(p)) for i, p in enumerate(paths, start=1)]


def test_without_a_fault_every_step_is_done_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    ex = Executor()
    ex.run(plan(tmp_path))
    assert (tmp_path / "a" / "b" / "c").is_dir() and (tmp_path / "d").is_dir()
    assert ex.undo == []          # nothing left to undo once the plan succeeded


@pytest.mark.parametrize("point", ["0", "1", "2", "3", "4"])
def test_a_fault_after_each_step_undoes_everything(tmp_path, monkeypatch, point):
    monkeypatch.setenv(FAULT_ENV, point)
    ex = Executor()
    with pytest.raises(InjectedFault, match=f"at {point} "):
        ex.run(plan(tmp_path))
    assert list(tmp_path.iterdir()) == [], f"fault at {point} left directories behind"
    assert ex.undo == []


def test_rollback_runs_in_reverse_order(tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "4")
    done: list[str] = []
    import mirrormount.guest.apply as apply
    real = apply.remove_empty_dir

    def spy(path: str) -> None:
        done.append(path)
        real(path)

    monkeypatch.setattr(apply, "remove_empty_dir", spy)
    with pytest.raises(InjectedFault):
        Executor().run(plan(tmp_path))
    assert done == [op.path for op in reversed(plan(tmp_path))]
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_existed_before_is_not_removed(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("user data")
    monkeypatch.setenv(FAULT_ENV, "4")
    with pytest.raises(InjectedFault):
        Executor().run(plan(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["keep"]


def test_a_failing_step_undoes_the_steps_before_it(tmp_path, monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    (tmp_path / "file").write_text("not a directory")
    ops = plan(tmp_path)[:3] + [MakeDir("fails", path=str(tmp_path / "file" / "x"))]
    with pytest.raises(NotADirectoryError):
        Executor().run(ops)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_ctrl_c_between_steps_undoes_them(tmp_path, monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    real = faults.at

    def interrupt_after_3(point: str) -> None:
        if point == "3":
            raise KeyboardInterrupt
        real(point)

    monkeypatch.setattr(faults, "at", interrupt_after_3)
    with pytest.raises(KeyboardInterrupt):
        Executor().run(plan(tmp_path))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ faults.at
def test_faults_at_raises_injected_fault_only_at_named_points(monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "3, 5.2,undo1")
    for point in ("3", "5.2", "undo1"):
        with pytest.raises(InjectedFault) as info:
            faults.at(point)
        assert isinstance(info.value, OperationError)     # the CLI: exit 1
        assert FAULT_ENV in str(info.value)
    for point in ("0", "2", "4", "5", "5.1", "undo2"):
        faults.at(point)                                   # not named: nothing happens


def test_faults_at_does_nothing_without_the_variable(monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    for point in ("0", "1", "1.1", "undo1"):
        faults.at(point)

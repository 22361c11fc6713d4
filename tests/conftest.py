"""The unit tests' safety net: while any test in tests/ is collected, set up, run or torn down,
every syscall wrapper that changes mounts or namespaces raises instead of reaching the kernel.

Product code calls them only as `sc.NAME(...)` through `from . import syscalls as sc`, so
replacing the module attributes covers the whole package. Read-only calls (statx, statmount,
openat2) stay real. The guard lives in runtest/collect hook wrappers of this conftest, so it
covers fixtures of every scope used by tests/ and never reaches vm-tests/ in the same session.

A guarded call that product code swallows (`except BaseException: ...`) still fails the test:
every call is recorded and checked after each phase.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import mirrormount.kernel.syscalls as sc

# fsopen/fsconfig/fsmount change no mount table, but they create filesystems (and open
# devices): no unit test has any business calling them either.
# drop_capabilities changes no mount, but takes capabilities from the test process for good.
GUARDED = ("mount", "umount2", "unshare", "setns", "pivot_root", "open_tree", "move_mount",
           "mount_setattr", "fsopen", "fsconfig", "fsmount", "drop_capabilities")
HERE = Path(__file__).resolve().parent


class MountsForbidden(AssertionError):
    """A unit test reached a syscall that changes mounts or namespaces."""


attempts: list[str] = []
_patch: pytest.MonkeyPatch | None = None


def _refuse(name: str):
    def refuse(*args, **kwargs):
        attempts.append(name)
        raise MountsForbidden(
            f"unit tests must not change mounts or namespaces: {name} called")
    refuse.__name__ = refuse.__qualname__ = f"guarded_{name}"
    refuse.guarded = True  # type: ignore[attr-defined]
    return refuse


def _install() -> None:
    global _patch
    if _patch is None:
        _patch = pytest.MonkeyPatch()
        for name in GUARDED:
            _patch.setattr(sc, name, _refuse(name))


def _uninstall() -> None:
    global _patch
    if _patch is not None:
        _patch.undo()
        _patch = None


def _check() -> None:
    if attempts:
        seen = ", ".join(attempts)
        attempts.clear()
        raise MountsForbidden(f"unit tests must not change mounts or namespaces: {seen} "
                              "called (and the error was swallowed)")


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    # Importing a test module runs its top-level code: guard that too.
    path = getattr(collector, "path", None)
    if path is None or HERE not in Path(path).resolve().parents:
        return (yield)
    outer = _patch is not None
    _install()
    try:
        return (yield)
    finally:
        if not outer:
            _uninstall()


# Installed at the start of setup and removed at the end of teardown, so that a test's own
# monkeypatching of these names is undone back to the guard, never to the real call.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    _install()
    attempts.clear()
    result = yield
    _check()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    _check()
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        result = yield
        _check()
        return result
    finally:
        _uninstall()


@pytest.fixture
def mount_guard():
    """The guard's record of refused calls (for the test that proves the guard works)."""
    for name in GUARDED:
        assert getattr(getattr(sc, name), "guarded", False), f"{name} is not guarded"
    return attempts

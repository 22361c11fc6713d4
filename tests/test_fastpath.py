"""The fast path (mirrormount/cli/fastpath.py) says exactly what the typer CLI says.

Each argv of the table runs twice, as the real CLI in a subprocess: once as it comes (the
fast path answers what it recognises) and once with MIRRORMOUNT_NO_FASTPATH=1 (typer
answers everything). stdout, stderr and the exit status must be the same. As non-root (as
root: dropped to nobody with setpriv), so no argv here can change anything: a good create
ends in its "needs root" refusal, the same on both paths. Real creates both ways are
vm-tests/test_fastpath_live.py.

The table is checked against the typer command itself: every option `create` and the
global callback take must be known here (handled by the fast path, or listed as falling
through), so an option added later is a failing test until someone decides which it is.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from mirrormount.cli import app, fastpath

REPO = Path(__file__).resolve().parents[1]
AS_NOBODY = (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "--inh-caps=-all", "--"] if os.geteuid() == 0 else [])

# Options of `create` and of the global callback that the fast path leaves to typer.
FALLS_THROUGH = {"--recipe", "--dry-run", "--json", "-J", "--help", "-h", "--version", "-V",
                 "--init", "--join", "--start", "--shutdown", "--stop-signal"}

TABLE = [
    # parsed by the fast path; the library accepts or refuses the values
    ["create", "c1"],
    ["create", "c1", "c2", "c3"],
    ["create", "c1", "--rootfs", "/"],
    ["create", "--rootfs=/", "c1"],
    ["create", "c1", "--ns", "pid,uts", "--hostname", "h"],
    ["create", "c1", "--ns=ipc", "--propagation", "mirror+host"],
    ["create", "c1", "--confine", "none", "--drop-caps", "sys_admin,net_admin"],
    ["create", "c1", "--hostname", "a", "--hostname", "b"],
    ["create", "c1", "--", "c2"],
    ["--base", "/tmp/mm-b", "--state", "/tmp/mm-s", "create", "c1"],
    ["--base=/tmp/mm-b", "create", "c1"],
    ["--base", "relative", "create", "c1"],
    ["--state", "rel/state", "create", "c1"],
    ["--base=", "create", "c1"],
    ["--state", "", "create", "c1"],
    ["create", "c1", "--rootfs=", "--hostname="],
    ["create", "c1", "c1"],
    ["create", "bad/name"],
    ["create", "host"],
    ["create", ""],
    ["create", "c1", "--ns", "bogus"],
    ["create", "c1", "--propagation", "sideways"],
    ["create", "c1", "--confine", "maybe"],
    ["create", "c1", "--drop-caps", "no_such_cap"],
    ["create", "c1", "--rootfs", "/no/such/dir"],
    ["create", "c1", "--hostname", ""],
    ["--version"],
    ["-V"],
    # left to typer: help, usage errors, options the fast path does not take
    ["--version", "create", "c1"],
    ["create"],
    ["create", "--help"],
    ["create", "-h"],
    ["create", "c1", "--bogus"],
    ["create", "c1", "--rootfs"],
    ["create", "c1", "--rootfs", "--ns"],
    ["create", "c1", "--root"],
    ["create", "c1", "--json"],
    ["create", "c1", "--dry-run"],
    ["create", "c1", "--recipe", "/no/such.toml"],
    ["create", "c1", "--init", "sleep 1"],
    ["create", "c1", "--join", "net=c0", "--stop-signal", "SIGRTMIN+3"],
    ["--json", "create", "c1"],
    ["--bogus", "create", "c1"],
    ["--base"],
    ["crate", "c1"],
    ["create", "-", "c1"],
    [],
    # busy TARGET [-J|--json]: parsed by the fast path; the finder refuses these targets
    # (deterministic as nobody: a target that resolves would count uninspected processes)
    ["busy", "/no/such/path"],
    ["busy", "--json", "/no/such/path"],
    ["busy", "/no/such/path", "-J"],
    ["busy", "-J", "--json", "/no/such/path"],
    ["busy", "nosuchguest:/mnt"],
    ["busy", "c1:relative"],
    ["busy", "/dev/no-such-node"],
    ["busy", ""],
    ["busy", "-"],
    ["busy", "--", "-x"],
    ["busy", "--json", "--", "/no/such/path"],
    ["--base", "/tmp/mm-b", "--state", "/tmp/mm-s", "busy", "c1:/mnt"],
    ["--base=", "busy", "c1:/mnt"],
    # busy left to typer
    ["busy"],
    ["busy", "a", "b"],
    ["busy", "--all"],
    ["busy", "--all", "--json"],
    ["busy", "/x", "--all"],
    ["busy", "/no/such/path", "-o", "PID"],
    ["busy", "/no/such/path", "-o", "NOPE"],
    ["busy", "/no/such/path", "-n"],
    ["busy", "/no/such/path", "-r"],
    ["busy", "/no/such/path", "--sort", "PID"],
    ["busy", "--help"],
    ["busy", "-h"],
    ["busy", "/x", "--bogus"],
    ["busy", "-x"],
    ["busy", "-JJ", "/x"],
    ["--json", "busy", "/no/such/path"],
    ["-J", "busy", "/no/such/path"],
]

ENVS = [{}, {"MIRRORMOUNT_BASE": "/tmp/mm-env-b", "MIRRORMOUNT_STATE": "/tmp/mm-env-s"},
        {"MIRRORMOUNT_BASE": "", "MIRRORMOUNT_STATE": ""}]


def run(argv: list[str], env: dict[str, str], fast: bool) -> tuple[int, str, str]:
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
         "LANG": "C.UTF-8", **env}
    if not fast:
        e["MIRRORMOUNT_NO_FASTPATH"] = "1"
    p = subprocess.run(AS_NOBODY + [sys.executable, "-m", "mirrormount", *argv], env=e,
                       cwd="/", capture_output=True, text=True, timeout=120)
    # A dry-run's record holds the time it was planned: the one thing allowed to differ.
    return p.returncode, _CREATED.sub("<t>", p.stdout), p.stderr


_CREATED = re.compile(r'"created": [0-9.]+')


@pytest.mark.parametrize("argv", TABLE, ids=lambda a: " ".join(a) or "(none)")
def test_fast_and_typer_paths_say_the_same(argv):
    assert run(argv, {}, fast=True) == run(argv, {}, fast=False)


@pytest.mark.parametrize("env", ENVS[1:], ids=["set", "empty"])
@pytest.mark.parametrize("argv", [["create", "c1"], ["--base", "/tmp/x", "create", "c1"],
                                  ["--base=", "create", "c1"], ["create", "c1", "--dry-run"]])
def test_base_and_state_from_the_environment_as_typer_reads_them(argv, env):
    assert run(argv, env, fast=True) == run(argv, env, fast=False)


def imports_of(argv: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`mirrormount ARGV` run as nobody under `python -X importtime`: the process, and the
    modules it imported."""
    p = subprocess.run(AS_NOBODY + [sys.executable, "-X", "importtime", "-m", "mirrormount",
                                    *argv],
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                            "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"},
                       cwd="/", capture_output=True, text=True, timeout=120)
    return p, {ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines()
               if ln.startswith("import time:")}


def test_version_and_create_do_not_import_typer():
    """The point of it: neither typer nor click is imported on the hot paths."""
    for argv in (["--version"], ["-V"], ["--base", "/tmp/x", "create", "c1", "--ns", "pid"]):
        _, imported = imports_of(argv)
        heavy = {m for m in imported if m.split(".")[0] in ("typer", "click", "psutil",
                                                           "pyudev", "seccomp", "pydantic")}
        if argv not in (["--version"], ["-V"]):
            # A good create as non-root ends in its refusal, which is said through typer.
            heavy -= {m for m in heavy if m.split(".")[0] in ("typer", "click")}
            assert "mirrormount.guest.guests" in imported
        assert not heavy, (argv, sorted(heavy))
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "mirrormount", "--version"],
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                            "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert p.stdout.startswith("mirrormount ")
    assert not any(w in p.stderr for w in (" typer", " click", "mirrormount.guest"))


# Options of `busy` that the fast path leaves to typer.
BUSY_FALLS_THROUGH = {"--all", "-o", "--output", "-n", "--noheadings", "-r", "--raw", "--sort",
                      "--help", "-h"}


def test_every_option_of_busy_is_known_to_the_fast_path():
    """A new option of `busy` fails here until the fast path handles it (BUSY_FLAGS, and a
    row in TABLE) or it is listed in BUSY_FALLS_THROUGH."""
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    opts = _options(root.commands["busy"])
    unknown = set(opts) - set(fastpath.BUSY_FLAGS) - BUSY_FALLS_THROUGH
    assert not unknown, f"busy: decide fast path or fall through: {unknown}"
    for o in fastpath.BUSY_FLAGS:
        p = opts.get(o)
        assert isinstance(p, click.Option) and p.is_flag and not p.envvar, o
    assert [p.name for p in root.commands["busy"].params
            if isinstance(p, click.Argument)] == ["target"]
    handled_in_table = {a for argv in TABLE for a in argv}
    assert set(fastpath.BUSY_FLAGS) <= handled_in_table


def test_busy_does_not_import_typer():
    """A plain busy TARGET (here one that resolves, as nobody) answers without typer or
    click, and with --json without them either."""
    for argv in (["busy", "/proc"], ["busy", "--json", "/proc"]):
        p, imported = imports_of(argv)
        assert p.returncode in (0, 3), p.stderr[-2000:]
        assert "mirrormount.busy.finder" in imported
        heavy = {m for m in imported if m.split(".")[0] in ("typer", "click", "psutil",
                                                           "typing", "dataclasses", "inspect")}
        assert not heavy, (argv, sorted(heavy))


def test_shell_completion_never_reaches_the_busy_fast_path(monkeypatch):
    monkeypatch.setenv("_MIRRORMOUNT_COMPLETE", "bash_complete")
    assert fastpath.run(["busy", "/proc"]) is None


# What a plain create needs, as the fast path and Guests.create import it (cli/fastpath.py's
# _create, then guests.py's plan/create: planner, executor, nursery, joins). Run as root it
# would also reach the kernel; these imports are all it adds to the interpreter's start-up.
CREATE_PATH = ("mirrormount.cli.fastpath", "mirrormount.errors", "mirrormount.guest.guests",
               "mirrormount.guest.model", "mirrormount.guest.recipe", "mirrormount.guest.joins",
               "mirrormount.guest.plan", "mirrormount.guest.ops", "mirrormount.guest.apply",
               "mirrormount.guest.nursery", "mirrormount.guest.state")
# Each of these cost start-up time on every create and is needed by none (bench_create.py,
# README "The fast path, measured"): typing (~3 ms: annotations only, under TYPE_CHECKING),
# dataclasses and the inspect it imports (~17 ms; classes are records, mirrormount/record.py),
# start/stop's planner and worker, guest-only mounts, repair,
# cgroups (only for an init guest), the mount/umount/repair ops, and the typer CLI itself.
CREATE_MUST_NOT_IMPORT = ("typer", "click", "typing", "dataclasses", "inspect",
                          "mirrormount.guest.lifeplan",
                          "mirrormount.guest.lifework", "mirrormount.guest.guestonly",
                          "mirrormount.guest.rejoin", "mirrormount.guest.repair",
                          "mirrormount.guest.cgroup", "mirrormount.guest.mountops",
                          "mirrormount.cli.common")


def test_create_path_imports_only_what_create_needs():
    code = ("import importlib, sys\n"
            f"for m in {CREATE_PATH!r}:\n"
            "    importlib.import_module(m)\n"
            "print('\\n'.join(sorted(sys.modules)))\n")
    p = subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ.get("PATH", ""),
                                                          "PYTHONPATH": str(REPO)},
                       cwd="/", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    imported = set(p.stdout.split())
    assert set(CREATE_PATH) <= imported
    bad = {m for m in imported for no in CREATE_MUST_NOT_IMPORT
           if m == no or m.startswith(no + ".")}
    assert not bad, sorted(bad)


def _options(cmd: click.Command) -> dict[str, click.Parameter]:
    return {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)
            if o.startswith("-")}


def test_every_option_of_create_is_known_to_the_fast_path_table():
    """A new option of `create`, or a global one, fails here until it is either handled by
    the fast path (and in TABLE) or listed in FALLS_THROUGH."""
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    create = root.commands["create"]
    for cmd, handled in ((create, fastpath.CREATE_VALUES), (root, fastpath.GLOBALS)):
        opts = _options(cmd)
        unknown = set(opts) - set(handled) - FALLS_THROUGH
        assert not unknown, f"{cmd.name}: decide fast path or fall through: {unknown}"
        for o in handled:
            p = opts.get(o)
            # what the fast path assumes of each: one value, no callback, default None
            assert p is not None, f"{o} is gone from {cmd.name}: take it out of fastpath.py"
            assert isinstance(p, click.Option) and not p.is_flag and p.nargs == 1, o
            assert not p.multiple and p.callback is None, o
            if cmd is create:
                assert p.default is None and not p.envvar, o
    assert {o: _options(root)[o].envvar for o in fastpath.GLOBALS} == {
        "--base": "MIRRORMOUNT_BASE", "--state": "MIRRORMOUNT_STATE"}
    assert _options(root)["--base"].default == "/container"
    assert _options(root)["--state"].default == "/run/mirrormount"
    handled_in_table = {a.partition("=")[0] for argv in TABLE for a in argv}
    assert set(fastpath.CREATE_VALUES) | set(fastpath.GLOBALS) <= handled_in_table


def test_shell_completion_is_never_answered_by_the_fast_path(monkeypatch):
    """bash completion runs the program with _MIRRORMOUNT_COMPLETE set and the words so far
    in the environment; argv may look like a plain create. That is click's to answer."""
    monkeypatch.setenv("_MIRRORMOUNT_COMPLETE", "bash_complete")
    assert fastpath.run(["--version"]) is None
    assert fastpath.run(["create", "c1"]) is None

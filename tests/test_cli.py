"""The CLI's usage errors (exit 2, nothing changed), --version, help, and the refusal to act
without root. Usage errors go through typer's CliRunner; the entry point and the non-root
refusal run `python -m mirrormount` as a real subprocess.

Safety: these tests run as root in CI. In-process, Guests.create and the executor are
replaced by traps, and tests/conftest.py makes every mount/namespace syscall raise. A real
process never runs as root on the host: it runs as nobody, or inside a throwaway sandbox
(mirrormount.sandbox), so even a regressed validation cannot mount anything here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrormount import __version__
from mirrormount.cli import app
from mirrormount.kernel.removal import remove_tree

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("create", "list", "status", "exec", "enter", "mount", "umount", "destroy", "doctor",
            "repair")


class Trap(Exception):
    pass


@pytest.fixture
def calls(monkeypatch):
    """Record (and refuse) every attempt to change the system."""
    seen: list[tuple] = []

    def trap(name):
        def refuse(*args, **kwargs):
            seen.append((name, args, kwargs))
            raise Trap(f"{name} reached: validation let a bad request through")
        return refuse

    import mirrormount.guest.apply
    import mirrormount.guest.guests
    monkeypatch.setattr(mirrormount.guest.guests.Guests, "create", trap("Guests.create"))
    monkeypatch.setattr(mirrormount.guest.guests.Guests, "destroy", trap("Guests.destroy"))
    monkeypatch.setattr(mirrormount.guest.apply.Executor, "run", trap("Executor.run"))
    return seen


@pytest.fixture
def mm(tmp_path, calls):
    """Invoke the CLI with BASE and STATE inside tmp_path; returns (result, base, state)."""
    base, state = tmp_path / "base", tmp_path / "state"
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--base", str(base), "--state", str(state), *args])
    invoke.base, invoke.state, invoke.tmp = base, state, tmp_path
    return invoke


def assert_usage_error(result, mm, calls, *needles: str) -> None:
    assert result.exit_code == 2, (result.output, result.exception)
    assert not isinstance(result.exception, Trap)
    assert calls == []
    assert list(mm.tmp.iterdir()) == [], "a usage error changed something"
    assert result.stdout == ""
    for n in needles:
        assert n in result.stderr


# ----------------------------------------------------------------------------- exit 2
@pytest.mark.parametrize("name", ["bad/name", "..", ".", ".x", "_x", "a" * 64, "é", "a b",
                                  "c1;rm"])
def test_create_bad_name(mm, calls, name):
    r = mm("create", name)
    assert_usage_error(r, mm, calls, "invalid guest name")
    assert r.stderr.startswith("mirrormount: ") and r.stderr.count("\n") == 1   # one line


def test_create_leading_dash_is_refused(mm, calls):
    # after '--' it is a name, and an invalid one; without '--' it is an unknown option
    assert_usage_error(mm("create", "--", "-x"), mm, calls, "invalid guest name")
    assert_usage_error(mm("create", "-x"), mm, calls)


def test_one_bad_name_stops_the_good_ones_too(mm, calls):
    assert_usage_error(mm("create", "good1", "good2", "bad/name"), mm, calls, "bad/name")


def test_create_63_char_name_passes_validation(mm, calls):
    # the longest valid name gets past validation and reaches create (trapped here)
    r = mm("create", "a" * 63)
    assert isinstance(r.exception, Trap)
    assert [c[0] for c in calls] == ["Guests.create"]


@pytest.mark.parametrize("ns,bad", [("bogus", "bogus"), ("uts,user", "user"), ("UTS", "UTS")])
def test_create_unknown_ns_kind(mm, calls, ns, bad):
    assert_usage_error(mm("create", "c1", "--ns", ns), mm, calls, bad)


@pytest.mark.parametrize("prop", ["rslave", "shared", "", "MIRROR", "mirror+"])
def test_create_bad_propagation(mm, calls, prop):
    assert_usage_error(mm("create", "c1", "--propagation", prop), mm, calls, "propagation")


def test_create_duplicate_names(mm, calls):
    assert_usage_error(mm("create", "c1", "c2", "c1"), mm, calls, "twice")


def test_create_rootfs_not_a_directory(mm, calls):
    assert_usage_error(mm("create", "c1", "--rootfs", str(mm.tmp / "nope")), mm, calls,
                       "not a directory")


@pytest.mark.parametrize("hostname", ["", "h" * 65])
def test_create_bad_hostname(mm, calls, hostname):
    assert_usage_error(mm("create", "c1", "--hostname", hostname), mm, calls, "hostname")


def test_create_dry_run_with_a_bad_name(mm, calls):
    assert_usage_error(mm("create", "--dry-run", "x/y"), mm, calls, "invalid guest name")


def test_create_without_names(mm, calls):
    assert_usage_error(mm("create"), mm, calls)


def test_destroy_bad_names(mm, calls):
    assert_usage_error(mm("destroy", "ok", "../x"), mm, calls, "invalid guest name")


@pytest.mark.parametrize("args", [("exec", "c1"), ("exec", "c1", "--"), ("exec",)])
def test_exec_without_a_command(mm, calls, args):
    assert_usage_error(mm(*args), mm, calls)


def test_unknown_command(mm, calls):
    assert_usage_error(mm("frobnicate"), mm, calls)


def test_json_flag_keeps_errors_off_stdout(mm, calls):
    r = mm("--json", "create", "bad/name")
    assert_usage_error(r, mm, calls, "invalid guest name")


# ----------------------------------------------------------------------------- --version, help
def test_version():
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout == f"mirrormount {__version__}\n"


def test_version_wins_over_a_command():
    r = CliRunner().invoke(app, ["--version", "create", "bad/name"])
    assert r.exit_code == 0 and __version__ in r.stdout


def test_help_lists_the_commands():
    r = CliRunner().invoke(app, ["--help"])
    assert r.exit_code == 0
    listed = {ln.split()[0] for ln in r.stdout.split("Commands:")[1].splitlines() if ln.strip()}
    assert set(COMMANDS) <= listed
    for opt in ("--base", "--state", "--json", "--version"):
        assert opt in r.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command):
    r = CliRunner().invoke(app, [command, "--help"])
    assert r.exit_code == 0 and "Usage:" in r.stdout


def test_create_help_shows_the_contract_options():
    out = CliRunner().invoke(app, ["create", "--help"]).stdout
    for opt in ("--rootfs", "--hostname", "--ns", "--propagation", "--confine", "--drop-caps",
                "--dry-run"):
        assert opt in out


# ----------------------------------------------------------------------------- real processes
@pytest.fixture
def shared_tmp():
    """A directory anyone may write in (tmp_path is root-only), removed afterwards.
    remove_tree refuses (and fails the teardown) if anything got mounted in it."""
    d = tempfile.mkdtemp(prefix="mirrormount-test-", dir="/tmp")
    os.chmod(d, 0o777)
    yield Path(d)
    remove_tree(d)


# Inside the sandbox: BASE and STATE live under the sandbox's own fresh /tmp.
SANDBOX_SCRATCH = "/tmp/mm-test"
# Runs inside the sandbox: the CLI in SCRATCH, then what it left there, as one JSON line.
INSIDE = """\
import json, os, subprocess, sys
where = sys.argv[1]
os.mkdir(where, 0o777)
cp = subprocess.run(sys.argv[2:], capture_output=True, text=True, cwd=where, timeout=60)
print(json.dumps({"returncode": cp.returncode, "stdout": cp.stdout, "stderr": cp.stderr,
                  "left": sorted(os.listdir(where))}))
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    left: list[str]      # what the command left in its scratch directory


def run_cli(args: list[str], *, as_nobody: bool, scratch: Path, expect: int) -> Run:
    """`python -m mirrormount --base DIR/base --state DIR/state ARGS` as a real process, and
    assert its exit code is `expect`. Never as root on the host: as root it runs either as
    nobody (setpriv, for real) or inside a throwaway sandbox (mirrormount.sandbox), where DIR
    is the sandbox's own /tmp/mm-test; otherwise DIR is `scratch`."""
    sandboxed = os.geteuid() == 0 and not as_nobody
    where = SANDBOX_SCRATCH if sandboxed else str(scratch)
    cli = [sys.executable, "-m", "mirrormount", "--base", f"{where}/base",
           "--state", f"{where}/state", *args]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
           "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "HOME": where}
    if sandboxed:
        argv = [sys.executable, "-m", "mirrormount.sandbox", "--",
                sys.executable, "-c", INSIDE, where, *cli]
        cp = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=90)
        assert cp.returncode == 0 and cp.stdout.count("\n") == 1, \
            f"sandbox failed ({cp.returncode}): {cp.stderr}{cp.stdout}"
        r = Run(**json.loads(cp.stdout))
    else:
        if as_nobody and os.geteuid() == 0:
            # drop to nobody (and no capabilities) for real
            cli = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                   "--inh-caps=-all", "--"] + cli
        cp = subprocess.run(cli, capture_output=True, text=True, cwd=scratch, env=env,
                            timeout=60)
        r = Run(cp.returncode, cp.stdout, cp.stderr, sorted(os.listdir(scratch)))
    assert r.returncode == expect, (args, r.returncode, r.stderr, r.stdout)
    return r


def test_subprocess_really_drops_root(shared_tmp):
    run_cli(["--version"], as_nobody=True, scratch=shared_tmp, expect=0)
    probe = subprocess.run(
        (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
         if os.geteuid() == 0 else []) + ["sh", "-c", "id -u"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() != "0"


@pytest.mark.parametrize("args", [
    ["create", "c1"],
    ["create", "c1", "c2", "--ns", "pid", "--hostname", "h"],
    ["destroy", "c1"],
    ["mount", "c1", "tmpfs", "/mnt", "-t", "tmpfs"],
    ["umount", "c1", "/mnt"],
    ["exec", "c1", "--", "true"],
    ["status", "c1"],
    ["repair", "c1"],
    ["repair", "c1", "--dry-run"],
    ["busy", "--all"],
    ["start", "c1"],
    ["stop", "c1"],
    ["metrics"],
    ["graph"],
])
def test_non_root_is_refused_and_changes_nothing(shared_tmp, args):
    # require_root raises OperationError: an operation failure, exit 1 (README "Exit codes")
    r = run_cli(args, as_nobody=True, scratch=shared_tmp, expect=1)
    assert "needs root" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert r.left == []


@pytest.mark.parametrize("args", [["create", "c1"], ["create", "c1", "--dry-run"],
                                  ["create", "c1", "--ns", "pid", "--init", "sleep 1"]])
@pytest.mark.parametrize("reachable", [True, False], ids=["scratch-open", "scratch-closed"])
def test_non_root_with_state_there_is_told_it_needs_root(shared_tmp, tmp_path, args,
                                                          reachable):
    """STATE exists, 0700 and root's, as on a host with guests: the first look into it (or
    into BASE, where even that is closed) is refused (EACCES), which is said as `needs
    root`, not as the statx that met it."""
    scratch = shared_tmp if reachable else tmp_path
    os.mkdir(scratch / "state", 0o700)
    r = run_cli(args, as_nobody=True, scratch=scratch, expect=1)
    assert r.stderr.startswith("mirrormount: create needs root"), r.stderr
    assert r.stderr.count("\n") == 1


def test_entry_point_exit_code_for_a_bad_name(shared_tmp):
    # Through `python -m mirrormount` (as root: inside a sandbox): 2, one line, no traceback.
    r = run_cli(["create", "bad/name"], as_nobody=False, scratch=shared_tmp, expect=2)
    assert r.stderr.startswith("mirrormount: invalid guest name") and "Traceback" not in r.stderr
    assert r.left == []
    assert list(shared_tmp.iterdir()) == []


# ----------------------------------------------------------------------------- the unit-test guard
def test_unit_tests_cannot_change_mounts_or_namespaces(mount_guard):
    """tests/conftest.py replaces every mutating syscall wrapper; read-only ones stay real."""
    import mirrormount.guest.apply
    import mirrormount.kernel.syscalls as sc
    names = ["mount", "umount2", "unshare", "setns", "pivot_root", "open_tree", "move_mount",
             "mount_setattr", "fsopen", "fsconfig", "fsmount", "drop_capabilities"]
    for name in names:
        with pytest.raises(AssertionError, match="^unit tests must not change mounts or "
                                                 f"namespaces: {name} called$"):
            getattr(sc, name)("/", "/")
    # product modules reach the same (guarded) functions through `sc`
    with pytest.raises(AssertionError, match="mount called"):
        mirrormount.guest.apply.sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    assert mount_guard == names + ["mount"]
    mount_guard.clear()   # seen and expected: not a swallowed call
    assert sc.statx("/").mnt_id > 0


@pytest.mark.parametrize("args", [["--base", "rel", "create", "c1"],
                                  ["--state", "run/mm", "list"],
                                  ["--base", "rel", "status", "c1"],
                                  ["--base", "rel", "busy", "/"],
                                  ["--base", "rel", "destroy", "c1"]])
def test_a_relative_base_or_state_is_bad_input(shared_tmp, args):
    """BASE and STATE name places a later command, run from elsewhere, must find again."""
    r = run_cli(args, as_nobody=True, scratch=shared_tmp, expect=2)
    assert r.stderr.startswith("mirrormount: --") and "absolute path" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and r.left == []

"""Shell completion (cli/completion.py): `mirrormount completion SHELL` prints a script for
bash, zsh and fish that each shell accepts, and the completion protocol answers guest names
from STATE wherever an existing guest's NAME is expected, commands and options elsewhere,
and nothing (quietly) when STATE is missing or unreadable.

STATE here is a plain directory of guest directories, as guest.state.guest_names reads it:
no guest is made (vm-tests/test_completion_live.py completes live guests)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.cli.completion import SHELLS, script

BIN = Path(sys.executable).parent
MM = str(BIN / "mirrormount")


@pytest.fixture
def state(tmp_path):
    st = tmp_path / "state"
    for name in ("c1", "c2", "web", ".nursery"):
        (st / name).mkdir(parents=True)
    (st / "lock").write_text("")          # a file is no guest
    return st


def env_for(state, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_MIRRORMOUNT")}
    env.update(MIRRORMOUNT_STATE=str(state), PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}")
    env.update(extra)
    return env


def bash_complete(state, line: str) -> list[str]:
    words = line.split(" ")
    env = env_for(state, COMP_WORDS=line, COMP_CWORD=str(len(words) - 1),
                  _MIRRORMOUNT_COMPLETE="complete_bash")
    cp = subprocess.run([MM], env=env, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stderr == "", cp.stderr
    return cp.stdout.split()


@pytest.mark.parametrize("shell", SHELLS)
def test_a_script_for_each_shell(shell):
    r = CliRunner().invoke(app, ["completion", shell])
    assert r.exit_code == 0
    assert r.stdout.strip() == script(shell)
    assert "_MIRRORMOUNT_COMPLETE=complete_" + shell in r.stdout
    assert "mirrormount" in r.stdout


def test_unknown_shell_is_bad_input():
    r = CliRunner().invoke(app, ["completion", "tcsh"])
    assert r.exit_code == 2 and r.stdout == ""


@pytest.mark.parametrize("line, want", [
    ("mirrormount status ", ["c1", "c2", "web"]),
    ("mirrormount status c", ["c1", "c2"]),
    ("mirrormount destroy c1 ", ["c2", "web"]),       # a name once
    ("mirrormount exec w", ["web"]),
    ("mirrormount mount c", ["c1", "c2"]),
    ("mirrormount create c", []),                     # new names: nothing to offer
    ("mirrormount stat", ["status"]),
])
def test_bash_protocol(state, line, want):
    assert bash_complete(state, line) == want


def test_state_option_on_the_line_wins(state, tmp_path):
    other = tmp_path / "other"
    (other / "zz").mkdir(parents=True)
    assert bash_complete(state, f"mirrormount --state {other} status ") == ["zz"]


@pytest.mark.parametrize("where", ["missing", "a file"])
def test_no_state_no_candidates_and_no_noise(tmp_path, where):
    st = tmp_path / "nothing"
    if where == "a file":
        st.write_text("")
    assert bash_complete(st, "mirrormount status ") == []


def test_click_spelling_of_the_request_is_accepted(state):
    env = env_for(state, COMP_WORDS="mirrormount status c", COMP_CWORD="2",
                  _MIRRORMOUNT_COMPLETE="bash_complete")
    cp = subprocess.run([MM], env=env, capture_output=True, text=True, timeout=60)
    assert cp.stdout.split() == ["c1", "c2"]


def test_zsh_and_fish_protocol(state):
    env = env_for(state, _TYPER_COMPLETE_ARGS="mirrormount repair ",
                  _MIRRORMOUNT_COMPLETE="complete_zsh")
    cp = subprocess.run([MM], env=env, capture_output=True, text=True, timeout=60)
    assert cp.stdout.startswith("_arguments") and '"c1"' in cp.stdout and '"web"' in cp.stdout
    env.update(_MIRRORMOUNT_COMPLETE="complete_fish", _TYPER_COMPLETE_FISH_ACTION="get-args",
               _TYPER_COMPLETE_ARGS="mirrormount umount c")
    cp = subprocess.run([MM], env=env, capture_output=True, text=True, timeout=60)
    assert cp.stdout.split() == ["c1", "c2"]


def test_real_bash_sources_it_and_completes(state):
    assert shutil.which("bash")
    prog = ('source <(mirrormount completion bash) && complete -p mirrormount && '
            'COMP_WORDS=(mirrormount status c) COMP_CWORD=2 && '
            '_mirrormount_completion mirrormount && printf "%s\\n" "${COMPREPLY[@]}"')
    cp = subprocess.run(["bash", "-c", prog], env=env_for(state), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "complete -o default -F _mirrormount_completion mirrormount"
    assert lines[1:] == ["c1", "c2"]


def test_real_fish_completes(state, tmp_path):
    assert shutil.which("fish"), "fish is needed (.ci/debian-packages)"
    path = tmp_path / "mirrormount.fish"
    path.write_text(script("fish") + "\n")
    prog = f'source {path}; complete -C "mirrormount status c"'
    cp = subprocess.run(["fish", "--no-config", "-c", prog],
                        env=env_for(state, HOME=str(tmp_path)), capture_output=True,
                        text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert [ln.split("\t")[0] for ln in cp.stdout.splitlines()] == ["c1", "c2"]


def test_real_zsh_registers_it(state, tmp_path):
    assert shutil.which("zsh"), "zsh is needed (.ci/debian-packages)"
    prog = ("autoload -Uz compinit && compinit -u -D && "
            "source <(mirrormount completion zsh) && print -r -- $_comps[mirrormount]")
    cp = subprocess.run(["zsh", "-f", "-c", prog], env=env_for(state, HOME=str(tmp_path)),
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "_mirrormount_completion"


@pytest.mark.parametrize("line, expected", [
    ("mirrormount list -o N", ["NAME", "NS"]),
    ("mirrormount list -o NAME,ST", ["NAME,STATE"]),
    ("mirrormount list -o +CO", ["+CONFINE"]),
    ("mirrormount list --sort PRO", ["PROPAGATION", "PROBLEMS"]),
    ("mirrormount ps c1 -o GUEST", ["GUEST_PID"]),
    ("mirrormount busy --all -o HO", ["HOW"]),
    ("mirrormount create c9 --ns pid,n", ["pid,net"]),
    ("mirrormount graph --format d", ["dot"]),
])
def test_option_values_complete(state, line, expected):
    """-o and --sort complete the command's own output columns (as its --help lists them,
    a comma list's last item, a leading + kept), --ns the namespace kinds, --format the
    graph's formats."""
    assert sorted(bash_complete(state, line)) == sorted(expected)

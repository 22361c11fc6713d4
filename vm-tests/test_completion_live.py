"""Shell completion of live guest names (issue 10, part 3): guests made by the real CLI in a
throwaway sandbox complete through the real protocol, in the real shells: bash (COMP_WORDS/
COMP_CWORD, and `bash -c` with the sourced script and `complete -p`), zsh
(_TYPER_COMPLETE_ARGS) and fish (`complete -C "mirrormount status c"`). A destroyed guest no
longer completes; a non-root user (who cannot read STATE) gets no candidates and no noise."""
from __future__ import annotations

import shlex


def complete(sb, shell: str, line: str, **env: str):
    """The candidates `mirrormount` answers for `line` (cursor at its end) in `shell`'s
    protocol, run inside the sandbox."""
    words = line.split(" ")
    if shell == "bash":
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    else:
        env.update(_TYPER_COMPLETE_ARGS=line)
        if shell == "fish":
            env.update(_TYPER_COMPLETE_FISH_ACTION="get-args")
    assign = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return sb.sh(f"env {assign} _MIRRORMOUNT_COMPLETE=complete_{shell} mirrormount",
                 check=False)


def test_live_guest_names_complete_in_every_shell(sandbox):
    sb = sandbox
    for name in ("cat", "cow", "dog"):
        r = sb.mm("create", name, "--confine", "none")
        assert r.returncode == 0, r.stderr

    r = complete(sb, "bash", "mirrormount status c")
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["cat", "cow"], "")
    assert complete(sb, "bash", "mirrormount destroy cat ").stdout.split() == ["cow", "dog"]
    assert complete(sb, "bash", "mirrormount exec d").stdout.split() == ["dog"]

    z = complete(sb, "zsh", "mirrormount repair ").stdout
    assert z.startswith("_arguments") and all(f'"{n}"' in z for n in ("cat", "cow", "dog"))
    assert complete(sb, "fish", "mirrormount umount c").stdout.split() == ["cat", "cow"]

    # the real shells, with the scripts as a user installs them
    bash = sb.run(["bash", "-c", "source <(mirrormount completion bash) && "
                   "complete -p mirrormount && COMP_WORDS=(mirrormount status c) "
                   "COMP_CWORD=2 && _mirrormount_completion mirrormount && "
                   "printf '%s\\n' \"${COMPREPLY[@]}\""])
    assert bash.returncode == 0, bash.stderr
    assert bash.stdout.splitlines() == [
        "complete -o default -F _mirrormount_completion mirrormount", "cat", "cow"]
    fish = sb.run(["fish", "--no-config", "-c",
                   "mirrormount completion fish | source; complete -C 'mirrormount status c'"])
    assert fish.returncode == 0, fish.stderr
    assert [ln.split("\t")[0] for ln in fish.stdout.splitlines()] == ["cat", "cow"]

    # a destroyed guest is gone from the candidates
    assert sb.mm("destroy", "cow").returncode == 0
    assert complete(sb, "bash", "mirrormount status c").stdout.split() == ["cat"]


def test_no_candidates_without_root_or_without_state(sandbox):
    sb = sandbox
    r = complete(sb, "bash", "mirrormount status ")                      # no guest yet
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, [], "")
    assert sb.mm("create", "c1", "--confine", "none").returncode == 0
    # STATE is 0700 root: nobody reads nothing, and says nothing
    r = sb.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env",
                "COMP_WORDS=mirrormount status c", "COMP_CWORD=2",
                "_MIRRORMOUNT_COMPLETE=complete_bash", "mirrormount"])
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, [], "")
    r = complete(sb, "bash", "mirrormount --state /nonexistent status c")
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, [], "")

"""Shell completion for bash, zsh and fish: `mirrormount completion SHELL` prints the script,
and guest names complete wherever a command takes an existing guest's NAME.

The protocol is typer's (typer/_completion_classes.py, on click's shell_completion): the
shell runs ``mirrormount`` with ``_MIRRORMOUNT_COMPLETE=complete_SHELL`` and the words typed
so far, and prints the candidates one a line:
- bash: ``COMP_WORDS`` (the words, joined by spaces) and ``COMP_CWORD`` (the index of the
  word under the cursor);
- zsh and fish: ``_TYPER_COMPLETE_ARGS`` (the command line up to the cursor); fish also
  ``_TYPER_COMPLETE_FISH_ACTION`` (get-args, or is-args: "are there candidates at all?").
click's spelling of the variable's value (``bash_source``, ``bash_complete``) is accepted
too (``prepare``).

This module imports nothing of the CLI (common.Command calls ``attach``, common.Group calls
``prepare``); cli/__init__ registers ``completion_cmd`` as the `completion` command.

Guest names are read from STATE (``--state``, or $MIRRORMOUNT_STATE, as typed on the line
being completed): one directory listing, no lock and no privilege asked. Completion never
fails loudly: no STATE, no permission (not root), anything unexpected: no candidates.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import click
import typer

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_MIRRORMOUNT_COMPLETE"

# Commands whose NAME is a new guest's: nothing existing to offer.
NEW_NAMES = frozenset({"create"})


def prepare() -> None:
    """Before click answers a completion request: typer's completion classes (whose
    scripts `completion` prints) replace click's, and click's spelling of the request
    (``bash_complete``) is turned into typer's (``complete_bash``)."""
    from typer._completion_classes import completion_init
    completion_init()
    value = os.environ.get(COMPLETE_VAR, "")
    first, _, second = value.partition("_")
    if first in SHELLS and second in ("source", "complete"):
        os.environ[COMPLETE_VAR] = f"{second}_{first}"


def guest_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """The existing guests whose names start with ``incomplete``, sorted; [] on any
    trouble (a completion that prints a traceback breaks the user's shell line)."""
    try:
        from ..guest.model import Layout
        from ..guest.state import guest_names as names_in
        state = ctx.find_root().params.get("state") or os.environ.get(
            "MIRRORMOUNT_STATE", "/run/mirrormount")
        names = names_in(Layout("/", os.path.abspath(state)))
        given = set(ctx.params.get(param.name or "", None) or ()) \
            if param.multiple or param.nargs == -1 else set()
        return [n for n in names if n.startswith(incomplete) and n not in given]
    except Exception:
        return []


def listed(words: Sequence[str]) -> Callable[[click.Context, click.Parameter, str], list]:
    """Completion of a comma-separated list from ``words`` (any case typed; a leading '+'
    kept, as -o +COL): the items typed so far stay, the last one completes."""
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem
        head, _, last = incomplete.rpartition(",")
        plus = "+" if not head and last.startswith("+") else ""
        last = last.lstrip("+")
        done = f"{head}," if head else plus
        return [CompletionItem(done + w) for w in words if w.lower().startswith(last.lower())]
    return complete


def _columns_of(cmd: click.Command) -> list[str]:
    """The output columns a command lists in its --help (Columns.epilog), in order."""
    lines = (cmd.epilog or "").splitlines()
    if "Available output columns:" not in lines:
        return []
    out = []
    for line in lines[lines.index("Available output columns:") + 1:]:
        if not line.startswith("  "):
            break
        out.append(line.split()[0])
    return out


def attach(cmd: click.Command) -> None:
    """Give guest-name completion to ``cmd``'s NAME argument(s) (a parameter called name
    or names), unless the command makes new guests or the argument completes otherwise;
    and value completion to the options that take a fixed set: -o/--sort (the command's
    output columns), --ns (namespace kinds), --format (graph's formats).
    Called for every command when the app's click tree is built (common.Command)."""
    from ..guest.model import EXTRA_KINDS
    for param in cmd.params:
        if getattr(param, "_custom_shell_complete", None) is not None:
            continue
        if isinstance(param, click.Argument) and param.name in ("name", "names") \
                and cmd.name not in NEW_NAMES:
            param._custom_shell_complete = guest_names
        elif isinstance(param, click.Option) and param.name in ("output", "sort"):
            param._custom_shell_complete = listed(_columns_of(cmd))
        elif isinstance(param, click.Option) and param.name == "ns":
            param._custom_shell_complete = listed(EXTRA_KINDS)
        elif isinstance(param, click.Option) and param.name == "fmt":
            param._custom_shell_complete = listed(("dot", "text"))


def script(shell: str, prog_name: str = "mirrormount") -> str:
    """The completion script for ``shell`` (bash, zsh or fish), to be sourced (bash, zsh)
    or put in fish's completions directory."""
    from typer._completion_shared import get_completion_script
    return get_completion_script(prog_name=prog_name, complete_var=COMPLETE_VAR, shell=shell)


def completion_cmd(
        shell: str = typer.Argument(..., metavar="SHELL", click_type=click.Choice(SHELLS),
                                    help="bash, zsh or fish.")) -> None:
    """Print the shell completion script for SHELL (see FILES in mirrormount(8)).

    bash: eval "$(mirrormount completion bash)" in ~/.bashrc, or save it as
    /etc/bash_completion.d/mirrormount. zsh: save it as _mirrormount in a directory of
    $fpath. fish: save it as ~/.config/fish/completions/mirrormount.fish."""
    typer.echo(script(shell))

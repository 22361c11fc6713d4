"""exec and enter: a command, or a shell, in all of a guest's namespaces, as nsenter(1) and
`machinectl shell` run one (guest/nsexec.py runs it, guest/execenv.py makes its environment).

Options stop at the command: `exec c1 ls --help` runs `ls --help` in the guest. exec's own
options go before NAME, or between NAME and the command (`exec c1 --user bob -- id`); the
first word that is none of them, or `--`, starts the command.

How the CLI ends is how the command ended: its exit status, or, when it died of a signal,
the CLI dies of the same signal (signals.die_like), so a shell loop stops at one Ctrl-C.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from ..errors import UsageError
from ..guest.execenv import parse_env_option
from ..guest.model import validate_guest_path
from ..kernel import signals
from .common import NAME_HELP, app, reports_errors, settings

# Click stops parsing options at NAME (allow_interspersed_args False): what follows is the
# command's, options included; those of our own between NAME and the command are taken by
# split_own_options.
EXEC_CTX = {"allow_extra_args": True, "ignore_unknown_options": True,
            "allow_interspersed_args": False}

USER_OPT = typer.Option(None, "--user", metavar="USER",
                        help="Run as USER (a name or uid in the guest's passwd; groups from "
                             "its group file).")
WD_OPT = typer.Option(None, "--wd", metavar="DIR",
                      help="Working directory, inside the guest [/].")
ENV_OPT = typer.Option([], "--env", metavar="K=V",
                       help="Add K=V to the command's environment (repeatable).")
KEEP_OPT = typer.Option(False, "--keep-env",
                        help="Keep the caller's environment as it is: no HOME/USER from "
                             "the guest's passwd, no guest markers.")

_VALUED = ("--user", "--wd", "--env")


def split_own_options(words: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Our options at the start of `words` (after NAME), and the command after them.

    Returns ({"--user": [...], "--wd": [...], "--env": [...], "--keep-env": [""]}, command).
    A leading `--` ends our options and is dropped. UsageError for an option missing its
    value."""
    found: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        key, eq, value = word.partition("=")
        if key in _VALUED:
            if not eq:
                if i + 1 >= len(words):
                    raise UsageError(f"{key} needs a value")
                value = words[i + 1]
                i += 1
            found.setdefault(key, []).append(value)
        elif word == "--keep-env":
            found.setdefault(word, []).append("")
        else:
            break
        i += 1
    return found, words[i:]


def _run(ctx: typer.Context, name: str, cmd: list[str] | None, user: Optional[str],
         wd: Optional[str], env: list[str], keep_env: bool) -> None:
    if cmd is not None:
        more, cmd = split_own_options(cmd)
        if len(more.get("--user", [])) + (user is not None) > 1 or \
                len(more.get("--wd", [])) + (wd is not None) > 1:
            raise UsageError("--user and --wd may be given once")
        if user is None and more.get("--user"):
            user = more["--user"][0]
        if wd is None and more.get("--wd"):
            wd = more["--wd"][0]
        env = [*env, *more.get("--env", [])]
        keep_env = keep_env or "--keep-env" in more
        if not cmd:
            raise UsageError("exec: no command given (exec NAME [OPTIONS] [--] CMD...)")
    if wd is not None:
        validate_guest_path(wd, "--wd")
    done = settings(ctx).guests.exec_command(name, cmd, user=user, wd=wd or "/",
                                             env=parse_env_option(env), keep_env=keep_env)
    signals.ending()
    # Dies here of the command's signal, if it died of one; else its exit status.
    raise typer.Exit(signals.die_like(done.status))


@app.command("exec", context_settings=EXEC_CTX)
@reports_errors
def exec_(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
          cmd: List[str] = typer.Argument(..., metavar="[--] CMD...",
                                          help="The command and its arguments; nothing "
                                               "from here on is mirrormount's."),
          user: Optional[str] = USER_OPT, wd: Optional[str] = WD_OPT,
          env: List[str] = ENV_OPT, keep_env: bool = KEEP_OPT) -> None:
    """Run CMD in all of the guest's namespaces and its cgroup, at its root (or --wd), as
    root (or --user); exit with CMD's status, or die of the signal that killed it."""
    _run(ctx, name, list(cmd), user, wd, env, keep_env)


@app.command()
@reports_errors
def enter(ctx: typer.Context, name: str = typer.Argument(..., help=NAME_HELP),
          user: Optional[str] = USER_OPT, wd: Optional[str] = WD_OPT,
          env: List[str] = ENV_OPT, keep_env: bool = KEEP_OPT) -> None:
    """Start an interactive shell inside the guest: $SHELL, else the user's login shell,
    else /bin/sh, whichever the guest has first; SHELL names the one that runs."""
    _run(ctx, name, None, user, wd, env, keep_env)

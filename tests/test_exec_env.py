"""The pure parts of exec and enter: environment rules, the guest's passwd and group,
--env, options after NAME; and the signal endings (die_like) and closed-fd placeholders on
real processes (unprivileged)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from mirrormount.cli.exec import split_own_options
from mirrormount.errors import UsageError
from mirrormount.guest import execenv
from mirrormount.kernel import signals

PASSWD = ("root:x:0:0:root:/root:/bin/bash\n"
          "bob:x:1234:100:Bob:/home/bob:/bin/zsh\n"
          "#comment:x:1:1::/:/bin/sh\n"
          "broken:x:notanumber:1::/:/bin/sh\n"
          "short:x:1\n"
          "+nis::::::\n")
GROUP = "users:x:100:\nstaff:x:50:alice,bob\nwheel:x:10:bob\nodd:x:nan:bob\n"


def test_passwd_skips_what_is_malformed():
    assert [e.name for e in execenv.parse_passwd(PASSWD)] == ["root", "bob"]


def test_resolve_user_by_name_uid_and_default():
    bob = execenv.resolve_user("bob", PASSWD, GROUP, "g")
    assert bob == execenv.User("bob", 1234, 100, (100, 50, 10), "/home/bob", "/bin/zsh")
    assert execenv.resolve_user("1234", PASSWD, GROUP, "g") == bob
    root = execenv.resolve_user(None, PASSWD, GROUP, "g")
    assert (root.name, root.uid, root.home) == ("root", 0, "/root")


def test_root_without_passwd_is_still_root():
    assert execenv.resolve_user(None, "", "", "g") == execenv.User("root", 0, 0, (0,),
                                                                   "/root", "/bin/sh")


@pytest.mark.parametrize("spec", ["alice", "99", "broken", "#comment"])
def test_unknown_user_is_bad_input(spec):
    with pytest.raises(UsageError, match="no such user in guest g"):
        execenv.resolve_user(spec, PASSWD, GROUP, "g")


def test_command_env_rules():
    caller = {"HOME": "/host", "USER": "me", "PATH": "/bin", "SHELL": "/bin/zsh"}
    bob = execenv.resolve_user("bob", PASSWD, GROUP, "g")
    env = execenv.command_env(caller, bob, "g1", (("A", "1"), ("HOME", "/x")))
    assert env == {"HOME": "/x", "USER": "bob", "LOGNAME": "bob", "PATH": "/bin",
                   "SHELL": "/bin/zsh", "container": "mirrormount", "MIRRORMOUNT_GUEST": "g1",
                   "A": "1"}
    env = execenv.command_env(caller, bob, "g1", (), shell="/bin/sh")
    assert env["SHELL"] == "/bin/sh"
    assert execenv.command_env(caller, bob, "g1", (("A", "1"),), keep_env=True,
                               shell="/bin/sh") == {**caller, "A": "1"}
    assert set(execenv.MARKERS) <= set(execenv.command_env({}, bob, "g"))


def test_shell_candidates():
    assert execenv.shell_candidates({"SHELL": "/bin/zsh"}, "/bin/bash") == \
        ["/bin/zsh", "/bin/bash", "/bin/sh"]
    assert execenv.shell_candidates({"SHELL": "zsh"}, "/bin/sh") == ["/bin/sh"]


def test_env_block_and_option():
    assert execenv.parse_env_entries(b"A=1\0B=x=y\0junk\0=v\0") == {"A": "1", "B": "x=y"}
    assert execenv.parse_env_option(["A=1", "B="]) == (("A", "1"), ("B", ""))
    for bad in ("A", "=1"):
        with pytest.raises(UsageError):
            execenv.parse_env_option([bad])


def test_caller_environ_has_no_locale_coercion():
    # The C locale makes Python add LC_CTYPE to its own environ (PEP 538); the block the
    # process was started with has none.
    code = ("import os; from mirrormount.guest.execenv import caller_environ as c; "
            "print('LC_CTYPE' in os.environ, 'LC_CTYPE' in c())")
    out = subprocess.run(["env", "-i", f"PYTHONPATH={os.getcwd()}", "LC_ALL=",
                          sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "False"], out


@pytest.mark.parametrize("words, found, rest", [
    (["ls", "--help"], {}, ["ls", "--help"]),
    (["--", "ls", "--user"], {}, ["ls", "--user"]),
    (["--user", "bob", "--env=A=1", "--keep-env", "--", "id"],
     {"--user": ["bob"], "--env": ["A=1"], "--keep-env": [""]}, ["id"]),
    (["--wd=/x", "pwd", "--wd", "/y"], {"--wd": ["/x"]}, ["pwd", "--wd", "/y"]),
])
def test_own_options_stop_at_the_command(words, found, rest):
    assert split_own_options(words) == (found, rest)


def test_an_option_without_its_value():
    with pytest.raises(UsageError, match="--user needs a value"):
        split_own_options(["--user"])


def _dies(status: int) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(signals.die_like(status) + 200)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGQUIT,
                                 signal.SIGKILL, signal.SIGUSR1])
def test_die_like_dies_of_the_same_signal_without_a_core(sig):
    st = _dies(sig)                  # a raw wait status: killed by sig, no core
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == sig and not os.WCOREDUMP(st)


def test_die_like_returns_an_exit_code():
    assert signals.die_like(42 << 8) == 42


def test_closed_std_fds_are_held_close_on_exec():
    code = ("import os, sys; from mirrormount.kernel import signals; "
            "c = signals.hold_closed_std_fds(); print(sorted(c), file=sys.stderr); "
            "print('x'); sys.stdout.flush(); "
            "os.execvp('sh', ['sh', '-c', 'for f in 0 1 2; do "
            "[ -e /proc/self/fd/$f ] || echo closed $f >&2; done'])")
    out = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         pass_fds=(), close_fds=True,
                         preexec_fn=lambda: os.close(1))
    assert out.stdout == ""
    assert out.stderr.split("\n")[:2] == ["[1]", "closed 1"], out.stderr

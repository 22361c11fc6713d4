"""exec and enter in nsenter's corners (issue 14; the exec options of issue 8).

- a closed stdin, stdout or stderr: the command runs with the same fds closed; the CLI
  never prints a traceback, and its own error path (a closed stderr) still exits 2;
- a broken guest (its pid namespace's init gone, an nsfs file gone): exit 1, one line
  naming what is gone and the fix;
- job control under a real terminal and a job-control shell (bash -i): a command that
  stops itself stops the CLI, the shell gets its prompt back, `fg` goes back into the guest;
- dying by signal: the CLI dies of the command's signal (a shell loop stops at one Ctrl-C),
  without a core for SIGQUIT;
- the environment: the caller's (no locale coercion), HOME/USER/LOGNAME from the guest's
  passwd, the guest markers, --env, --keep-env, enter's SHELL;
- --user, --wd, options stopping at the command, exit status passed through.
"""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

import pytest

from conftest import wait_for

MM = f"{sys.executable} -m mirrormount"
KINDS = {"plain": ("c0",), "pid": ("p0", "--ns", "pid")}

# What the command sees of fds 0, 1 and 2, written to a file (fd 1 may be closed).
FD_PROBE = ("import os\nst=[]\nfor fd in (0, 1, 2):\n    try:\n        os.fstat(fd)\n"
            "        st.append('open')\n    except OSError:\n        st.append('closed')\n"
            "open('/tmp/fds', 'w').write(' '.join(st))\n")


# ============================================================== closed standard fds
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("redir, expect", [
    (">&-", "open closed open"), ("2>&-", "open open closed"), ("<&-", "closed open open"),
    (">&- 2>&-", "open closed closed"), ("<&- >&- 2>&-", "closed closed closed")])
def test_closed_std_fds_stay_closed_in_the_command(sandbox, kind, redir, expect):
    name, *opts = KINDS[kind]
    assert sandbox.mm("create", name, *opts).returncode == 0
    sandbox.env["PROBE"] = FD_PROBE
    r = sandbox.sh(f"rm -f /tmp/fds; {MM} exec {name} -- {sys.executable} -c "
                   f"\"$PROBE\" {redir}; echo rc=$?", check=False)
    assert r.stdout.split() == ["rc=0"] and r.stderr == "", (r.stdout, r.stderr)
    assert sandbox.sh("cat /tmp/fds").stdout == expect


def test_closed_stdout_true_and_false(sandbox):
    assert sandbox.mm("create", "c0").returncode == 0
    r = sandbox.sh(f"{MM} exec c0 -- true >&-; echo a=$?; {MM} exec c0 -- false 2>&-; "
                   f"echo b=$?; {MM} exec c0 -- true >&- 2>&- <&-; echo c=$?")
    assert r.stdout.split() == ["a=0", "b=1", "c=0"] and r.stderr == "", r


def test_the_error_path_with_a_closed_stderr_still_exits_2(sandbox):
    r = sandbox.sh(f"{MM} exec nosuch -- true 2>&-; echo rc=$?; "
                   f"{MM} exec nosuch -- true >&- 2>&-; echo rc=$?")
    assert r.stdout.split() == ["rc=2", "rc=2"] and r.stderr == "", r
    assert sandbox.mm("create", "c0").returncode == 0
    r = sandbox.sh(f"{MM} exec c0 -- /no/such 2>&-; echo rc=$?")
    assert r.stdout.split() == ["rc=127"], r


# ============================================================== broken guests
@pytest.mark.parametrize("verb", [("exec", "p0", "--", "true"), ("enter", "p0")])
def test_a_pid_namespace_without_its_init_is_named(sandbox, verb):
    assert sandbox.mm("create", "p0", "--ns", "pid").returncode == 0
    sandbox.sh("pkill -KILL -x mm-reaper")
    assert wait_for(lambda: sandbox.sh("pgrep -x mm-reaper", check=False).returncode == 1)
    r = sandbox.mm(*verb, input="")
    assert r.returncode == 1, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "init of its pid namespace" in lines[0], r.stderr
    assert "hint: mirrormount start p0" in lines[0]
    status = sandbox.mm("status", "p0")
    assert "hint: mirrormount start p0" in status.stdout + status.stderr   # one fix, said alike
    # ... and the fix works: a fresh pid namespace with its reaper, then exec runs again
    assert sandbox.mm("start", "p0").returncode == 0
    r = sandbox.mm("exec", "p0", "--", "true")
    assert r.returncode == 0, r.stderr
    assert sandbox.mm("destroy", "--force", "p0").returncode == 0


@pytest.mark.parametrize("verb", [("exec", "n0", "--", "true"), ("enter", "n0")])
def test_a_namespace_whose_nsfs_file_is_gone_is_named(sandbox, verb):
    assert sandbox.mm("create", "n0", "--ns", "net,ipc").returncode == 0
    sandbox.sh("umount /run/mirrormount/n0/ns/net")
    r = sandbox.mm(*verb, input="")
    assert r.returncode == 1, r
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "net namespace is not held" in lines[0], r.stderr
    assert "hint:" in lines[0]


# ============================================================== a terminal and bash -i
class Terminal:
    """bash -i on a pty, in the sandbox, as its own session (job control on)."""

    def __init__(self, sb) -> None:
        self.master, slave = pty.openpty()
        env = {**sb.env, "PS1": "$ ", "TERM": "dumb"}
        self.proc = subprocess.Popen(
            sb.enter_argv() + ["setsid", "-c", "bash", "--norc", "--noprofile", "-i"],
            stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.text, self.pos = "", 0
        self.read_until("$ ")

    def type(self, line: str) -> None:
        os.write(self.master, line.encode())

    def read_until(self, needle: str, timeout: float = 30) -> str:
        """What the terminal showed from the last needle found to the end of this one."""
        deadline = time.monotonic() + timeout
        while needle not in self.text[self.pos:] and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
                if not chunk:
                    break
                self.text += chunk
        at = self.text.find(needle, self.pos)
        assert at >= 0, (needle, self.text)
        out, self.pos = self.text[self.pos:at + len(needle)], at + len(needle)
        return out

    def settle(self) -> None:
        """Until the shell reads what is typed. When a job stops, bash takes the terminal
        back and resets its modes, which can flush input typed meanwhile: a `fg` typed at
        once arrived as `g` (the first letter lost). A marker is typed until it runs."""
        for i in range(1000, 1040):
            self.type(f"echo settle-$(({i}))\n")
            try:
                self.read_until(f"settle-{i}", timeout=0.5)
                return
            except AssertionError:
                continue
        raise AssertionError(("the shell never read its input", self.text))

    def close(self) -> None:
        try:
            self.type("exit\n")
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self.master)


@pytest.fixture
def terminal(sandbox):
    t = Terminal(sandbox)
    try:
        yield t
    finally:
        t.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_command_that_stops_itself_stops_the_cli_and_fg_resumes_it(sandbox, terminal,
                                                                        kind):
    name, *opts = KINDS[kind]
    assert sandbox.mm("create", name, *opts).returncode == 0
    # $((...)): what the command prints is not in what the terminal echoes of the line
    terminal.type(f"{MM} exec {name} -- sh -c 'echo stop-$((1+1)); kill -STOP $$; "
                  "echo resumed-$((6+1)); exit 7'\n")
    out = terminal.read_until("Stopped")
    assert "stop-2" in out and "resumed-7" not in out
    terminal.read_until("$ ")
    terminal.settle()
    terminal.type("fg\n")
    terminal.read_until("resumed-7")
    terminal.type("echo rc=$?\n")
    terminal.read_until("rc=7")


def test_ctrl_z_then_fg_goes_back_into_the_guest(sandbox, terminal):
    assert sandbox.mm("create", "c0").returncode == 0
    terminal.type(f"{MM} exec c0 -- sh -c 'echo ready-$((1)); read x; echo got-$x; exit 3'\n")
    terminal.read_until("ready-1")      # the command waits for its line
    terminal.type("\x1a")
    terminal.read_until("Stopped")
    terminal.read_until("$ ")
    terminal.settle()
    terminal.type("fg\n")
    time.sleep(0.5)
    terminal.type("hello\n")
    terminal.read_until("got-hello")
    terminal.type("echo rc=$?\n")
    terminal.read_until("rc=3")


@pytest.mark.parametrize("kind", KINDS)
def test_one_ctrl_c_stops_a_shell_loop(sandbox, terminal, kind):
    name, *opts = KINDS[kind]
    assert sandbox.mm("create", name, *opts).returncode == 0
    terminal.type(f"for i in 1 2 3; do {MM} exec {name} -- sh -c 'echo in-$0; sleep 20' $i;"
                  " echo next-$i; done; echo loop-done\n")
    terminal.read_until("in-1")
    terminal.type("\x03")
    out = terminal.read_until("$ ")
    assert "next-" not in out and "in-2" not in out, terminal.text
    terminal.type("echo rc=$?\n")
    terminal.read_until("rc=130")


# ============================================================== dying by signal
WAIT_STATUS = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execvp(sys.argv[1], "
               "sys.argv[1:])\n_, st = os.waitpid(pid, 0)\nprint(os.WIFSIGNALED(st) and "
               "os.WTERMSIG(st), os.WCOREDUMP(st), os.WIFEXITED(st) and os.WEXITSTATUS(st))\n")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sig", ["INT", "QUIT", "TERM", "KILL", "PIPE"])
def test_the_cli_dies_of_the_signal_the_command_died_of(sandbox, kind, sig):
    name, *opts = KINDS[kind]
    assert sandbox.mm("create", name, *opts).returncode == 0
    r = sandbox.run(["sh", "-c", "ulimit -c unlimited 2>/dev/null; exec \"$@\"", "sh",
                     sys.executable, "-c", WAIT_STATUS, sys.executable, "-m", "mirrormount",
                     "exec", name, "--", "sh", "-c", f"kill -{sig} $$"])
    import signal as s
    assert r.stdout.split() == [str(int(getattr(s, "SIG" + sig))), "False", "False"], r
    assert r.stderr == "", r.stderr


def test_a_command_exit_status_is_not_a_signal(sandbox):
    assert sandbox.mm("create", "c0").returncode == 0
    r = sandbox.run([sys.executable, "-c", WAIT_STATUS, sys.executable, "-m", "mirrormount",
                     "exec", "c0", "sh", "-c", "exit 130"])
    assert r.stdout.split() == ["False", "False", "130"], r


def test_suspend_inside_enter_gives_the_terminal_back_and_fg_returns(sandbox, terminal):
    """The interactive shell in the guest takes a process group of its own and the terminal;
    `suspend` stops it: the CLI stops too, the outer shell gets its prompt, `fg` goes back
    into the guest's shell."""
    assert sandbox.mm("create", "c0").returncode == 0
    terminal.type(f"SHELL=/bin/bash {MM} enter c0\n")
    time.sleep(2)
    terminal.type("PS1='in> '\n")
    terminal.read_until("in> ")
    terminal.type("suspend\n")
    terminal.read_until("Stopped")
    terminal.read_until("$ ")
    terminal.settle()
    terminal.type("fg\n")
    time.sleep(1)
    terminal.type("echo inside-$((2+3))\n")
    terminal.read_until("inside-5")
    terminal.type("exit 4\n")
    terminal.read_until("$ ")
    terminal.type("echo rc=$?\n")
    terminal.read_until("rc=4")

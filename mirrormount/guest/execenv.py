"""The environment and the user of a command run in a guest (exec, enter).

What the command gets, as `machinectl shell` does it (systemd's machine shell), on the base
of the caller's own environment, as nsenter(1) passes it:

- the caller's environment as the caller made it: the interpreter's locale coercion
  (PEP 538: a C/POSIX LC_CTYPE makes Python add LC_CTYPE=C.UTF-8 to its own environ) is not
  passed on. The original is read from /proc/self/environ, the block the kernel gave us at
  execve (proc(5): later setenv calls do not change it);
- HOME, USER and LOGNAME from the guest's passwd for the user the command runs as (root by
  default, or --user);
- SHELL, for `enter`, set to the shell actually run;
- the guest markers container=mirrormount (the variable systemd-detect-virt reads for
  containers) and MIRRORMOUNT_GUEST=NAME;
- then each --env K=V, in order.

--keep-env keeps the caller's environment as it is (only --env adds to it).

The guest's passwd and group are read by the child that entered the guest's mount
namespace, so every path resolves in the guest's root; read_guest_file refuses anything
but a regular file (a FIFO would block us) and reads at most MAX_FILE bytes.

Pure functions except read_guest_file and caller_environ. Privilege: none.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping, Sequence

from ..record import record
from ..errors import UsageError

MARKERS = ("container", "MIRRORMOUNT_GUEST")
MAX_FILE = 4 << 20


@record(frozen=True)
class Passwd:
    """One line of passwd(5)."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@record(frozen=True)
class User:
    """Who the command runs as: ids and the passwd facts its environment takes."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str


def parse_env_entries(blob: bytes) -> dict[str, str]:
    """An environ block (NUL-separated K=V, as /proc/PID/environ) as a dict; entries
    without '=' are skipped, a later duplicate wins (as getenv's first match would not:
    such a block is malformed anyway)."""
    env: dict[str, str] = {}
    for entry in blob.split(b"\0"):
        key, eq, value = entry.partition(b"=")
        if eq and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    return env


def caller_environ(proc: str = "/proc") -> dict[str, str]:
    """The environment this process was started with (before the interpreter's locale
    coercion). Falls back to os.environ when /proc cannot be read."""
    try:
        with open(os.path.join(proc, "self/environ"), "rb") as f:
            return parse_env_entries(f.read())
    except OSError:
        return dict(os.environ)


def parse_env_option(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """--env K=V values. UsageError (exit 2) for anything else."""
    out = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key or "\0" in item:
            raise UsageError(f"--env {item!r}: expected NAME=VALUE")
        out.append((key, value))
    return tuple(out)


def parse_passwd(text: str) -> list[Passwd]:
    """passwd(5) lines; malformed ones (a guest may write anything) are skipped."""
    out = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) != 7 or not f[0] or f[0].startswith(("+", "-", "#")):
            continue
        try:
            out.append(Passwd(f[0], int(f[2]), int(f[3]), f[5], f[6]))
        except ValueError:
            continue
    return out


def parse_group(text: str) -> list[tuple[str, int, tuple[str, ...]]]:
    """group(5) lines as (name, gid, members); malformed ones skipped."""
    out = []
    for line in text.splitlines():
        f = line.split(":")
        if len(f) != 4 or not f[0] or f[0].startswith(("+", "-", "#")):
            continue
        try:
            out.append((f[0], int(f[2]), tuple(m for m in f[3].split(",") if m)))
        except ValueError:
            continue
    return out


def resolve_user(spec: str | None, passwd: str, group: str, guest: str) -> User:
    """The user to run as: `spec` is a name or a numeric uid looked up in the guest's passwd
    (None: root). Supplementary groups: the primary gid and every group of the guest's group
    file that lists the name (initgroups(3)). UsageError when --user names nobody there.

    Root without a passwd entry (a rootfs with no /etc/passwd) is still root: HOME is /root
    and the name "root", as su(1) would have it."""
    entries = parse_passwd(passwd)
    if spec is None or spec in ("root", "0"):
        entry = next((e for e in entries if e.uid == 0), None)
        if entry is None:
            return User("root", 0, 0, (0,), "/root", "/bin/sh")
    else:
        entry = next((e for e in entries if e.name == spec), None)
        if entry is None and spec.isdigit():
            entry = next((e for e in entries if e.uid == int(spec)), None)
        if entry is None:
            raise UsageError(f"--user {spec}: no such user in guest {guest}'s /etc/passwd; "
                             "nothing was run")
    groups = [entry.gid] + [gid for _, gid, members in parse_group(group)
                            if entry.name in members and gid != entry.gid]
    return User(entry.name, entry.uid, entry.gid, tuple(dict.fromkeys(groups)),
                entry.home or "/", entry.shell)


def command_env(caller: Mapping[str, str], user: User, guest: str,
                extra: Sequence[tuple[str, str]] = (), keep_env: bool = False,
                shell: str | None = None) -> dict[str, str]:
    """The command's environment (see the module docstring for the rules)."""
    env = dict(caller)
    if not keep_env:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
        if shell is not None:
            env["SHELL"] = shell
        env["container"] = "mirrormount"
        env["MIRRORMOUNT_GUEST"] = guest
    for key, value in extra:
        env[key] = value
    return env


def shell_candidates(caller: Mapping[str, str], user_shell: str) -> list[str]:
    """enter's shells, tried in order until one exists in the guest: the caller's $SHELL,
    the user's login shell from the guest's passwd, /bin/sh."""
    out = [s for s in (caller.get("SHELL"), user_shell, "/bin/sh") if s and s.startswith("/")]
    return list(dict.fromkeys(out))


def read_guest_file(path: str) -> str:
    """A small text file of the guest (passwd, group), read by a process whose root is the
    guest's: "" when it is missing or not a regular file (never opened blocking: O_NONBLOCK
    keeps a FIFO from hanging us), at most MAX_FILE bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        data = b""
        while len(data) < MAX_FILE:
            chunk = os.read(fd, MAX_FILE - len(data))
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "surrogateescape")
    except OSError:
        return ""
    finally:
        os.close(fd)

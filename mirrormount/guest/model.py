"""The guest vocabulary, defined and validated in one place: guest names (with reserved
words), namespace kinds (one table), the Layout of BASE and STATE, and propagation modes.

The planner, the recipe parser, the CLI and the busy finder all take these from here, so a
name or a kind is checked by one function whichever way it arrives. Validation raises
UsageError (exit 2: bad input, nothing changed).

Pure: nothing here touches the system.
"""
from __future__ import annotations

import os
import re

from ..record import record
from ..errors import UsageError
from ..kernel import syscalls as sc


def printable(word: str) -> str:
    """word for an error message: as typed, or as its repr when it is empty or holds a
    character that is not printable. An error is one line on stderr, so a newline or CR a
    user put in a word must not start another; a lone surrogate (an undecodable byte from
    argv) could not even be written; and an empty word would show as nothing."""
    return word if word and word.isprintable() else repr(word)


# ----------------------------------------------------------------------------- names
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Words a guest may not be called: busy reports and watch events name the host "host".
RESERVED_NAMES = frozenset({"host"})


def validate_name(name: str) -> str:
    """Return name if it is a valid guest name; raise UsageError otherwise.
    1-63 of [A-Za-z0-9_.-], starting with a letter or digit, not a reserved word."""
    if not NAME_RE.fullmatch(name or ""):
        raise UsageError(f"invalid guest name {name!r}: use 1-63 of [A-Za-z0-9_.-], "
                         "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise UsageError(f"invalid guest name {name!r}: it is reserved "
                         f"({', '.join(sorted(RESERVED_NAMES))})")
    return name


def is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except UsageError:
        return False
    return True


# ----------------------------------------------------------------------------- namespaces
@record(frozen=True)
class NsKind:
    """One kind of namespace (namespaces(7)). ``proc`` is its /proc/PID/ns name;
    ``unshare_opt`` is unshare(1)'s option, for --dry-run's shell lines."""

    name: str
    clone_flag: int
    proc: str
    unshare_opt: str


# In setns order (util-linux nsenter's): the mount namespace last, since entering it also
# moves root and cwd, and /proc paths must stay valid until then. pid applies to children.
NS_KINDS: tuple[NsKind, ...] = (
    NsKind("uts", sc.CLONE_NEWUTS, "uts", "--uts"),
    NsKind("ipc", sc.CLONE_NEWIPC, "ipc", "--ipc"),
    NsKind("net", sc.CLONE_NEWNET, "net", "--net"),
    NsKind("pid", sc.CLONE_NEWPID, "pid", "--pid --fork"),
    NsKind("cgroup", sc.CLONE_NEWCGROUP, "cgroup", "--cgroup"),
    NsKind("mnt", sc.CLONE_NEWNS, "mnt", "--mount"),
)
KIND = {k.name: k for k in NS_KINDS}
SETNS_ORDER = tuple(k.name for k in NS_KINDS)
# What --ns accepts: every kind but mnt, which every guest has.
EXTRA_KINDS = tuple(k for k in SETNS_ORDER if k != "mnt")


def parse_kinds(spec: str | None) -> frozenset[str]:
    """'uts,net' -> {'uts','net'}. mnt is implied and dropped; unknown kinds are a
    UsageError naming them."""
    if not spec:
        return frozenset()
    return validate_kinds(k.strip() for k in spec.split(",") if k.strip())


def validate_kinds(kinds: object) -> frozenset[str]:
    """An iterable of kind names -> a frozenset of the extra kinds; UsageError if unknown."""
    try:
        given = {str(k) for k in kinds}  # type: ignore[attr-defined]
    except TypeError:
        raise UsageError("namespaces must be a list of kinds") from None
    bad = sorted(given - set(EXTRA_KINDS) - {"mnt"})
    if bad:
        raise UsageError(f"unknown namespace kind(s) {', '.join(map(printable, bad))}: "
                         f"choose from {','.join(EXTRA_KINDS)}")
    return frozenset(given - {"mnt"})


def ordered_kinds(kinds: object) -> tuple[str, ...]:
    """The given kinds plus mnt, in setns order."""
    wanted = set(kinds) | {"mnt"}  # type: ignore[call-overload]
    return tuple(k for k in SETNS_ORDER if k in wanted)


def clone_flags(kinds: object) -> int:
    flags = 0
    for k in kinds:  # type: ignore[attr-defined]
        flags |= KIND[k].clone_flag
    return flags


# ----------------------------------------------------------------------------- propagation
# mirror:      the mirror and the guest are one peer group per mount, tied to nothing on
#              the host (rprivate, then rshared).
# mirror+host: the same, and the mirror is also a slave of the host's mounts under the
#              rootfs, so host mounts arrive in the guest (rslave, then rshared).
PROPAGATION_MODES = ("mirror", "mirror+host")
DEFAULT_PROPAGATION = "mirror"


def _choice(value: str | None, choices: tuple[str, ...], default: str, what: str) -> str:
    """value, or the default when it is None; UsageError (one line) for anything else."""
    if value is None:
        return default
    if value not in choices:
        raise UsageError(f"unknown {what} {printable(value)}: choose {' or '.join(choices)}")
    return value


def validate_propagation(mode: str | None) -> str:
    return _choice(mode, PROPAGATION_MODES, DEFAULT_PROPAGATION, "propagation")


# A hostname is an RFC 1123 (section 2.1) host name: dot-separated labels of letters, digits
# and hyphens, each 1-63 long and neither starting nor ending with a hyphen. The kernel
# takes at most 64 bytes (__NEW_UTS_LEN, include/uapi/linux/utsname.h); all ASCII, so
# characters are bytes. Anything else would reach sethostname() in the guest's spawn, where
# a NUL fails only after the namespaces exist, and a newline or space would forge lines and
# words wherever the hostname is shown.
HOSTNAME_MAX = 64
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def validate_hostname(hostname: str | None) -> str | None:
    """None, or an RFC 1123 host name of at most 64 bytes (see HOSTNAME_RE)."""
    if hostname is not None and not (len(hostname) <= HOSTNAME_MAX
                                     and HOSTNAME_RE.fullmatch(hostname)):
        raise UsageError(f"invalid hostname {hostname!r}: use at most "
                         f"{HOSTNAME_MAX} letters, digits, '-' and '.', in labels of 1-63 "
                         "that neither start nor end with '-' (RFC 1123)")
    return hostname


# ----------------------------------------------------------------------------- confinement
# What every process mirrormount starts in a guest (its init, exec, enter) runs under:
# mirror: a seccomp filter refuses what would cut the guest off its mirror (mount(2) with
#         MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE, and mount_setattr), and opening namespaces
#         by file handle (kernel/confine.py says why);
# none:   no filter; the guest can break its mirror (`repair` can mend it).
CONFINE_MODES = ("mirror", "none")
DEFAULT_CONFINE = "mirror"


def validate_confine(mode: str | None) -> str:
    return _choice(mode, CONFINE_MODES, DEFAULT_CONFINE, "confinement")


# Capability numbers (include/uapi/linux/capability.h; capabilities(7)), by the name
# capsh(1) and setpriv(1) use without the "cap_" prefix.
CAPABILITIES: dict[str, int] = {
    "chown": 0, "dac_override": 1, "dac_read_search": 2, "fowner": 3, "fsetid": 4,
    "kill": 5, "setgid": 6, "setuid": 7, "setpcap": 8, "linux_immutable": 9,
    "net_bind_service": 10, "net_broadcast": 11, "net_admin": 12, "net_raw": 13,
    "ipc_lock": 14, "ipc_owner": 15, "sys_module": 16, "sys_rawio": 17, "sys_chroot": 18,
    "sys_ptrace": 19, "sys_pacct": 20, "sys_admin": 21, "sys_boot": 22, "sys_nice": 23,
    "sys_resource": 24, "sys_time": 25, "sys_tty_config": 26, "mknod": 27, "lease": 28,
    "audit_write": 29, "audit_control": 30, "setfcap": 31, "mac_override": 32,
    "mac_admin": 33, "syslog": 34, "wake_alarm": 35, "block_suspend": 36, "audit_read": 37,
    "perfmon": 38, "bpf": 39, "checkpoint_restore": 40,
}


def validate_caps(names: object) -> tuple[str, ...]:
    """Capability names ("sys_admin", "CAP_SYS_ADMIN", any case) -> sorted canonical names
    ("sys_admin"), each once; UsageError naming the unknown ones."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise UsageError("capabilities must be a list of names")
    given = [str(n).strip() for n in names]
    canon = {n: n.lower().removeprefix("cap_") for n in given if n}
    bad = sorted(n for n, c in canon.items() if c not in CAPABILITIES)
    if bad:
        raise UsageError(f"unknown capability {', '.join(map(printable, bad))}: use names "
                         "such as sys_admin or net_raw (capabilities(7))")
    return tuple(sorted(set(canon.values()), key=CAPABILITIES.__getitem__))


def parse_caps(spec: str | None) -> tuple[str, ...]:
    """--drop-caps text: 'sys_admin,net_raw' -> ('net_raw', 'sys_admin') in number order."""
    if not spec:
        return ()
    return validate_caps(w for w in spec.split(",") if w.strip())


def cap_numbers(names: object) -> list[int]:
    return [CAPABILITIES[n] for n in validate_caps(names)]


# ----------------------------------------------------------------------------- lifecycle
# Kinds a guest may take from another guest (--join KIND=GUEST): setns(2) onto the other
# guest's nsfs pin. Not mnt: a guest's mount namespace is what its mirror is made of. Not
# pid: a pid namespace belongs to its init (stop ends it, and with it every process of the
# joiner) and /proc shows it only from the mount namespace its init mounted it in.
JOINABLE_KINDS = ("uts", "ipc", "net", "cgroup")


def parse_joins(specs: object) -> tuple[tuple[str, str], ...]:
    """["net=c1", "uts=c2"] -> (("uts", "c2"), ("net", "c1")) in setns order; UsageError for a
    kind that cannot be joined, a bad guest name, or a kind given twice."""
    out: dict[str, str] = {}
    for spec in specs or ():        # type: ignore[attr-defined]
        kind, eq, guest = str(spec).partition("=")
        kind = kind.strip()
        if not eq or not guest:
            raise UsageError(f"--join {printable(str(spec))}: use KIND=GUEST, e.g. net=c1")
        if kind not in JOINABLE_KINDS:
            raise UsageError(f"--join {printable(str(spec))}: {printable(kind)} cannot be "
                             f"joined: choose from {','.join(JOINABLE_KINDS)} (not mnt: the "
                             "mirror is the mount namespace; not pid: it ends with its init)")
        if kind in out:
            raise UsageError(f"--join: {kind} is given twice")
        out[kind] = validate_name(guest.strip())
    return tuple((k, out[k]) for k in SETNS_ORDER if k in out)


def parse_init(cmd: str | None) -> tuple[str, ...]:
    """--init "CMD ARGS": split as a shell would (shlex, POSIX rules); () for None."""
    import shlex
    if cmd is None:
        return ()
    try:
        words = tuple(shlex.split(cmd))
    except ValueError as exc:
        raise UsageError(f"--init {printable(cmd)}: {exc}") from None
    if not words:
        raise UsageError("--init: an empty command")
    if any("\0" in w for w in words):
        raise UsageError("--init: a word contains a NUL character")
    return words


def parse_signal(spec: str | None) -> int | None:
    """A stop signal by name or number: TERM, SIGTERM, 15, SIGRTMIN+3, RTMIN+3 (signal(7)).
    None stays None; UsageError for anything else."""
    import signal as _signal
    if spec is None:
        return None
    text = spec.strip().upper()
    if text.isdigit():
        num = int(text)
    else:
        text = text if text.startswith("SIG") else "SIG" + text
        base, plus, off = text.partition("+")
        base2, minus, off2 = base.partition("-") if not plus else (base, "", "")
        try:
            if base2 in ("SIGRTMIN", "SIGRTMAX"):
                delta = int(off) if plus else (-int(off2) if minus else 0)
                num = int(getattr(_signal, base2)) + delta
            elif plus or minus:
                raise ValueError
            else:
                num = int(getattr(_signal.Signals, text))
        except (AttributeError, ValueError):
            raise UsageError(f"unknown signal {printable(spec)}: use a name such as TERM, "
                             "SIGRTMIN+3, or a number") from None
    if not 1 <= num <= int(_signal.SIGRTMAX) or num in (int(_signal.SIGKILL),
                                                        int(_signal.SIGSTOP)):
        raise UsageError(f"signal {printable(spec)} cannot be a stop signal (1-"
                         f"{int(_signal.SIGRTMAX)}, not KILL or STOP: KILL is what the "
                         "timeout sends)")
    return num


def signal_name(num: int) -> str:
    """15 -> "SIGTERM"; 37 -> "SIGRTMIN+3"."""
    import signal as _signal
    if int(_signal.SIGRTMIN) <= num <= int(_signal.SIGRTMAX):
        return f"SIGRTMIN+{num - int(_signal.SIGRTMIN)}" if num != int(_signal.SIGRTMIN) \
            else "SIGRTMIN"
    try:
        return _signal.Signals(num).name
    except ValueError:
        return str(num)


@record(frozen=True)
class CreateRequest:
    """What `create` is asked for, before planning (validated by the caller)."""

    name: str
    rootfs: str = "/"
    hostname: str | None = None
    kinds: frozenset[str] = frozenset()     # extra namespace kinds; mnt is implied
    propagation: str = "mirror"
    confine: str = DEFAULT_CONFINE
    drop_caps: tuple[str, ...] = ()
    init: tuple[str, ...] = ()              # argv of the guest's PID 1 (implies pid)
    joins: tuple[tuple[str, str], ...] = ()  # (kind, other guest): setns onto its pin
    stop_signal: str | None = None          # for `stop` of an init-based guest
    start: tuple[str, ...] = ()             # shell commands `start` runs in the guest
    shutdown: tuple[str, ...] = ()          # shell commands `stop` runs first

    @property
    def all_kinds(self) -> tuple[str, ...]:
        """Every kind the guest holds a pin of: its own and the joined ones."""
        return ordered_kinds(set(self.kinds) | ({"uts"} if self.hostname else set())
                             | ({"pid"} if self.init else set())
                             | {k for k, _ in self.joins})


def validate_guest_path(path: str, what: str) -> str:
    """A path inside a guest (mount and umount TARGET, exec --wd, a recipe mount's target):
    absolute, since a relative one has no directory both sides agree on (mount(8) would
    take it from the caller's cwd, which is no guest's). UsageError (exit 2) otherwise:
    "WHAT PATH: give an absolute path inside the guest"."""
    if not path.startswith("/"):
        raise UsageError(f"{what} {path}: give an absolute path inside the guest")
    return path


# ----------------------------------------------------------------------------- layout
def layout_of(base: str, state: str) -> "Layout":
    """The Layout for --base/--state (or MIRRORMOUNT_BASE/_STATE) as given. UsageError for a
    relative path: it would name another place from another directory, and a later command
    run elsewhere (destroy, a systemd unit) would not find what this one made."""
    for what, path in (("--base", base), ("--state", state)):
        if not os.path.isabs(path):
            raise UsageError(f"{what} {path}: give an absolute path (a relative one depends "
                             "on the current directory)")
    return Layout(os.path.normpath(base), os.path.normpath(state))


@record(frozen=True)
class Layout:
    """Where everything lives. BASE holds the mirrors; STATE holds records and nsfs binds."""

    base: str = "/container"
    state: str = "/run/mirrormount"

    def mirror(self, name: str) -> str:
        return f"{self.base.rstrip('/')}/{name}"

    def guest_dir(self, name: str) -> str:
        return f"{self.state.rstrip('/')}/{name}"

    def record(self, name: str) -> str:
        return f"{self.guest_dir(name)}/guest.json"

    def claim(self, name: str) -> str:
        """Written before the mirror is made: proof that the mirror is this STATE's."""
        return f"{self.guest_dir(name)}/claim"

    def ns_dir(self, name: str) -> str:
        return f"{self.guest_dir(name)}/ns"

    def ns_file(self, name: str, kind: str) -> str:
        return f"{self.ns_dir(name)}/{kind}"

    @property
    def nursery_dir(self) -> str:
        return f"{self.state.rstrip('/')}/.nursery"

    @property
    def nursery_file(self) -> str:
        return f"{self.nursery_dir}/mnt"

    def host_path(self, name: str, guest_path: str) -> str:
        """Where a guest path shows on the host, through the mirror."""
        mirror = self.mirror(name)
        return mirror if guest_path in ("", "/") else mirror + "/" + guest_path.lstrip("/")

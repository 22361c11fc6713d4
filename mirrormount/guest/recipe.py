"""Guest recipes: a TOML file that says what `create` would otherwise take as flags, plus the
mounts to make once the guest exists. Pure: text in, frozen records out (tomllib, stdlib).

    [guest]
    rootfs = "/"                       # default "/"
    hostname = "web1"                  # optional: its own UTS namespace
    namespaces = ["pid", "net"]        # optional: uts, ipc, net, pid, cgroup
    propagation = "mirror"             # or "mirror+host"
    confine = "mirror"                 # or "none": the guest may break its mirror
    drop_caps = ["sys_admin"]          # optional: out of every guest process's bounding set
    name = "web1"                      # optional: the guest's name when create gets none
    init = "/sbin/init"                # optional: PID 1 (a string split as a shell would,
                                       # or a list of words); implies a pid namespace
    stop_signal = "SIGRTMIN+3"         # optional: what `stop` sends the init (SIGTERM)
    start = ["/etc/rc.start"]          # optional, init-less: `start` runs each with sh -c
    shutdown = ["/etc/rc.shutdown"]    # optional, init-less: `stop` runs each first
    joins = { net = "c1" }             # optional: namespaces shared with other guests

    [[mount]]                          # zero or more, made in order after the guest exists
    source = "scratch"
    target = "/srv/scratch"            # a guest path
    type = "tmpfs"                     # or bind = true, with a host path as source
    options = "size=64m"
    guest_only = false                 # true: the host mirror cannot see or pin it
"""
from __future__ import annotations

from collections.abc import Callable
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

from ..record import field, record
from ..errors import UsageError
from .model import (DEFAULT_CONFINE, DEFAULT_PROPAGATION, CreateRequest, parse_init,
                    parse_joins, parse_signal, printable, validate_caps, validate_confine,
                    validate_guest_path, validate_hostname, validate_kinds, validate_name,
                    validate_propagation)
from .mountopts import parse as parse_options

GUEST_KEYS = {"rootfs", "hostname", "namespaces", "propagation", "confine", "drop_caps",
              "name", "init", "stop_signal", "start", "shutdown", "joins"}
MOUNT_KEYS = {"source", "target", "type", "options", "bind", "guest_only", "mkdir"}


@record(frozen=True)
class RecipeMount:
    """One mount of a recipe, as `mirrormount mount` takes it."""

    source: str
    target: str
    fstype: str | None = None
    options: str | None = None
    bind: bool = False
    guest_only: bool = False
    mkdir: bool = False             # as `mount --mkdir`: make a missing target first
    where: str = field(default="", compare=False)   # "FILE [[mount]] #N", for messages


@record(frozen=True)
class Recipe:
    """A guest's settings and its mounts, from a TOML recipe or from create's flags."""

    rootfs: str = "/"
    hostname: str | None = None
    kinds: frozenset[str] = frozenset()
    propagation: str = "mirror"
    mounts: tuple[RecipeMount, ...] = ()
    confine: str = DEFAULT_CONFINE
    drop_caps: tuple[str, ...] = ()
    name: str | None = None
    init: tuple[str, ...] = ()
    stop_signal: str | None = None
    start: tuple[str, ...] = ()
    shutdown: tuple[str, ...] = ()
    joins: tuple[tuple[str, str], ...] = ()

    def request(self, name: str) -> CreateRequest:
        return CreateRequest(name, self.rootfs, self.hostname, self.kinds, self.propagation,
                             self.confine, self.drop_caps, self.init, self.joins,
                             self.stop_signal, self.start, self.shutdown)


def _str(table: dict[str, object], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"recipe {where}: {key} must be a string")
    # TOML can spell NUL ("\u0000"); the kernel reads a C string only up to it, so
    # target = "/srv\u0000x" would quietly become /srv. Only a recipe can carry one:
    # command-line arguments cannot.
    if value is not None and "\0" in value:
        raise UsageError(f"recipe {where}: {key} must not contain a NUL character")
    return value


def _bool(table: dict[str, object], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"recipe {where}: {key} must be true or false")
    return value


def _unknown(table: dict[str, object], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise UsageError(f"recipe {where}: unknown key(s) {', '.join(map(printable, extra))}; "
                         f"known: {', '.join(sorted(allowed))}")


def _checked(validate: Callable[[Any], T], value: object, where: str, key: str) -> T:
    try:
        return validate(value)
    except UsageError as exc:
        raise UsageError(f"{where}: {key}: {exc}") from None


def parse_recipe(text: str, origin: str = "recipe") -> Recipe:
    """Validate everything up front: a bad recipe is a usage error and changes nothing."""
    import tomllib      # here: every create builds a Recipe, few parse one (start-up cost)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{origin}: {exc}") from None
    except RecursionError:   # tomllib recurses per nested array or inline table
        raise UsageError(f"{origin}: arrays or tables nested too deeply") from None
    _unknown(data, {"guest", "mount"}, origin)
    guest = data.get("guest", {})
    if not isinstance(guest, dict):
        raise UsageError(f"{origin}: [guest] must be a table")
    _unknown(guest, GUEST_KEYS, f"{origin} [guest]")
    raw_kinds = guest.get("namespaces", [])
    if not isinstance(raw_kinds, list) or not all(isinstance(k, str) for k in raw_kinds):
        raise UsageError(f"{origin} [guest]: namespaces must be a list of strings")
    hostname = _str(guest, "hostname", f"{origin} [guest]")
    propagation = _str(guest, "propagation", f"{origin} [guest]", DEFAULT_PROPAGATION)
    # the one validation of each value (model.py), named with the key it came from
    kinds = _checked(validate_kinds, raw_kinds, f"{origin} [guest]", "namespaces")
    propagation = _checked(validate_propagation, propagation, f"{origin} [guest]",
                           "propagation")
    _checked(validate_hostname, hostname, f"{origin} [guest]", "hostname")
    confine = _checked(validate_confine,
                       _str(guest, "confine", f"{origin} [guest]", DEFAULT_CONFINE),
                       f"{origin} [guest]", "confine")
    raw_caps = guest.get("drop_caps", [])
    if not isinstance(raw_caps, list) or not all(isinstance(c, str) for c in raw_caps):
        raise UsageError(f"{origin} [guest]: drop_caps must be a list of strings")
    drop_caps = _checked(validate_caps, raw_caps, f"{origin} [guest]", "drop_caps")
    life = _lifecycle(guest, f"{origin} [guest]")
    mounts = []
    raw_mounts = data.get("mount", [])
    if not isinstance(raw_mounts, list):
        raise UsageError(f"{origin}: use [[mount]] for each mount")
    for i, m in enumerate(raw_mounts, 1):
        where = f"{origin} [[mount]] #{i}"
        if not isinstance(m, dict):
            raise UsageError(f"{where}: must be a table")
        _unknown(m, MOUNT_KEYS, where)
        source, target = _str(m, "source", where), _str(m, "target", where)
        if not source or not target:
            raise UsageError(f"{where}: source and target are required")
        validate_guest_path(target, f"{where}: target")
        bind = _bool(m, "bind", where)
        fstype = _str(m, "type", where)
        if bind == (fstype is not None):
            raise UsageError(f"{where}: give either type = \"...\" or bind = true")
        options = _str(m, "options", where)
        try:
            # Refused options are known before any guest is made (the filesystem's own
            # options are judged by the kernel when the mount is made).
            parse_options(options, bind=bind)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        mounts.append(RecipeMount(source, target, fstype, options, bind,
                                  _bool(m, "guest_only", where), _bool(m, "mkdir", where),
                                  where=where))
    return Recipe(rootfs=_str(guest, "rootfs", f"{origin} [guest]", "/") or "/",
                  hostname=hostname, kinds=kinds, propagation=propagation,
                  mounts=tuple(mounts), confine=confine, drop_caps=drop_caps, **life)


def _strings(table: dict[str, object], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                              for v in value):
        raise UsageError(f"{where}: {key} must be a list of commands (non-empty strings), "
                         f"e.g. {key} = [\"/etc/rc.{key}\"]")
    if any("\0" in v for v in value):
        raise UsageError(f"{where}: {key} must not contain a NUL character")
    return tuple(value)


def _lifecycle(guest: dict[str, object], where: str) -> dict[str, Any]:
    """name, init, stop_signal, start, shutdown and joins of [guest], each validated by the
    function the command line uses (model.py), the error naming the key."""
    name = _str(guest, "name", where)
    if name is not None:
        _checked(validate_name, name, where, "name")
    raw_init = guest.get("init")
    if raw_init is None:
        init: tuple[str, ...] = ()
    elif isinstance(raw_init, str):
        init = _checked(parse_init, raw_init, where, "init")
    elif isinstance(raw_init, list) and raw_init and all(isinstance(w, str) and "\0" not in w
                                                         for w in raw_init):
        init = tuple(raw_init)
    else:
        raise UsageError(f"{where}: init must be a command string (\"/sbin/init\") or a "
                         "non-empty list of words")
    stop_signal = _str(guest, "stop_signal", where)
    _checked(parse_signal, stop_signal, where, "stop_signal")
    start, shutdown = _strings(guest, "start", where), _strings(guest, "shutdown", where)
    if init and (start or shutdown):
        raise UsageError(f"{where}: start and shutdown are for init-less guests; an init "
                         "runs its own (give init, or start/shutdown)")
    raw_joins = guest.get("joins", {})
    if not isinstance(raw_joins, dict) or not all(isinstance(v, str)
                                                  for v in raw_joins.values()):
        raise UsageError(f"{where}: joins must be a table of kind = \"guest\", e.g. "
                         "joins = { net = \"c1\" }")
    joins = _checked(parse_joins, [f"{k}={v}" for k, v in raw_joins.items()], where, "joins")
    return {"name": name, "init": init, "stop_signal": stop_signal, "start": start,
            "shutdown": shutdown, "joins": joins}


def load_recipe(path: str) -> Recipe:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:    # TOML 1.0: "A TOML file must be a valid UTF-8 encoded Unicode document."
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"recipe {path}: not UTF-8 (byte {exc.start})") from None
    return parse_recipe(text, path)

"""mount(8)'s -o text, parsed into what the new mount API needs. Pure: no syscalls.

`mirrormount mount` makes every mount as a detached tree (guest/detached.py): a new
filesystem through fsopen(2) -> fsconfig(2) -> fsmount(2), a bind through open_tree(2); then
mount_setattr(2) on that tree, then move_mount(2). So each option of mount(8) lands in one
of these places, or is refused (exit 2, nothing changed) with the reason:

==================  =========================================================================
per-mount           ro/rw, nosuid/suid, nodev/dev, noexec/exec, nodiratime/diratime,
attributes          nosymfollow/symfollow, and the atime family (noatime, relatime,
                    strictatime, atime, norelatime, nostrictatime): mount_setattr(2)
                    attr_set/attr_clr on the detached tree, for binds and new filesystems
                    alike. The guest's copy inherits them when the tree is attached.
superblock flags    ro/rw, sync/async, dirsync, lazytime/nolazytime, mand/nomand: fsconfig(2)
                    FSCONFIG_SET_FLAG, new filesystems only (the kernel's own table:
                    fs/fs_context.c, common_set_sb_flag / common_clear_sb_flag). ro/rw set
                    both the superblock and the mount, as mount(2)'s MS_RDONLY does. A bind
                    shares its source's superblock with every other mount of it, so these
                    are refused with --bind (mount(2) would ignore them there silently).
no fsconfig key     silent/loud: accepted, no effect. MS_SILENT only hushes a filesystem while
                    it probes its source; with fsopen the kernel hands those messages to the
                    caller on the context fd instead, and mirrormount shows them when the
                    mount fails. iversion/noiversion: refused; the new API has no key for
                    MS_I_VERSION, and mirrormount does not drop an option without saying so.
propagation         shared, private, slave, unbindable and their r* forms: refused. mirrormount
                    owns a guest mount's propagation: it is what makes the mirror.
operations          bind, rbind, move, remount: refused (use --bind; the others are not what
                    `mirrormount mount` does).
userspace only      defaults, auto/noauto, nofail, _netdev, nouser, nousers, noowner,
(util-linux's       nogroup, comment=..., x-..., X-... (but X-mount.*): accepted, no effect;
MNT_USERSPACE_MAP)  they steer fstab, `mount -a`, boot ordering or utab, none of which
                    mirrormount has. `defaults` is a no-op, as in libmount.
                    user[=], users, owner, group: refused (fstab permission for ordinary
                    users; mount(8) also implies nosuid,nodev[,noexec] with them, which
                    mirrormount will not guess). loop, offset=, sizelimit=, encryption=,
                    helper=, uhelper=, verity.*, X-mount.*: refused, they are mount(8)'s own
                    work (losetup(8) first, then mount the device).
everything else     filesystem data: fsconfig(2) FSCONFIG_SET_STRING key=value (or SET_FLAG
                    key), one call per option, in the order typed, so the filesystem itself
                    judges it ("tmpfs: Unknown parameter 'x'") before anything is created.
                    With --bind there is no filesystem to give it to: refused.
==================  =========================================================================

Later options override earlier ones, as in mount(8). The atime setting is one value, not a
set of bits (mount_setattr(2), MOUNT_ATTR__ATIME): noatime, relatime and strictatime choose
it; a no-form undoes only its own positive form and otherwise leaves the choice as it was:
atime and nostrictatime then mean the kernel default (relatime), norelatime means strictatime
(the remaining mode that updates atime; runc and crun read it the same way). Empty items
(``ro,,noatime``) are skipped, as libmount does; a double-quoted value may hold commas
(``context="a,b"``), as in mount(8).

Sources: mount(8) "FILESYSTEM-INDEPENDENT MOUNT OPTIONS"; util-linux libmount/src/optmap.c
(the option maps); mount_setattr(2); fsconfig(2); Linux fs/fs_context.c; fs/namespace.c.
"""
from __future__ import annotations


from ..record import record
from ..errors import UsageError
from ..kernel import syscalls as sc

# --------------------------------------------------------------------------- the tables
# Per-mount attributes: option -> (MOUNT_ATTR_* bit, True to set it / False to clear it).
PER_MOUNT: dict[str, tuple[int, bool]] = {
    "ro": (sc.MOUNT_ATTR_RDONLY, True), "rw": (sc.MOUNT_ATTR_RDONLY, False),
    "nosuid": (sc.MOUNT_ATTR_NOSUID, True), "suid": (sc.MOUNT_ATTR_NOSUID, False),
    "nodev": (sc.MOUNT_ATTR_NODEV, True), "dev": (sc.MOUNT_ATTR_NODEV, False),
    "noexec": (sc.MOUNT_ATTR_NOEXEC, True), "exec": (sc.MOUNT_ATTR_NOEXEC, False),
    "nodiratime": (sc.MOUNT_ATTR_NODIRATIME, True),
    "diratime": (sc.MOUNT_ATTR_NODIRATIME, False),
    "nosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, True),
    "symfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, False),
}
# Names of the per-mount bits for the canonical text: bit -> (when set, when cleared).
_BIT_NAMES = {sc.MOUNT_ATTR_RDONLY: ("ro", "rw"), sc.MOUNT_ATTR_NOSUID: ("nosuid", "suid"),
              sc.MOUNT_ATTR_NODEV: ("nodev", "dev"), sc.MOUNT_ATTR_NOEXEC: ("noexec", "exec"),
              sc.MOUNT_ATTR_NODIRATIME: ("nodiratime", "diratime"),
              sc.MOUNT_ATTR_NOSYMFOLLOW: ("nosymfollow", "symfollow")}

# The atime setting: the three modes, and what each no-form undoes (and becomes instead).
ATIME_MODES = {"relatime": sc.MOUNT_ATTR_RELATIME, "noatime": sc.MOUNT_ATTR_NOATIME,
               "strictatime": sc.MOUNT_ATTR_STRICTATIME}
ATIME_UNDO = {"atime": ("noatime", "relatime"), "nostrictatime": ("strictatime", "relatime"),
              "norelatime": ("relatime", "strictatime")}
_MODE_NAMES = {v: k for k, v in ATIME_MODES.items()}

# Superblock flags fsconfig(2) knows (fs/fs_context.c): option -> its group. The last option
# of a group wins; ro/rw are also per-mount (PER_MOUNT).
SUPERBLOCK: dict[str, str] = {"ro": "ro", "rw": "ro", "sync": "sync", "async": "sync",
                              "dirsync": "dirsync", "lazytime": "lazytime",
                              "nolazytime": "lazytime", "mand": "mand", "nomand": "mand"}

# MS_SILENT has no fsconfig key, and needs none (module docstring): accepted, no effect.
NO_EFFECT_FLAGS = frozenset({"silent", "loud"})

PROPAGATION = frozenset({"shared", "rshared", "private", "rprivate", "slave", "rslave",
                         "unbindable", "runbindable"})

# Refused, each with its reason (exact names, then names that take a value or a prefix).
REFUSED: dict[str, str] = {
    "iversion": "the new mount API (fsconfig) has no key for MS_I_VERSION; the filesystem "
                "decides whether it counts i_version",
    "noiversion": "the new mount API (fsconfig) has no key for MS_I_VERSION; the filesystem "
                  "decides whether it counts i_version",
    "bind": "use --bind",
    "rbind": "a recursive bind would copy the host's submounts into the guest; bind each "
             "mount with --bind",
    "move": "`mirrormount mount` makes a new mount; it does not move one",
    "remount": "`mirrormount mount` makes a new mount; it does not change one",
    "users": "it lets ordinary users mount an fstab entry; mirrormount is root-only and "
             "reads no fstab",
    "owner": "it lets the device's owner mount an fstab entry; mirrormount is root-only and "
             "reads no fstab",
    "group": "it lets the device's group mount an fstab entry; mirrormount is root-only and "
             "reads no fstab",
}
REFUSED_KEYS: dict[str, str] = {   # with or without "=value"
    "user": "it lets ordinary users mount an fstab entry; mirrormount is root-only and reads "
            "no fstab",
    "loop": "set up the loop device with losetup(8), then mount the device",
    "offset": "a loop device option: set it up with losetup(8), then mount the device",
    "sizelimit": "a loop device option: set it up with losetup(8), then mount the device",
    "encryption": "a loop device option: set it up with losetup(8), then mount the device",
    "source": "give the source as the SOURCE argument",
    "helper": "mount(8)'s external helpers are not run by mirrormount",
    "uhelper": "umount(8)'s external helpers are not run by mirrormount",
}
REFUSED_PREFIXES: dict[str, str] = {
    "verity.": "dm-verity is set up by libmount, not by the kernel's mount calls",
    "X-mount.": "mount(8) does that itself (mkdir, subdir, owner, mode, idmap); mirrormount "
                "does not",
}

# Userspace-only options with no effect on an explicit mount (util-linux's userspace map).
USERSPACE_NO_EFFECT = frozenset({"defaults", "auto", "noauto", "nofail", "_netdev", "nouser",
                                 "nousers", "noowner", "nogroup"})
USERSPACE_PREFIXES = ("comment=", "x-", "X-")   # X-mount.* is refused above

# What --bind can take: the per-mount attributes and the atime family.
BIND_OK = ("ro/rw, nosuid/suid, nodev/dev, noexec/exec, nodiratime/diratime, "
           "nosymfollow/symfollow, noatime/relatime/strictatime and their no-forms")


# --------------------------------------------------------------------------- the result
@record(frozen=True)
class MountOptions:
    """What -o asked for, sorted by where it goes (module docstring)."""

    typed: str = ""                        # the -o text as typed ("" for none)
    attr_set: int = 0                      # MOUNT_ATTR_* for mount_setattr's attr_set
    attr_clr: int = 0                      # ... and attr_clr (MOUNT_ATTR__ATIME: mode chosen)
    sb_flags: tuple[str, ...] = ()         # fsconfig FSCONFIG_SET_FLAG keys, one per group,
    #                                        in SUPERBLOCK's group order
    fs_params: tuple[tuple[str, str | None], ...] = ()   # filesystem data, in typed order
    ignored: tuple[str, ...] = ()          # accepted with no kernel effect (docstring)
    bind: bool = False

    @property
    def atime(self) -> str | None:
        """The atime mode chosen ("relatime", "noatime", "strictatime"), or None: unchanged."""
        if not self.attr_clr & sc.MOUNT_ATTR__ATIME:
            return None
        return _MODE_NAMES[self.attr_set & sc.MOUNT_ATTR__ATIME]

    def effect(self) -> tuple[int, int, tuple[str, ...], tuple[tuple[str, str | None], ...]]:
        """Everything the kernel is asked to do (not how it was typed)."""
        return self.attr_set, self.attr_clr, self.sb_flags, self.fs_params

    def canonical(self) -> str:
        """One option per effect, in a fixed order: parse(canonical()) has the same effect."""
        words: list[str] = []
        for bit, (on, off) in _BIT_NAMES.items():
            if self.attr_set & bit:
                words.append(on)
            elif self.attr_clr & bit:
                words.append(off)
        if self.atime is not None:
            words.append(self.atime)
        words += [k for k in self.sb_flags if k not in ("ro", "rw")]
        words += [k if v is None else f"{k}={_quote(v)}" for k, v in self.fs_params]
        return ",".join(words)


def _quote(value: str) -> str:
    return f'"{value}"' if "," in value else value


# --------------------------------------------------------------------------- the parser
def split_options(text: str) -> list[str]:
    """Split on commas outside double quotes (mount(8): ``context="a,b"``); empty items
    dropped. An unclosed quote is bad input."""
    items: list[str] = []
    word: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(word))
            word = []
        else:
            word.append(ch)
    if quoted:
        raise UsageError(f"mount: -o {text}: a double quote is not closed")
    items.append("".join(word))
    return [i for i in items if i]


def _refusal(opt: str) -> str | None:
    """Why `opt` is refused, whatever the mount kind, or None."""
    key = opt.split("=", 1)[0]
    if opt in PROPAGATION:
        return ("mirrormount owns a guest mount's propagation: it is what makes the mirror "
                "(the mount joins a peer group of its own with the guest's copy)")
    if opt in REFUSED:
        return REFUSED[opt]
    if key in REFUSED_KEYS:
        return REFUSED_KEYS[key]
    for prefix, why in REFUSED_PREFIXES.items():
        if opt.startswith(prefix):
            return why
    return None


def parse(text: str | None, *, bind: bool = False) -> MountOptions:
    """Parse mount(8) -o text for a bind (``bind=True``) or a new filesystem.

    Raises UsageError, naming the option and why, for anything refused (module docstring)."""
    typed = text or ""
    attrs: dict[int, bool] = {}
    atime: str | None = None
    sb: dict[str, str] = {}
    params: list[tuple[str, str | None]] = []
    ignored: list[str] = []
    for opt in split_options(typed):
        why = _refusal(opt)
        if why is not None:
            raise UsageError(f"mount: option {opt!r} refused: {why}")
        if opt in PER_MOUNT:
            bit, on = PER_MOUNT[opt]
            attrs[bit] = on
        elif opt in ATIME_MODES:
            atime = opt
        elif opt in ATIME_UNDO:
            undone, becomes = ATIME_UNDO[opt]
            if atime in (None, undone):
                atime = becomes
        if opt in SUPERBLOCK:
            if bind and opt not in PER_MOUNT:
                raise UsageError(
                    f"mount --bind: option {opt!r} refused: it changes the filesystem itself, "
                    "which a bind shares with every other mount of its source (mount(8) "
                    "would ignore it silently)")
            if not bind:
                sb[SUPERBLOCK[opt]] = opt
            continue
        if opt in PER_MOUNT or opt in ATIME_MODES or opt in ATIME_UNDO:
            continue
        if opt in NO_EFFECT_FLAGS or opt in USERSPACE_NO_EFFECT or \
                opt.startswith(USERSPACE_PREFIXES):
            ignored.append(opt)
            continue
        key, eq, value = opt.partition("=")
        if not key:
            raise UsageError(f"mount: option {opt!r}: no name before '='")
        if bind:
            raise UsageError(
                f"mount --bind: unknown option {opt!r}: a bind takes only per-mount options "
                f"({BIND_OK}); a filesystem's own options need a new filesystem (-t TYPE)")
        if eq and len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]          # mount(8)'s quoting; the filesystem gets the value
        params.append((key, value if eq else None))
    attr_set = sum(bit for bit, on in attrs.items() if on)
    attr_clr = sum(bit for bit, on in attrs.items() if not on)
    if atime is not None:
        # mount_setattr(2): the mode goes in attr_set, the whole atime field in attr_clr.
        attr_set |= ATIME_MODES[atime]
        attr_clr |= sc.MOUNT_ATTR__ATIME
    # Groups are independent, so their order means nothing: a fixed one (the table's).
    groups = dict.fromkeys(SUPERBLOCK.values())
    sb_flags = tuple(sb[g] for g in groups if g in sb)
    return MountOptions(typed, attr_set, attr_clr, sb_flags, tuple(params), tuple(ignored),
                        bind)

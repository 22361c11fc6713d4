"""What the busy finder answers, and how it says it: the result types (Copy, Pin, BusyReport),
the pin kinds and their order, and the rendering of pins as plain sentences (shown, who,
describe_pin, explain).

Pure: no /proc, no namespaces. Everything else in mirrormount.busy builds these; the CLI and
`umount` only render them.

Privilege: none.
"""
from __future__ import annotations


from ..record import field, record

PROCESS_KINDS = ("cwd", "root", "exe", "fd", "mmap")
PIN_KINDS = (*PROCESS_KINDS, "submount", "leaked-copy", "detached", "swap", "loop", "nfsd-export",
             "holder", "binfmt", "fanotify", "io_uring")
HOST = "host"

# A report lists its pins in PIN_KINDS order.
HOW_ORDER = {h: i for i, h in enumerate(PIN_KINDS)}


def copy_order(c: Copy) -> tuple:
    """THE order of a report's copies, whatever the order they were found in: the host's
    copies first, then each guest's, by guest name. Ties keep the finder's order (it lists
    the host's own mount namespace before namespaces some process unshared). The same for
    `busy c1:/mnt/x` and `busy /container/c1/mnt/x`, and for text and JSON."""
    return (c.guest != HOST, c.guest)


# ============================================================================ results
@record(frozen=True)
class Copy:
    """One copy of the target mount, as its own namespace lists it."""

    namespace: str
    guest: str
    path: str
    mount_id: int

    def to_json(self) -> dict:
        return {"namespace": self.namespace, "guest": self.guest, "path": self.path,
                "mount_id": self.mount_id}


@record(frozen=True)
class Pin:
    """One reason the target stays busy. pid/comm/user are None for pins no process holds
    (a submount, a swap file, a loop device, a namespace kept by an nsfs file)."""

    how: str
    pid: int | None
    guest_pid: int | None
    comm: str | None
    user: str | None
    guest: str
    path: str
    namespace: str | None
    detail: str = field(default="", compare=False)   # extra words for explain(); not in JSON

    def to_json(self) -> dict:
        return {"how": self.how, "pid": self.pid, "guest_pid": self.guest_pid,
                "comm": self.comm, "user": self.user, "guest": self.guest, "path": self.path,
                "namespace": self.namespace}


@record(frozen=True)
class BusyReport:
    """One target's answer: its device, its copies and what pins them."""

    target: str
    busy: bool
    device: dict
    copies: tuple[Copy, ...]
    pins: tuple[Pin, ...]
    uninspected: int
    # Not part of the JSON contract: what the target resolved to, for rendering.
    mode: str = field(default="mount", compare=False)        # mount | device | residue
    mount_path: str | None = field(default=None, compare=False)
    guest: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # The copies' one order (copy_order), set here where the report is made, so that
        # every renderer (busyview's text for typer and the fast path, to_json) lists them
        # alike without sorting on its own; sorted() is stable, ties keep the finder's order.
        # The pins need no such step: the judge builds them in PIN_KINDS order (HOW_ORDER)
        # and every renderer (text table, sentences, -o rows, --all, to_json, explain) lists
        # report.pins as it is. Written through __dict__ because the record is frozen.
        self.__dict__["copies"] = tuple(sorted(self.copies, key=copy_order))

    def to_json(self) -> dict:
        # copies and pins in the report's order (__post_init__), as the text lists them
        return {"target": self.target, "busy": self.busy, "device": dict(self.device),
                "copies": [c.to_json() for c in self.copies],
                "pins": [p.to_json() for p in self.pins], "uninspected": self.uninspected}


# ============================================================================ explanation
def shown(text: str | None) -> str:
    """A path or name fit for a terminal line: control characters and backslashes escaped as
    octal, as the kernel does in mountinfo. File names are chosen by other users, and a
    newline in one must not forge a line of our output."""
    if text is None:
        return "-"
    return "".join(f"\\{ord(c):03o}" if (ord(c) < 32 or c in "\\\x7f") else c for c in text)


_PROCESS_VERBS = {
    "cwd": "has its working directory in {path}",
    "root": "has its root directory in {path}",
    "exe": "is running the program {path}",
    "fd": "holds {path} open",
    "mmap": "has {path} mapped in memory",
}


def who(pin: Pin) -> str:
    """'host process 4242 (bash, user admin)' or 'process 4242 of guest c2 (pid 7 there; ...)'."""
    meta = ", ".join(shown(x) for x in (pin.comm, f"user {pin.user}" if pin.user else None)
                     if x)
    if pin.guest == HOST:
        return f"host process {pin.pid}" + (f" ({meta})" if meta else "")
    inside = f"pid {pin.guest_pid} there" if pin.guest_pid not in (None, pin.pid) else ""
    words = "; ".join(x for x in (inside, meta) if x)
    return f"process {pin.pid} of guest {pin.guest}" + (f" ({words})" if words else "")


def _where(pin: Pin) -> str:
    if pin.guest == HOST:
        return f"in the host's namespace {pin.namespace}" if pin.namespace else "on the host"
    return f"in guest {pin.guest}"


def _shown_pin(pin: Pin) -> Pin:
    return Pin(pin.how, pin.pid, pin.guest_pid, pin.comm, pin.user, pin.guest, shown(pin.path),
               pin.namespace, shown(pin.detail) if pin.detail else "")


def describe_pin(pin: Pin) -> str:
    """One plain clause saying what holds the mount and how."""
    pin = _shown_pin(pin)
    if pin.how in _PROCESS_VERBS:
        return f"{who(pin)} {_PROCESS_VERBS[pin.how].format(path=pin.path)}"
    if pin.how == "detached":
        return (f"{who(pin)} still uses {pin.path} on a lazily detached copy of the filesystem"
                + (f" ({pin.detail})" if pin.detail else ""))
    if pin.how == "submount":
        return f"{pin.path} is mounted beneath it {_where(pin)}"
    if pin.how == "leaked-copy":
        holder = f"kept by {who(pin)}" if pin.pid is not None else (pin.detail or "")
        text = (f"a copy at {pin.path} in mount namespace {pin.namespace}"
                + (f" ({holder})" if holder else "")
                + " will not be removed by the unmount and keeps the filesystem mounted")
        return text
    if pin.how == "swap":
        return f"{pin.path} on it is in use as swap (swapoff {pin.path})"
    if pin.how == "loop":
        # detail: "/dev/loopN", or "/dev/loopN: FIX" when the judge read the loop device's
        # state (autoclear already set, or a swap, mount or process still using it).
        dev, _, fix = (pin.detail or "?").partition(": ")
        return (f"{pin.path} on it backs loop device {dev}"
                f" ({fix or 'losetup -d ' + (dev if dev != '?' else 'LOOPDEV')})")
    if pin.how == "nfsd-export":
        return f"{pin.path} is exported by nfsd (exportfs -u)"
    if pin.how == "binfmt":
        return (f"binfmt_misc entry {pin.detail or '?'} keeps its interpreter {pin.path} open "
                f"(flag F) (echo -1 > /proc/sys/fs/binfmt_misc/{pin.detail or 'NAME'})")
    if pin.how == "fanotify":
        return (f"{who(pin)} has a fanotify mark on {pin.path}; its unread events hold the "
                f"mount (read them or close the fanotify fd: kill {pin.pid})")
    if pin.how == "io_uring":
        return (f"{who(pin)} registered {pin.path} with an io_uring, which holds it even "
                f"after its fd is closed (unregister the files or close the ring: "
                f"kill {pin.pid})")
    if pin.how == "holder":
        return f"block device {pin.path} is stacked on its device (a dm or md holder)"
    return f"{pin.how}: {pin.path}"


def explain(report: BusyReport, guest_name: str | None, guest_path: str | None,
            lead: str | None = None) -> str:
    """One plain sentence per pin, e.g. `cannot unmount /mnt/usb in c1: host process 4242
    (bash, user admin) has its working directory in /container/c1/mnt/usb`."""
    if lead is None:
        if guest_name:
            lead = f"cannot unmount {guest_path} in {guest_name}"
        else:
            lead = f"{guest_path or report.target} is busy"
    lines = [f"{lead}: {describe_pin(p)}" for p in report.pins]
    if report.uninspected and (lines or report.busy):
        lines.append(f"{lead}: {report.uninspected} process(es) could not be inspected "
                     "(permission denied), so there may be more")
    return "\n".join(lines)

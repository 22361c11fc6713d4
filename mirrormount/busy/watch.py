"""`mirrormount watch`: block-device events, each answered with who still uses the device.

A pyudev Monitor receives the block subsystem's uevents. With udevd running we listen to udev
(source 'udev': events after udev has processed them, with ID_* properties); without it that
stream is silent, so we listen to the kernel's own uevents (source 'kernel'; kernel-findings
§10). For every event the finder answers, for the device's MAJ:MIN, which mounts in which
namespaces still use it and who pins them; one line per event goes out (JSON lines with
--json), flushed at once so a pipe sees it.

What the kernel sends for loop devices (measured on this machine, no udevd):
- attach (`losetup`): change;
- resize (`losetup -c`): change with RESIZE=1;
- `losetup -d` while a filesystem on it is mounted: nothing at all. The kernel only sets
  autoclear and clears the device at the last close, which sends change with
  DISK_MEDIA_CHANGE=1 (the device is then unbound: no loop/ directory in sysfs);
- a hot-unplugged disk sends remove, usually while still mounted: the case worth watching.
So every event is classified (``what``), and ``removal_pending`` tells when a loop device has
been asked to detach but still serves mounts.

SIGINT (Ctrl-C) and SIGTERM end the watch with status 0 after the line being written, if any.

Privilege: listening needs none; the finder needs root to see every process and namespace.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import select
import signal
import stat
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from ..record import record
from .devices import describe_device, device_label, parse_majmin, udevd_running
from ..errors import MirrormountError, UsageError
from ..guest.model import Layout

# A burst of events arrives while the finder scans /proc for an earlier one: a roomy socket
# buffer keeps the kernel from dropping them (ENOBUFS).
RECEIVE_BUFFER = 8 << 20

Finder = Callable[[str, Layout], Any]


@record(frozen=True)
class BlockEvent:
    """One uevent of the block subsystem, reduced to what the report needs."""

    action: str                 # add | remove | change | online | offline | ...
    major: int
    minor: int
    sys_name: str               # loop0, sda1
    devnode: str | None
    seqnum: int | None
    properties: Mapping[str, str]

    @property
    def majmin(self) -> str:
        return f"{self.major}:{self.minor}"

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> BlockEvent | None:
        """From a uevent's KEY=VALUE properties; None for events without a device number."""
        try:
            major, minor = int(props["MAJOR"]), int(props["MINOR"])
        except (KeyError, ValueError):
            return None
        devname = props.get("DEVNAME") or ""
        if devname and not devname.startswith("/"):
            devname = "/dev/" + devname
        seq = props.get("SEQNUM", "")
        return cls(action=props.get("ACTION", "change"), major=major, minor=minor,
                   sys_name=os.path.basename(props.get("DEVPATH", "")) or devname[5:],
                   devnode=devname or None, seqnum=int(seq) if seq.isdigit() else None,
                   properties=dict(props))


def classify(action: str, props: Mapping[str, str], bound: bool | None) -> str:
    """What happened, in one word. `bound` is whether a loop device still has a backing
    file (None: not a loop device, or unknown)."""
    if action == "remove":
        return "removed"
    if action == "add":
        return "added"
    if action != "change":
        return action
    if bound is False:
        # A loop device that lost its file (at `losetup -d`, or at the last unmount after a
        # deferred one) is gone in all but name; the kernel calls that a change.
        return "detached"
    if props.get("RESIZE") == "1":
        return "resized"
    if props.get("DISK_MEDIA_CHANGE") == "1" or props.get("DISK_EJECT_REQUEST") == "1":
        return "media-changed"
    return "changed"


def _is_loop(event: BlockEvent) -> bool:
    return event.sys_name.startswith("loop")


def event_record(event: BlockEvent, device: dict[str, Any], busy: dict[str, Any] | None,
                 error: str | None = None, now: float | None = None) -> dict[str, Any]:
    """The JSON line for one event. `busy` is the finder's report (BusyReport.to_json())."""
    bound = (device.get("backing_file") is not None) if _is_loop(event) else None
    if event.action == "remove":
        bound = None   # sysfs is gone: nothing to tell about a backing file
    copies = list((busy or {}).get("copies") or [])
    guests = sorted({str(c["guest"]) for c in copies if c.get("guest") not in (None, "host")})
    when = datetime.datetime.fromtimestamp(time.time() if now is None else now,
                                           datetime.timezone.utc)
    return {
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "seqnum": event.seqnum,
        "action": event.action,
        "what": classify(event.action, event.properties, bound),
        "removal_pending": bool(bound and device.get("autoclear")),
        "device": device,
        "in_use": bool(copies),
        "guests": guests,
        "busy": bool((busy or {}).get("busy")),
        "copies": copies,
        "pins": list((busy or {}).get("pins") or []),
        "uninspected": (busy or {}).get("uninspected"),
        "error": error,
    }


def _pin_text(p: Mapping[str, Any]) -> str:
    """'host process 4242 (bash, user admin): cwd /container/c1/mnt/x', or for a process in
    a guest 'process 7 in c1 (host pid 5000; sqlite3, user root): fd /mnt/x/db'."""
    where = p.get("guest") or "host"
    if p.get("pid") is None:
        return f"{p.get('how')} {p.get('path')} ({where})"
    who = f"{p.get('comm')}, user {p.get('user')}"
    if where == "host":
        return f"host process {p['pid']} ({who}): {p.get('how')} {p.get('path')}"
    inner = p.get("guest_pid") if p.get("guest_pid") is not None else p["pid"]
    return (f"process {inner} in {where} (host pid {p['pid']}; {who}): "
            f"{p.get('how')} {p.get('path')}")


def render_line(rec: Mapping[str, Any]) -> str:
    """The human form of one event record: one line, most important facts first."""
    clock = str(rec["time"])[11:19]
    head = f"{clock} {rec['what']:<13} {device_label(rec['device'])}"
    if rec.get("removal_pending"):
        head += " [detach requested: goes at last unmount]"
    if rec.get("error"):
        return f"{head}: could not check who uses it: {rec['error']}"
    if not rec["in_use"]:
        return f"{head}: not mounted anywhere"
    # The guests first: they are who the admin is about to hurt.
    places = [f"{c.get('guest')} at {c.get('path')}" for c in rec["copies"]
              if c.get("guest") not in (None, "host")]
    places += [f"the host at {c.get('path')}" for c in rec["copies"]
               if c.get("guest") in (None, "host")]
    text = f"{head}: still mounted in {', '.join(places)}"
    pins = rec["pins"]
    if pins:
        text += f"; pinned by {'; '.join(_pin_text(p) for p in pins)}"
    else:
        text += "; nothing pins it"
    if rec.get("uninspected"):
        text += f" ({rec['uninspected']} processes could not be inspected)"
    return text


def parse_device_filter(spec: str) -> tuple[int, int]:
    """--device: MAJ:MIN, or a device node whose number is read now."""
    try:
        return parse_majmin(spec)
    except ValueError:
        pass
    try:
        st = os.stat(spec)
    except OSError as exc:
        raise UsageError(f"--device {spec}: {exc.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise UsageError(f"--device {spec}: not a block device (give /dev/NAME or MAJ:MIN)")
    return os.major(st.st_rdev), os.minor(st.st_rdev)


# ----------------------------------------------------------------------------- the loop
class _Stop(Exception):
    """Raised by the signal handler while the loop is idle."""


class Watcher:
    """Listens, asks the finder, prints. Stops on a count, a timeout, or SIGINT/SIGTERM."""

    def __init__(self, layout: Layout, finder: Finder, out: TextIO, err: TextIO,
                 json_out: bool = False, count: int | None = None,
                 timeout: float | None = None,
                 device: tuple[int, int] | None = None) -> None:
        self.layout, self.finder, self.out, self.err = layout, finder, out, err
        self.json_out, self.count, self.timeout, self.device = json_out, count, timeout, device
        self.busy = False
        self.stop_requested = False
        self.reported = 0

    # Signals: while idle in select() stop at once; while busy with an event, finish its line.
    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True
        if not self.busy:
            raise _Stop()

    def open_monitor(self) -> tuple[Any, str]:
        import pyudev
        source = "udev" if udevd_running() else "kernel"
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source=source)
        monitor.filter_by("block")
        try:
            monitor.set_receive_buffer_size(RECEIVE_BUFFER)
        except OSError:
            pass  # needs CAP_NET_ADMIN beyond rmem_max; the default buffer still works
        monitor.start()
        return monitor, source

    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            monitor, source = self.open_monitor()
            why = ("udev events" if source == "udev"
                   else "kernel uevents: udevd is not running")
            self.err.write(f"mirrormount: watching block devices ({why}); Ctrl-C stops\n")
            self.err.flush()
            self._loop(monitor)
        except _Stop:
            pass
        except BrokenPipeError:
            # The reader went away (watch | head -1): nothing left to tell anyone.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.out.fileno())
            except (OSError, ValueError):
                pass
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return 0

    def _loop(self, monitor: Any) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while not self.stop_requested:
            if self.count is not None and self.reported >= self.count:
                return
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return
            ready, _, _ = select.select([monitor], [], [], wait)
            if not ready:
                continue
            self.busy = True
            try:
                try:
                    dev = monitor.poll(timeout=0)
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    self.err.write("mirrormount: the kernel dropped events (receive buffer "
                                   "full); some changes were not reported\n")
                    continue
                if dev is None or (dev.subsystem or "block") != "block":
                    continue
                event = BlockEvent.from_properties(dict(dev.properties))
                if event is None:
                    continue
                if self.device is not None and (event.major, event.minor) != self.device:
                    continue
                self.emit(self.report(event))
            finally:
                self.busy = False

    def report(self, event: BlockEvent) -> dict[str, Any]:
        busy: dict[str, Any] | None = None
        error = None
        try:
            busy = self.finder(event.majmin, self.layout).to_json()
        except MirrormountError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"{exc.strerror or exc}"
        except Exception as exc:  # noqa: BLE001 - one event the finder chokes on must not
            # end a watch that may run for weeks: say so on that event's line and go on.
            error = f"{type(exc).__name__}: {exc}"
        # Our own description always (the loop facts drive `what`), refined by whatever the
        # finder learnt from mountinfo (fstype, source).
        theirs = dict((busy or {}).get("device") or {})
        device = describe_device(event.major, event.minor, str(theirs.get("fstype") or ""),
                                 str(theirs.get("source") or event.devnode or ""))
        device.update({k: v for k, v in theirs.items() if v is not None})
        if not device.get("devnode") and event.devnode:
            device["devnode"] = event.devnode    # a removed device is gone from sysfs
        return event_record(event, device, busy, error)

    def emit(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, sort_keys=False) if self.json_out else render_line(rec)
        self.out.write(line + "\n")
        self.out.flush()
        self.reported += 1


def watch(layout: Layout, json_out: bool = False, count: int | None = None,
          timeout: float | None = None, device: str | None = None,
          finder: Finder | None = None, out: TextIO | None = None,
          err: TextIO | None = None) -> int:
    """Run the watch until count events, timeout seconds, or SIGINT/SIGTERM. Returns 0."""
    import sys
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    if timeout is not None and timeout < 0:
        raise UsageError("--timeout must not be negative")
    wanted = parse_device_filter(device) if device else None
    if finder is None:
        from .finder import find_pins
        finder = find_pins
    return Watcher(layout, finder, out or sys.stdout, err or sys.stderr, json_out, count,
                   timeout, wanted).run()

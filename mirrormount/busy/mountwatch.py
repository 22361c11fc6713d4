"""`mirrormount watch --mounts`: every guest's mount attach, detach and move, and the host's,
one line each as they happen.

One source per mount namespace (kernel/mntevents.py): fanotify mount events where the kernel
has them (6.15+), else POLLPRI on the namespace's mountinfo and a diff. The host is the
namespace we run in; each guest is found by its nsfs file under STATE. Guests are looked for
again every half second, so a guest created after the start is watched from then on, and a
destroyed guest's source is closed (a poll source holds its namespace alive).

Lines (util-linux `findmnt --poll` reads the same way): ACTION, GUEST, TARGET, SOURCE,
FSTYPE, ID; --json gives one object per line with keys event, guest, path, mount_id, source,
fstype (and old_path for a move).

Ends after --count events or --timeout seconds (exit 0), or on Ctrl-C/SIGTERM: the stop
signal goes through the CLI's one error place (kernel/signals.py: "interrupted", exit 130).

Privilege: root.
"""
from __future__ import annotations

import json
import os
import select
import time
from typing import TextIO

from ..errors import UsageError
from ..guest.model import Layout
from ..guest.state import guest_names
from ..kernel.mntevents import (FanotifySource, MountEvent, PollSource,
                                fanotify_available)

HOST = "host"
RESCAN = 0.5          # seconds between looks for new or destroyed guests


def render(ev: MountEvent) -> str:
    where = ev.path if ev.old_path is None else f"{ev.old_path} -> {ev.path}"
    return f"{ev.event:<7} {ev.guest:<12} {where} {ev.source or '-'} {ev.fstype or '-'} " \
           f"{ev.mount_id}"


Source = FanotifySource | PollSource


class MountWatch:
    def __init__(self, layout: Layout, out: TextIO, err: TextIO, json_out: bool = False,
                 count: int | None = None, timeout: float | None = None) -> None:
        self.layout, self.out, self.err = layout, out, err
        self.json_out, self.count, self.timeout = json_out, count, timeout
        self.fanotify = fanotify_available()
        self.sources: dict[str, tuple[int, Source]] = {}    # guest -> (nsfs inode, source)
        self.reported = 0
        self.polled: list[str] = []      # fanotify here, but these namespaces are polled

    def _make(self, guest: str, ns_path: str | None) -> Source:
        if self.fanotify:
            try:
                return FanotifySource(guest, ns_path or "/proc/self/ns/mnt",
                                      own=ns_path is None)
            except NotImplementedError:
                # listmount/statmount refuse this namespace (ENOENT on 6.18 for a guest's:
                # fs/namespace.c grab_requested_root looks for the namespace's root among
                # mounts with higher ids only; fixed upstream later), so its events could
                # not be described: poll it.
                self.polled.append(guest)
        return PollSource(guest, ns_path)

    def rescan(self) -> None:
        """Watch guests that appeared, drop those whose namespace went (or changed)."""
        seen: dict[str, int] = {}
        for name in guest_names(self.layout):
            path = self.layout.ns_file(name, "mnt")
            try:
                seen[name] = os.stat(path).st_ino
            except OSError:
                continue
        for name, (ino, src) in list(self.sources.items()):
            if name != HOST and seen.get(name) != ino:
                src.close()
                del self.sources[name]
        for name, ino in seen.items():
            if name in self.sources or name == HOST:
                continue
            try:
                self.sources[name] = (ino, self._make(name, self.layout.ns_file(name, "mnt")))
            except OSError:
                continue       # destroyed while we looked: the next rescan forgets it

    def emit(self, ev: MountEvent) -> None:
        self.out.write((json.dumps(ev.to_json()) if self.json_out else render(ev)) + "\n")
        self.out.flush()
        self.reported += 1

    def run(self) -> int:
        try:
            self.sources[HOST] = (0, self._make(HOST, None))
            self.rescan()
            how = ("fanotify mount events" if self.fanotify and not self.polled
                   else "fanotify mount events for the host, mountinfo polled (POLLPRI) for "
                   "guests whose namespace listmount cannot read" if self.fanotify
                   else "mountinfo polled (POLLPRI)")
            self.err.write(f"mirrormount: watching mounts of the host and "
                           f"{len(self.sources) - 1} guest(s) ({how}); Ctrl-C stops\n")
            self.err.flush()
            self._loop()
        finally:
            for _, src in self.sources.values():
                src.close()
        return 0

    def _loop(self) -> None:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        next_scan = time.monotonic() + RESCAN
        while self.count is None or self.reported < self.count:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return
            if now >= next_scan:
                self.rescan()
                next_scan = now + RESCAN
            wait = next_scan - now if deadline is None else min(next_scan, deadline) - now
            poller = select.poll()
            by_fd = {}
            for _, src in self.sources.values():
                poller.register(src.fd, src.events)
                by_fd[src.fd] = src
            for fd, _ in poller.poll(max(wait, 0) * 1000):
                for ev in by_fd[fd].read():
                    self.emit(ev)
                    if self.count is not None and self.reported >= self.count:
                        return


def watch_mounts(layout: Layout, json_out: bool, count: int | None, timeout: float | None,
                 out: TextIO, err: TextIO) -> int:
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    if timeout is not None and timeout < 0:
        raise UsageError("--timeout must not be negative")
    return MountWatch(layout, out, err, json_out, count, timeout).run()

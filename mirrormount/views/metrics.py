"""mirrormount's metrics in the Prometheus text exposition format (version 0.0.4). Pure: facts
in (gathered by cli/metrics.py), text out.

Format (the Prometheus "Exposition formats" document, text format 0.0.4): for each family a
`# HELP name text` line (backslash and newline escaped), a `# TYPE name gauge` line, then one
line per sample, `name{label="value",...} number`, label values with backslash, double quote
and newline escaped. Every family here is a gauge: each is a count or a state read now.

Families (labels; what the number is):
  mirrormount_guests{state}                   guests in each state (running, stopped, broken
                                              always present, 0 when none; any other state
                                              seen is added)
  mirrormount_guest_state{guest,state}        1, one sample per guest naming its state
  mirrormount_guest_mounts{guest,side}        side="host": mounts under BASE/NAME in the
                                              host's namespace; side="guest": mounts in the
                                              guest's own mount namespace (as `status`)
  mirrormount_mirror_intact{guest}            1 when `status` says the mirror is intact
  mirrormount_guest_pins{guest}               pins on the guest's own mounts, counted as
                                              `busy --all` counts them
  mirrormount_guest_pinned_mounts{guest}      of those mounts, how many have a pin
  mirrormount_mount_max                       fs.mount-max (/proc/sys/fs/mount-max)
  mirrormount_namespace_mounts{namespace}     mounts in a mount namespace: "host" (the
                                              namespace mirrormount runs in) or a guest's name
  mirrormount_mount_max_headroom{namespace}   fs.mount-max minus namespace_mounts: how many
                                              more mounts that namespace can take

The headroom is per namespace because the limit is: fs/namespace.c count_mounts() compares
ns->mounts plus the mounts being added with sysctl_mount_max for the one namespace a mount
goes into, and fails the mount with ENOSPC past it. A mirror's mounts count in the host's
namespace and the guest's copies in the guest's, so each has its own headroom. The count is
the lines of that namespace's mountinfo, which is ns->mounts when read from the namespace's
root (a chrooted reader sees fewer). Guests whose table cannot be read have no mount
samples (and no headroom sample).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..record import record

STATES = ("running", "stopped", "broken")
PREFIX = "mirrormount_"


@record(frozen=True)
class GuestFacts:
    """What metrics says of one guest. None: not known (its table could not be read, or
    pins were not counted)."""

    name: str
    state: str
    mounts_host: int | None = None
    mounts_guest: int | None = None
    mirror_intact: bool | None = None
    pins: int | None = None
    pinned_mounts: int | None = None


@record(frozen=True)
class Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


@record(frozen=True)
class Family:
    name: str                    # full metric name, with PREFIX
    help: str
    type: str                    # gauge
    samples: tuple[Sample, ...]


def families(guests: Sequence[GuestFacts], mount_max: int | None, host_mounts: int,
             pins_counted: bool = True) -> list[Family]:
    """The families listed in the module docstring, in that order. mount_max None (the sysctl
    cannot be read): no mount_max and no headroom family. pins_counted False: no pin
    families (`metrics --no-pins`)."""
    states = list(STATES) + sorted({g.state for g in guests} - set(STATES))
    out = [
        _family("guests", "Guests by state (running, stopped, broken).",
                [((("state", s),), sum(1 for g in guests if g.state == s)) for s in states]),
        _family("guest_state", "The state of each guest (1 for the state it is in).",
                [((("guest", g.name), ("state", g.state)), 1) for g in guests]),
        _family("guest_mounts", "Mounts of each guest: side=host under BASE/NAME in the "
                                "host's namespace, side=guest in the guest's own namespace.",
                [s for g in guests for s in (
                    ((("guest", g.name), ("side", "host")), g.mounts_host),
                    ((("guest", g.name), ("side", "guest")), g.mounts_guest))
                 if s[1] is not None]),
        _family("mirror_intact", "1 when the guest's mirror is intact (mirrormount status).",
                [((("guest", g.name),), int(g.mirror_intact)) for g in guests
                 if g.mirror_intact is not None]),
    ]
    if pins_counted:
        out.append(_family("guest_pins", "Pins on each guest's own mounts, as busy --all "
                                         "counts them.",
                           [((("guest", g.name),), g.pins) for g in guests
                            if g.pins is not None]))
        out.append(_family("guest_pinned_mounts", "Each guest's own mounts with at least one "
                                                  "pin.",
                           [((("guest", g.name),), g.pinned_mounts) for g in guests
                            if g.pinned_mounts is not None]))
    counts = [("host", host_mounts)] + [(g.name, g.mounts_guest) for g in guests
                                        if g.mounts_guest is not None]
    if mount_max is not None:
        out.append(_family("mount_max", "fs.mount-max: the most mounts one mount namespace "
                                        "may hold (/proc/sys/fs/mount-max).",
                           [((), mount_max)]))
    out.append(_family("namespace_mounts", "Mounts in a mount namespace: host (the one "
                                           "mirrormount runs in) or a guest's.",
                       [((("namespace", ns),), n) for ns, n in counts]))
    if mount_max is not None:
        out.append(_family("mount_max_headroom", "fs.mount-max minus the mounts in the "
                                                 "namespace: how many more it can take.",
                           [((("namespace", ns),), mount_max - n) for ns, n in counts]))
    return out


def _family(short: str, help_text: str, samples: list) -> Family:
    return Family(PREFIX + short, help_text, "gauge",
                  tuple(Sample(tuple(labels), float(v)) for labels, v in samples))


def escape_label(value: str) -> str:
    """A label value for the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text: backslash and newline escaped (double quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value: integers without a fraction, +Inf/-Inf/NaN as the format spells them."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value == int(value) else repr(value)


def render(fams: Sequence[Family]) -> str:
    """The exposition text, ending with a newline (the format requires the last line to end
    with one)."""
    lines = []
    for f in fams:
        lines.append(f"# HELP {f.name} {escape_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.type}")
        for s in f.samples:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in s.labels)
            lines.append(f"{f.name}{{{labels}}} {number(s.value)}" if labels
                         else f"{f.name} {number(s.value)}")
    return "\n".join(lines) + "\n"

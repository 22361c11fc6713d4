"""What `busy` prints for one report, without typer or click: the PINS columns, a pin as a
row, and the human form of a report. cli/busy.py (typer) and the fast path
(cli/fastpath.py, a plain `busy TARGET`) both print through here, so the two say the same.
"""
from __future__ import annotations

from .columns import Column, Columns, table

TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from ..busy.report import BusyReport, Pin

PINS = Columns([
    Column("TARGET", "the mount asked about (busy --all: each guest mount)"),
    Column("HOW", "how: cwd, root, exe, fd, mmap, submount, swap, loop, nsfs, ..."),
    Column("PID", "the holding process, as the host numbers it", numeric=True),
    Column("GUEST_PID", "the same process as its guest numbers it", numeric=True),
    Column("COMM", "the process's command name"),
    Column("USER", "the process's user"),
    Column("GUEST", "the guest the holder lives in, or host"),
    Column("PATH", "the pinned path, as the holder sees it"),
    Column("NAMESPACE", "the holder's mount namespace (mnt:[inode])"),
], default=["TARGET", "HOW", "PID", "GUEST_PID", "COMM", "USER", "GUEST", "PATH"])
# One target's report shows its pins without the TARGET column (it is in the summary line).
ONE_TARGET = ["HOW", "PID", "GUEST_PID", "COMM", "USER", "GUEST", "PATH", "NAMESPACE"]


def pin_row(target: str, p: Pin) -> dict:
    """One pin as a row of PINS (raw values: the renderer escapes them)."""
    return {"TARGET": target, "HOW": p.how, "PID": p.pid, "GUEST_PID": p.guest_pid,
            "COMM": p.comm, "USER": p.user, "GUEST": p.guest, "PATH": p.path,
            "NAMESPACE": p.namespace}


def render_report(rep: BusyReport) -> str:
    """Human form: a summary line, the copies, the pins and one sentence per pin. Copies and
    pins in the report's own order (BusyReport.__post_init__, report.copy_order), the order
    its to_json lists them in: no sorting here, so text and JSON cannot disagree."""
    from ..busy.report import describe_pin, shown
    dev = rep.device
    ident = " ".join(shown(str(x)) for x in (dev.get("devnode"), dev.get("majmin"),
                                             dev.get("fstype")) if x)
    where = f" (mount {rep.mount_path})" if rep.mount_path and rep.mount_path != rep.target \
        else ""
    state = f"busy: {len(rep.pins)} pin(s)" if rep.busy else "not busy"
    out = [f"{shown(rep.target)}{shown(where)}: {state}; device {ident or '?'}"]
    extra = {k: v for k, v in dev.items() if k not in ("devnode", "majmin", "fstype") and v}
    if extra:
        # udev labels and serials are set by whoever made the device: escape them too
        out.append("  " + ", ".join(f"{k}={shown(str(v))}" for k, v in extra.items()))
    if rep.copies:
        out.append("")
        out.append(table([[c.namespace, c.guest, str(c.mount_id), shown(c.path)]
                          for c in rep.copies],
                         ["NAMESPACE", "GUEST", "MOUNT_ID", "COPY"]))
    if rep.pins:
        out.append("")
        out.append(PINS.render([pin_row(rep.target, p) for p in rep.pins],
                               default=ONE_TARGET))
        out.append("")
        out.extend(f"- {describe_pin(p)}" for p in rep.pins)
    if rep.uninspected:
        out.append(f"{rep.uninspected} process(es) could not be inspected (permission denied)")
    return "\n".join(out)

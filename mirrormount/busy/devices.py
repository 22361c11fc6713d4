"""Device identity for reports: which device a mount uses, named the way an admin knows it.

Three sources, cheapest first:
- the mount itself (major:minor, fstype, source from mountinfo). Anonymous devices (major 0:
  tmpfs, overlay, proc, ...) have nothing else, so their name is the mountinfo source;
- sysfs, always there: size, read-only, loop backing file and autoclear, model and serial;
- the udev database through pyudev: ID_SERIAL, ID_MODEL, ID_FS_UUID, ID_FS_LABEL. Only udevd
  writes that database; without it (these machines, kernel-findings §10) pyudev still finds
  the device but has only the kernel's DEVNAME/MAJOR/MINOR, and the ID_* keys stay None.

``describe_device`` is called once per busy report and once per watched event, so it reads a
handful of small sysfs files and one udev record, and never scans anything.

The parsers are pure (text in, values out) and the sysfs root is a parameter, so tests run on
fixture text and fixture trees.

Privilege: none (sysfs and the udev database are world-readable).
"""
from __future__ import annotations

import functools
import os
import stat
TYPE_CHECKING = False   # typing.TYPE_CHECKING, without importing typing at run time
if TYPE_CHECKING:
    from typing import Any

from ..kernel.procfs import read_text

SECTOR = 512                       # sysfs `size` counts 512-byte sectors, whatever the device
UDEV_KEYS = ("ID_SERIAL", "ID_MODEL", "ID_FS_UUID", "ID_FS_LABEL")
UDEVD_CONTROL = "/run/udev/control"  # udevd's control socket: present while udevd runs
UDEV_DATA = "/run/udev/data"         # udevd's database: one file per device it processed


# ----------------------------------------------------------------------------- pure parsers
def parse_majmin(text: str) -> tuple[int, int]:
    """'7:0' -> (7, 0). ValueError for anything else."""
    major, sep, minor = text.strip().partition(":")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise ValueError(f"not MAJ:MIN: {text!r}")
    return int(major), int(minor)


def parse_size(text: str | None) -> int | None:
    """sysfs `size` (in 512-byte sectors, whatever the logical block size) -> bytes."""
    if text is None:
        return None
    try:
        return int(text.strip()) * SECTOR
    except ValueError:
        return None


def parse_flag(text: str | None) -> bool | None:
    """sysfs booleans ('0\\n'/'1\\n') -> bool; absent -> None."""
    if text is None:
        return None
    value = text.strip()
    return None if value not in ("0", "1") else value == "1"


def parse_text(text: str | None) -> str | None:
    """A sysfs string attribute: trailing newline and padding gone; empty means unknown.
    (SCSI model/vendor are space-padded to a fixed width.)"""
    if text is None:
        return None
    value = text.strip()
    return value or None


def parse_uevent(text: str) -> dict[str, str]:
    """A sysfs `uevent` file (KEY=VALUE lines) -> dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def human_size(n: int | None) -> str:
    """1024-based, at most one decimal: 67108864 -> '64 MiB'."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            text = f"{size:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def device_label(device: dict[str, Any]) -> str:
    """One short phrase naming a device for a human line:
    '/dev/loop3 (7:3, ext4, 64 MiB, file /tmp/disk.img)' or 'tmpfs "scratch" (0:52)'."""
    majmin = device.get("majmin") or "?"
    if device.get("anonymous") and not device.get("devnode"):
        what = device.get("fstype") or "filesystem"
        source = device.get("source")
        named = f'{what} "{source}"' if source and source != what else what
        return f"{named} ({majmin})"
    parts = [majmin]
    if device.get("fstype"):
        parts.append(str(device["fstype"]))
    if device.get("size") is not None:
        parts.append(human_size(device["size"]))
    label = device.get("ID_FS_LABEL")
    if label:
        parts.append(f"label {label}")
    if device.get("backing_file"):
        parts.append(f"file {device['backing_file']}")
    model = device.get("ID_MODEL") or device.get("model")
    if model:
        parts.append(str(model))
    name = device.get("devnode") or device.get("source") or "block device"
    return f"{name} ({', '.join(parts)})"


# ----------------------------------------------------------------------------- sysfs
def sysfs_dir(major: int, minor: int, sys_root: str = "/sys") -> str | None:
    """/sys/dev/block/MAJ:MIN, resolved (None when the kernel has no such block device)."""
    link = f"{sys_root}/dev/block/{major}:{minor}"
    try:
        return os.path.realpath(link, strict=True)
    except OSError:
        return None


def sysfs_facts(major: int, minor: int, sys_root: str = "/sys") -> dict[str, Any]:
    """What sysfs says about a block device. Every key is present; unknown values are None.

    A partition keeps its own size and read-only flag, but loop and model/serial facts belong
    to the whole disk, one directory up (loop0p1 -> loop0)."""
    facts: dict[str, Any] = {"devnode": None, "size": None, "readonly": None,
                             "backing_file": None, "autoclear": None, "model": None,
                             "serial": None}
    top = sysfs_dir(major, minor, sys_root)
    if top is None:
        return facts
    uevent = parse_uevent(read_text(f"{top}/uevent") or "")
    if uevent.get("DEVNAME"):
        facts["devnode"] = "/dev/" + uevent["DEVNAME"]
    facts["size"] = parse_size(read_text(f"{top}/size"))
    facts["readonly"] = parse_flag(read_text(f"{top}/ro"))
    disk = os.path.dirname(top) if os.path.exists(f"{top}/partition") else top
    # loop/ exists only while a file is attached: its absence means "not bound".
    facts["backing_file"] = parse_text(read_text(f"{disk}/loop/backing_file"))
    facts["autoclear"] = parse_flag(read_text(f"{disk}/loop/autoclear"))
    facts["model"] = parse_text(read_text(f"{disk}/device/model"))
    facts["serial"] = parse_text(read_text(f"{disk}/serial") or read_text(f"{disk}/device/serial"))
    return facts


# ----------------------------------------------------------------------------- udev
def udevd_running(control: str = UDEVD_CONTROL) -> bool:
    """Whether udevd runs where we can see it. Its database and its event stream exist only
    then; otherwise only the kernel's own uevents are there to listen to."""
    try:
        return stat.S_ISSOCK(os.stat(control).st_mode)
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _udev_context() -> Any:
    """One pyudev Context per process: creating it loads libudev (a few ms), looking a
    device up afterwards costs well under a millisecond. None when libudev is missing."""
    try:
        import pyudev
        return pyudev.Context()
    except (ImportError, OSError):
        return None


def udev_properties(major: int, minor: int) -> tuple[dict[str, str], bool] | None:
    """(properties, initialized) from libudev for a block device; None if there is none.
    `initialized` is True only when udevd has processed it (a database record exists):
    only then can ID_* keys be there. Without udevd and its database libudev knows no more
    than sysfs already told: None then, and pyudev is not even imported (~60 ms of a
    `busy` that must beat fuser)."""
    if not udevd_running() and not os.path.isdir(UDEV_DATA):
        return None
    ctx = _udev_context()
    if ctx is None:
        return None
    import pyudev
    try:
        dev = pyudev.Devices.from_device_number(ctx, "block", os.makedev(major, minor))
        return dict(dev.properties), bool(dev.is_initialized)
    except (pyudev.DeviceNotFoundError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- identity
def block_device_of(source: str) -> tuple[int, int] | None:
    """The block device named by a mount source such as '/dev/loop0', if it is one.
    btrfs reports an anonymous 0:N in mountinfo, yet its source names the real device."""
    if not source.startswith("/dev/"):
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def describe_device(major: int, minor: int, fstype: str, source: str,
                    sys_root: str = "/sys", use_udev: bool = True) -> dict[str, Any]:
    """The device a mount uses, for reports. Keys (always all present, None when unknown):
    devnode, majmin, fstype, source, anonymous, size (bytes), readonly, backing_file,
    autoclear (loop: detach requested, happens at last close), model, serial, udev (True
    when udevd's database knows the device), ID_SERIAL, ID_MODEL, ID_FS_UUID, ID_FS_LABEL."""
    out: dict[str, Any] = {"devnode": None, "majmin": f"{major}:{minor}",
                           "fstype": fstype or None, "source": source or None,
                           "anonymous": major == 0}
    block = (major, minor)
    if major == 0:
        # No device behind tmpfs/overlay/proc: the source is all the name there is. Some
        # disk filesystems (btrfs) still name their real device there.
        real = block_device_of(source)
        if real is None:
            out.update({k: None for k in ("size", "readonly", "backing_file", "autoclear",
                                          "model", "serial")})
            out["udev"] = False
            out.update({k: None for k in UDEV_KEYS})
            return out
        block = real
    facts = sysfs_facts(*block, sys_root=sys_root)
    out["devnode"] = facts.pop("devnode") or (source if source.startswith("/dev/") else None)
    out.update(facts)
    found = udev_properties(*block) if use_udev else None
    props, initialized = found if found is not None else ({}, False)
    if props.get("DEVNAME"):
        out["devnode"] = props["DEVNAME"]
    out["udev"] = initialized
    out.update({k: props.get(k) or None for k in UDEV_KEYS})
    return out

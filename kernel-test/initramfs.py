"""The initramfs for a test boot: static busybox, the modules that reach the root, and init.sh.

The Debian package ships modules but no modules.dep (depmod runs at install time, and this
machine has no kmod), so the load order comes from each module's own `.modinfo` section: its
`depends=` field names the modules it needs (scripts/mod/modpost.c writes it). Modules are
stored uncompressed (Debian's 6.12 ships .ko.xz; busybox insmod wants plain ELF).

The archive is written directly in the kernel's "newc" cpio format
(Documentation/driver-api/early-userspace/buffer-format.rst), so building it needs no root
and no cpio program: /dev/console is a device node in the archive, which the kernel opens
for init's stdin, stdout and stderr before any devtmpfs exists.
"""
from __future__ import annotations

import lzma
import os
import stat
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent

# What init.sh needs to mount this machine's / and put an overlay on it. virtio_pci is built
# in on 6.12 and a module on 6.1; a wanted module the kernel has built in is simply absent.
ROOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
# Loaded too, because the guest has no modprobe for this kernel (the host root's kmod, if
# any, does not know it): loop for the busy tests' loop devices.
EXTRA_MODULES = ("loop",)


class ModuleError(Exception):
    """A wanted module or one of its dependencies is missing from the package."""


def module_name(filename: str) -> str:
    """`9pnet_virtio.ko.xz` -> `9pnet_virtio`; dashes count as underscores, as for modprobe."""
    base = filename.split(".ko", 1)[0]
    return base.replace("-", "_")


def modinfo(elf: bytes) -> dict[str, str]:
    """The `.modinfo` section of a 64-bit little-endian ELF module as {key: value} (the last
    value wins for repeated keys such as alias). Raises ModuleError for anything else."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ModuleError("not a 64-bit little-endian ELF module")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name_off, off, size = section(i)
        end = elf.index(b"\0", stroff + name_off)
        if elf[stroff + name_off:end] == b".modinfo":
            out = {}
            for item in elf[off:off + size].split(b"\0"):
                key, eq, value = item.partition(b"=")
                if eq:
                    out[key.decode()] = value.decode(errors="replace")
            return out
    raise ModuleError("no .modinfo section")


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.name.endswith(".xz") else data


def index(modules_dir: Path) -> dict[str, Path]:
    """{module name: file} for every module under lib/modules/VERSION."""
    out = {}
    for dirpath, _dirs, files in os.walk(modules_dir):
        for f in files:
            if ".ko" in f:
                out[module_name(f)] = Path(dirpath, f)
    return out


def load_order(wanted: Iterable[str], depends: Mapping[str, Iterable[str]],
               missing_ok: Iterable[str] = ()) -> list[str]:
    """Every wanted module after all it depends on, each once (depth-first, stable).

    depends maps a module to the modules its depends= field names. A wanted name in
    missing_ok that is not in depends is skipped (built into this kernel); any other unknown
    name raises ModuleError."""
    order: list[str] = []
    done: set[str] = set()
    skip = set(missing_ok)

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in chain:
            raise ModuleError(f"dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in depends:
            if name in skip:
                return
            raise ModuleError(f"module {name} not found"
                              + (f" (needed by {chain[-1]})" if chain else ""))
        for dep in depends[name]:
            visit(dep, chain + (name,))
        done.add(name)
        order.append(name)

    for w in wanted:
        visit(w, ())
    return order


def resolve(modules_dir: Path, wanted: Iterable[str]) -> list[tuple[str, bytes]]:
    """[(name, uncompressed module)] in load order for the wanted modules and their deps.

    A wanted module absent from the package counts as built in (CONFIG_...=y); a missing
    dependency raises ModuleError."""
    files = index(modules_dir)
    wanted = list(wanted)
    cache: dict[str, bytes] = {}
    depends: dict[str, list[str]] = {}
    todo = [w for w in wanted if w in files]
    while todo:
        name = todo.pop()
        if name in depends:
            continue
        if name not in files:
            continue  # reported by load_order with the module that needs it
        cache[name] = read_module(files[name])
        deps = [d for d in modinfo(cache[name]).get("depends", "").split(",") if d]
        depends[name] = [module_name(d) for d in deps]
        todo.extend(depends[name])
    order = load_order(wanted, depends, missing_ok=[w for w in wanted if w not in files])
    return [(name, cache[name]) for name in order]


def newc(entries: Iterable[tuple[str, int, bytes, int]]) -> bytes:
    """A newc cpio archive of (path, mode, data, rdev) entries, with the trailer.

    mode carries the file type (stat.S_IFDIR, S_IFREG, S_IFCHR, S_IFLNK: data is the target);
    rdev is (major << 8) | minor for device nodes. Owner root, mtime 0 (reproducible)."""
    out = bytearray()

    def one(ino: int, name: str, mode: int, data: bytes, rdev: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF,
                  len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    ino = 1
    for name, mode, data, rdev in entries:
        one(ino, name, mode, data, rdev)
        ino += 1
    one(0, "TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build(modules_dir: Path, busybox: Path, out: Path,
          wanted: Iterable[str] = ROOT_MODULES + EXTRA_MODULES) -> list[str]:
    """Write the initramfs to out; returns the modules in the order init.sh loads them."""
    mods = resolve(modules_dir, wanted)
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG
    entries: list[tuple[str, int, bytes, int]] = [
        (p, d, b"", 0) for p in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot",
                                 "modules")]
    entries += [("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1),
                ("bin/busybox", f | 0o755, busybox.read_bytes(), 0),
                ("bin/sh", stat.S_IFLNK | 0o777, b"busybox", 0),
                ("init", f | 0o755, (HERE / "init.sh").read_bytes(), 0),
                ("modules/order", f | 0o644, "".join(n + "\n" for n, _ in mods).encode(), 0)]
    entries += [(f"modules/{n}.ko", f | 0o644, data, 0) for n, data in mods]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(newc(entries))
    os.replace(tmp, out)
    return [n for n, _ in mods]

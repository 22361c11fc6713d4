"""make kernel-test's initramfs builder, off any VM: module names, the .modinfo reader, the
load order, the newc archive (read back field by field) and a whole build from a fake
package tree."""
from __future__ import annotations

import lzma
import stat
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel-test"))

import initramfs  # noqa: E402


def module_elf(depends: str, extra: bytes = b"") -> bytes:
    """A minimal 64-bit little-endian ELF with a .modinfo section (and its .shstrtab)."""
    info = b"license=GPL\0" + f"depends={depends}\0".encode() + b"name=x\0" + extra
    shstr = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    info_off, shstr_off = data_off, data_off + len(info)
    shoff = shstr_off + len(shstr)
    shoff += -shoff % 8
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", head, 0x28, shoff)
    struct.pack_into("<HHH", head, 0x3A, 64, 3, 2)
    body = bytearray(head + info + shstr)
    body += b"\0" * (shoff - len(body))

    def sh(name: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 1, 0, 0, off, size, 0, 0, 1, 0)

    body += sh(0, 0, 0) + sh(1, info_off, len(info)) + sh(10, shstr_off, len(shstr))
    return bytes(body)


def test_module_names():
    assert initramfs.module_name("9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert initramfs.module_name("virtio-pci.ko") == "virtio_pci"


def test_modinfo_is_read_from_the_elf_section():
    assert initramfs.modinfo(module_elf("netfs,9pnet"))["depends"] == "netfs,9pnet"
    assert initramfs.modinfo(module_elf(""))["depends"] == ""
    with pytest.raises(initramfs.ModuleError, match="64-bit"):
        initramfs.modinfo(b"\x7fELF\x01\x01" + bytes(100))


DEPS = {"9p": ["netfs", "9pnet"], "9pnet_virtio": ["9pnet", "virtio_ring"], "9pnet": [],
        "netfs": ["fscache"], "fscache": ["netfs_helper"], "netfs_helper": [],
        "virtio_ring": [], "overlay": []}


def test_load_order_puts_dependencies_first_each_once():
    order = initramfs.load_order(["9pnet_virtio", "9p", "overlay"], DEPS)
    assert order == ["9pnet", "virtio_ring", "9pnet_virtio", "netfs_helper", "fscache",
                     "netfs", "9p", "overlay"]
    for mod, deps in DEPS.items():
        for d in deps:
            assert order.index(d) < order.index(mod)


def test_built_in_modules_are_skipped_but_a_missing_dependency_is_named():
    assert initramfs.load_order(["virtio_pci", "overlay"], DEPS,
                                missing_ok=["virtio_pci"]) == ["overlay"]
    with pytest.raises(initramfs.ModuleError, match="virtio_ring not found .needed by "
                                                    "9pnet_virtio"):
        initramfs.load_order(["9pnet_virtio"], {"9pnet_virtio": ["virtio_ring"]})
    with pytest.raises(initramfs.ModuleError, match="cycle: a -> b -> a"):
        initramfs.load_order(["a"], {"a": ["b"], "b": ["a"]})


def read_newc(data: bytes) -> list[tuple[str, int, bytes, int]]:
    """Entries of a newc archive, checking magic and 4-byte alignment, up to the trailer."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701" and pos % 4 == 0
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        assert data[pos + namesize - 1] == 0
        pos += namesize + (-(pos + namesize) % 4)
        body = data[pos:pos + size]
        pos += size + (-(pos + size) % 4)
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, mode, body, (rmaj << 8) | rmin))


def test_newc_round_trip():
    entries = [("dev", stat.S_IFDIR | 0o755, b"", 0),
               ("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1),
               ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n", 0),
               ("odd", stat.S_IFREG | 0o644, b"12345", 0)]
    assert read_newc(initramfs.newc(entries)) == entries


def test_build_from_a_package_tree(tmp_path):
    mods = tmp_path / "lib/modules/6.12.1/kernel"
    (mods / "fs").mkdir(parents=True)
    (mods / "net").mkdir()
    elf_9p, elf_net, elf_ov = module_elf("9pnet"), module_elf(""), module_elf("")
    (mods / "fs/9p.ko.xz").write_bytes(lzma.compress(elf_9p, format=lzma.FORMAT_XZ))
    (mods / "net/9pnet.ko").write_bytes(elf_net)
    (mods / "net/9pnet_virtio.ko").write_bytes(module_elf("9pnet"))
    (mods / "fs/overlay.ko").write_bytes(elf_ov)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    out = tmp_path / "initramfs.cpio"
    order = initramfs.build(mods.parent, busybox, out,
                            wanted=["virtio_pci", "9pnet_virtio", "9p", "overlay"])
    assert order == ["9pnet", "9pnet_virtio", "9p", "overlay"]
    files = {name: (mode, body, rdev) for name, mode, body, rdev in read_newc(out.read_bytes())}
    assert files["modules/order"][1] == b"9pnet\n9pnet_virtio\n9p\noverlay\n"
    assert files["modules/9p.ko"][1] == elf_9p                    # stored uncompressed
    assert files["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5 << 8) | 1)
    assert files["bin/busybox"][1] == b"\x7fELF busybox"
    assert files["init"][1] == (initramfs.HERE / "init.sh").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))

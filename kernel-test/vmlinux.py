"""The uncompressed kernel (an ELF vmlinux) out of a Debian vmlinuz (an x86 bzImage).

QEMU boots an ELF vmlinux through its PVH entry note (`-kernel vmlinux`), which skips the
bzImage's own decompressor: under TCG that decompression alone costs ~5 s a boot
(kernel-findings §12). This does what the kernel's scripts/extract-vmlinux does, but exactly:
instead of scanning for a compressor's magic, it reads the boot protocol's setup header
(Documentation/arch/x86/boot.rst, protocol 2.08+):

  0x1f1  u8   setup_sects      sectors of real-mode setup after the boot sector (0 means 4)
  0x202  u32  header           "HdrS"
  0x248  u32  payload_offset   where the compressed kernel starts, from the protected-mode code
  0x24c  u32  payload_length   its length

The protected-mode code starts at (setup_sects + 1) * 512. The build appends the uncompressed
size as 4 little-endian bytes to the compressed stream (scripts/Makefile.lib, size_append), so
the payload is one compressed stream followed by that size. Debian's 6.1 uses XZ, its 6.12
ZSTD (measured: CONFIG_KERNEL_XZ / CONFIG_KERNEL_ZSTD).
"""
from __future__ import annotations

import lzma
import shutil
import struct
import subprocess

XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
ELF_MAGIC = b"\x7fELF"


class ExtractError(Exception):
    """The file is no bzImage this code can unpack; the message says why."""


def payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage, without the 4-byte size trailer.

    Raises ExtractError when the boot-protocol header is missing or points outside the file."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise ExtractError("no x86 boot protocol header (HdrS at 0x202): not a bzImage")
    version, = struct.unpack_from("<H", image, 0x206)
    if version < 0x208:
        raise ExtractError(f"boot protocol {version >> 8}.{version & 0xff} has no payload "
                           "fields (needs 2.08+)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length < 5 or start + length > len(image):
        raise ExtractError(f"payload {start}+{length} lies outside the {len(image)}-byte file")
    return image[start:start + length - 4]


def expected_size(image: bytes) -> int:
    """The uncompressed size the build appended after the payload (bytes)."""
    if len(image) < 0x250:
        raise ExtractError("too short for a bzImage")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    end = (setup_sects + 1) * 512 + offset + length
    size, = struct.unpack_from("<I", image, end - 4)
    return size


def compression(stream: bytes) -> str:
    """"xz", "zstd" or "gzip", from the stream's first bytes; ExtractError otherwise."""
    for name, magic in (("xz", XZ_MAGIC), ("zstd", ZSTD_MAGIC), ("gzip", GZIP_MAGIC)):
        if stream.startswith(magic):
            return name
    raise ExtractError(f"unknown compression (first bytes {stream[:6].hex()})")


def _unzstd(stream: bytes) -> bytes:
    """ZSTD without a PyPI package: the zstd CLI (Debian's `zstd`, in .ci/debian-packages)."""
    tool = shutil.which("zstd")
    if tool is None:
        raise ExtractError("this kernel is ZSTD-compressed and the zstd program is missing "
                           "(apt-get install zstd)")
    cp = subprocess.run([tool, "-d", "-c", "-q"], input=stream, capture_output=True)
    if cp.returncode != 0:
        raise ExtractError(f"zstd -d failed: {cp.stderr.decode(errors='replace').strip()}")
    return cp.stdout


def decompress(stream: bytes) -> bytes:
    kind = compression(stream)
    try:
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(stream)
        if kind == "gzip":
            import zlib
            return zlib.decompressobj(wbits=31).decompress(stream)
    except (lzma.LZMAError, ValueError) as exc:
        raise ExtractError(f"{kind} stream is corrupt: {exc}") from exc
    return _unzstd(stream)


def extract(image: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage. Raises ExtractError (bad header, unknown or corrupt
    compression, a result that is no ELF or not the size the build recorded)."""
    out = decompress(payload(image))
    if not out.startswith(ELF_MAGIC):
        raise ExtractError("decompressed kernel is not an ELF file")
    want = expected_size(image)
    if len(out) != want:
        raise ExtractError(f"decompressed {len(out)} bytes, the build recorded {want}")
    return out

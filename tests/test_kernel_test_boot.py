"""make kernel-test's pure parts, off any VM: extracting vmlinux from a bzImage, choosing the
kernel package, the QEMU command line, reading the console and the verdict (with a real
child process standing in for QEMU)."""
from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernel-test"))

import kernels  # noqa: E402
import qemu  # noqa: E402
import vmlinux  # noqa: E402

ELF = b"\x7fELF" + bytes(range(256)) * 40


def bzimage(stream: bytes, size: int, setup_sects: int = 3, version: int = 0x20F,
            offset: int = 0x3B5) -> bytes:
    """A minimal bzImage: setup header fields of the x86 boot protocol, the payload (a
    compressed stream and the 4-byte size the build appends) after offset bytes of
    protected-mode code."""
    head = bytearray(((setup_sects or 4) + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, version)
    body = stream + struct.pack("<I", size)
    struct.pack_into("<II", head, 0x248, offset, len(body))
    return bytes(head) + b"\x90" * offset + body + b"\0" * 64


def test_xz_kernel_is_extracted_whole():
    img = bzimage(lzma.compress(ELF, format=lzma.FORMAT_XZ), len(ELF))
    assert vmlinux.compression(vmlinux.payload(img)) == "xz"
    assert vmlinux.extract(img) == ELF


def test_setup_sects_zero_means_four():
    img = bzimage(lzma.compress(ELF, format=lzma.FORMAT_XZ), len(ELF), setup_sects=0)
    assert vmlinux.extract(img) == ELF


def test_zstd_kernel_is_extracted_by_the_zstd_program():
    assert shutil.which("zstd"), "zstd is in .ci/debian-packages"
    stream = subprocess.run(["zstd", "-q", "-c"], input=ELF, capture_output=True,
                            check=True).stdout
    img = bzimage(stream, len(ELF))
    assert vmlinux.compression(vmlinux.payload(img)) == "zstd"
    assert vmlinux.extract(img) == ELF


@pytest.mark.parametrize("img,why", [
    (b"MZ" + bytes(1000), "not a bzImage"),
    (bzimage(b"\xfd7zXZ\x00", 1, version=0x206), "needs 2.08+"),
    (bzimage(lzma.compress(ELF, format=lzma.FORMAT_XZ), len(ELF))[:3000], "outside"),
    (bzimage(lzma.compress(ELF, format=lzma.FORMAT_XZ), len(ELF) + 1), "the build recorded"),
    (bzimage(lzma.compress(b"not elf", format=lzma.FORMAT_XZ), 7), "not an ELF"),
    (bzimage(b"\x00\x01\x02\x03\x04\x05", 6), "unknown compression"),
    (bzimage(b"\xfd7zXZ\x00garbage", 6), "corrupt"),
])
def test_what_is_no_kernel_is_refused_with_a_reason(img, why):
    with pytest.raises(vmlinux.ExtractError, match=why):
        vmlinux.extract(img)


NAMES = ["linux-image-6.1.0-9-amd64-unsigned", "linux-image-6.1.0-57-amd64-unsigned",
         "linux-image-6.1.0-57-amd64", "linux-image-6.1.0-57-cloud-amd64-unsigned",
         "linux-image-6.1.0-57-rt-amd64-unsigned", "linux-image-6.1.0-60-amd64-dbg",
         "linux-image-6.12.9+deb12-amd64-unsigned", "linux-image-6.12.117+deb12-amd64-unsigned",
         "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
         "linux-image-6.12-amd64-signed-template", "linux-image-6.18.1+deb13-amd64-unsigned"]


def test_the_newest_unsigned_generic_image_of_a_series_is_chosen():
    assert kernels.pick("6.1", NAMES) == "linux-image-6.1.0-57-amd64-unsigned"
    assert kernels.pick("6.12", NAMES) == "linux-image-6.12.117+deb12-amd64-unsigned"
    assert kernels.pick("6.12", NAMES[:6]) is None


@pytest.mark.parametrize("text,want", [("", ["6.1", "6.12"]), ("6.1", ["6.1"]),
                                       (" 6.12,6.1 6.12", ["6.12", "6.1"])])
def test_kernels_variable(text, want):
    assert kernels.parse_series(text) == want


def test_an_unknown_series_is_named():
    with pytest.raises(kernels.FetchError, match="unknown kernel series 5.10"):
        kernels.parse_series("6.1 5.10")


def test_cache_folder():
    assert kernels.cache_dir({"KERNEL_CACHE": "/x"}) == Path("/x")
    assert kernels.cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == \
        Path("/c/mirrormount-kernels")
    assert kernels.cache_dir({"HOME": "/h"}) == Path("/h/.cache/mirrormount-kernels")


def test_qemu_command_line():
    cmd = qemu.argv(Path("/k/vmlinux"), Path("/j/initramfs.cpio"), Path("/j"), cpus=2)
    assert cmd[:3] == ["qemu-system-x86_64", "-accel", "tcg,thread=multi"]
    assert cmd[cmd.index("-kernel") + 1] == "/k/vmlinux"       # ELF by PVH, not the bzImage
    assert cmd[cmd.index("-initrd") + 1] == "/j/initramfs.cpio"
    assert cmd[cmd.index("-smp") + 1] == "2" and "-no-reboot" in cmd
    assert "panic=-1" in cmd[cmd.index("-append") + 1]
    shares = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-virtfs"]
    assert shares[0].startswith("local,path=/,mount_tag=hostroot,readonly=on,")
    assert shares[1].startswith("local,path=/j,mount_tag=job,") and "readonly" not in shares[1]


@pytest.mark.parametrize("lines,want", [
    (["x", "34 passed in 612.30s (0:10:12)", "kernel-test: rc 0"],
     "34 passed in 612.30s (0:10:12)"),
    (["===== 2 failed, 30 passed, 277 deselected in 700.01s (0:11:40) ====="],
     "2 failed, 30 passed, 277 deselected in 700.01s (0:11:40)"),
    (["1 error in 3.20s", "passed in the end"], "1 error in 3.20s"),
    (["[   1.2] Kernel panic - not syncing: Attempted to kill init!"], None),
])
def test_pytest_summary_line(lines, want):
    assert qemu.summary_line(lines) == want


def test_verdicts():
    assert qemu.verdict("0\n", [], False, 9) == (0, "")
    assert qemu.verdict("1\n", ["Kernel panic"], True, 9) == (1, "")     # it did report
    code, why = qemu.verdict(None, ["[ 3.1] Kernel panic - not syncing: VFS"], False, 9)
    assert code == qemu.NO_REPORT == 125 and why.startswith("kernel panic: [ 3.1] Kernel")
    assert qemu.verdict(None, [], True, 900) == (125, "no report within 900 s (the machine "
                                                       "was stopped)")
    assert qemu.verdict(None, [], False, 9)[0] == 125
    assert qemu.verdict("x", [], False, 9)[0] == 125


def test_a_run_reads_the_console_and_the_rc_file(tmp_path, capsys):
    fake = ("echo 'kernel-test: uname -r 6.1.0-57-amd64'; echo '3 passed in 1.00s'; "
            f"echo 4 > {tmp_path}/rc; printf 'no newline'")
    out = qemu.run(["sh", "-c", fake], tmp_path, 30, "6.1", tmp_path / "log")
    assert (out.code, out.why, out.uname, out.summary) == (4, "", "6.1.0-57-amd64",
                                                           "3 passed in 1.00s")
    assert out.boot_seconds is not None and out.boot_seconds <= out.seconds
    assert "[6.1] 3 passed in 1.00s" in capsys.readouterr().out
    assert (tmp_path / "log").read_text().endswith("no newline\n")


def test_a_machine_that_never_reports_is_stopped_at_the_deadline(tmp_path):
    out = qemu.run(["sh", "-c", "echo booting; exec sleep 60"], tmp_path, 1.5, "6.12",
                   tmp_path / "log")
    assert out.code == 125 and out.why.startswith("no report within 2 s"), out
    assert out.seconds < 30 and out.uname is None

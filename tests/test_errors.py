"""errors.KernelError keeps its meaning in attributes, errors.describe() is the one formatter,
and the CLI turns any OSError (also one raised in a forked child) into exit 1 and one line.

Unprivileged: the kernel errors are constructed, or come from a read-only statx; the CLI's
library calls are monkeypatched.
"""
from __future__ import annotations

import errno
import os
import pickle

import pytest
from typer.testing import CliRunner

from mirrormount.cli import app
from mirrormount.errors import (EXIT_FAILED, KernelError, MirrormountError, OperationError,
                                describe)
from mirrormount.guest.guests import Guests
from mirrormount.kernel import child
from mirrormount.kernel import syscalls as sc


# ------------------------------------------------------------------ KernelError itself
def test_kernel_error_keeps_its_parts_in_attributes():
    exc = KernelError(errno.EINVAL, "move_mount", "/a", "/b", where="in guest c1")
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.op, exc.filename, exc.filename2, exc.where) == \
        (errno.EINVAL, "move_mount", "/a", "/b", "in guest c1")
    assert exc.strerror == os.strerror(errno.EINVAL)       # plain: no operation inside
    assert "move_mount" in str(exc) and "move_mount" in repr(exc)


def test_kernel_error_is_also_the_errno_builtin_subclass():
    # like OSError(ENOENT, ...) itself: `except FileNotFoundError` around a wrapper works
    assert isinstance(KernelError(errno.ENOENT, "statx", "/x"), FileNotFoundError)
    assert isinstance(KernelError(errno.EPERM, "mount", "/x"), PermissionError)
    assert isinstance(KernelError(errno.EACCES, "openat2", "/x"), PermissionError)
    assert type(KernelError(errno.EBUSY, "umount", "/x")) is KernelError


@pytest.mark.parametrize("err", [errno.EINVAL, errno.ENOENT, errno.EPERM, errno.EBUSY,
                                 errno.ETIMEDOUT])
def test_kernel_error_survives_pickle(err):
    exc = KernelError(err, "pivot_root", ".", "mnt", where="in guest c1")
    exc.extra = "kept"   # type: ignore[attr-defined]
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and isinstance(back, KernelError)
    assert (back.errno, back.strerror, back.op, back.filename, back.filename2, back.where) == \
        (err, os.strerror(err), "pivot_root", ".", "mnt", "in guest c1")
    assert back.extra == "kept"
    assert describe(back) == describe(exc)


def test_syscall_wrapper_raises_kernel_error():
    # statx is read-only (not guarded by conftest): a real kernel error, no privilege needed
    with pytest.raises(KernelError) as info:
        sc.statx("/nonexistent/mirrormount-test")
    exc = info.value
    assert isinstance(exc, FileNotFoundError)
    assert (exc.errno, exc.op, exc.filename, exc.filename2) == \
        (errno.ENOENT, "statx", "/nonexistent/mirrormount-test", None)
    assert exc.strerror == os.strerror(errno.ENOENT)


def test_syscall_check_names_one_or_two_paths(monkeypatch):
    monkeypatch.setattr(sc.ctypes, "get_errno", lambda: errno.EINVAL)
    with pytest.raises(KernelError) as one:
        sc._check(-1, "umount", "/x")
    assert (one.value.op, one.value.filename, one.value.filename2) == ("umount", "/x", None)
    with pytest.raises(KernelError) as two:
        sc._check(-1, "pivot_root", ".", "old")
    assert (two.value.filename, two.value.filename2) == (".", "old")
    with pytest.raises(KernelError) as none:
        sc._check(-1, "statmount", "")
    assert none.value.filename is None
    assert sc._check(3, "open_tree", "/x") == 3


# ------------------------------------------------------------------ describe()
def test_describe_one_path():
    text = describe(KernelError(errno.ENOENT, "umount", "/mnt/x"))
    assert text == "umount /mnt/x failed: No such file or directory (ENOENT)"


def test_describe_two_paths_and_where():
    exc = KernelError(errno.ENOENT, "mount", "/src", "/srv/x", where="in guest c1")
    assert describe(exc) == ("mount /src on /srv/x in guest c1 failed: "
                             "No such file or directory (ENOENT)")


def test_describe_where_added_by_a_caller():
    exc = KernelError(errno.ENOENT, "openat2", "/srv/x")
    exc.where = "in guest c2"
    assert describe(exc).startswith("openat2 /srv/x in guest c2 failed: ")


def test_describe_no_path():
    assert describe(KernelError(errno.ENOENT, "statmount")) == \
        "statmount failed: No such file or directory (ENOENT)"


def test_einval_from_pivot_root_and_move_mount_hints_at_propagation():
    for op in ("pivot_root", "move_mount"):
        text = describe(KernelError(errno.EINVAL, op, ".", "old"))
        assert text.startswith(f"{op} . on old failed: Invalid argument (EINVAL); hint: ")
        assert "propagation" in text and "shared" in text, text


def test_einval_from_mount_gets_no_propagation_hint():
    text = describe(KernelError(errno.EINVAL, "mount", "/src", "/dst"))
    assert "propagation" not in text and "pivot_root" not in text and "shared" not in text
    assert "(EINVAL)" in text


@pytest.mark.parametrize("op", ["fsopen", "fsconfig", "fsmount", "mount_setattr", "mount"])
def test_einval_from_the_new_mount_api_gets_no_propagation_hint(op):
    # These build or configure a detached mount, which has no parent: propagation can
    # never be why they fail.
    text = describe(KernelError(errno.EINVAL, op, "/src", "/dst in c1"))
    assert "propagation" not in text and "shared" not in text and "pivot_root" not in text


def test_the_kernels_own_words_are_shown_with_the_errno():
    exc = KernelError(errno.ENOENT, "fsconfig", "/dev/nope", "/mnt/x in c1")
    exc.detail = "/dev/nope: Can't lookup blockdev"
    text = describe(exc)
    assert text == ("fsconfig /dev/nope on /mnt/x in c1 failed: No such file or directory "
                    "(ENOENT): the kernel says: /dev/nope: Can't lookup blockdev")
    again = pickle.loads(pickle.dumps(exc))          # from a forked child, intact
    assert again.detail == exc.detail and describe(again) == text


def test_enodev_from_fsopen_names_an_unknown_filesystem_type():
    text = describe(KernelError(errno.ENODEV, "fsopen", "no-such-fs", "/mnt/x in c1"))
    assert "no such filesystem type" in text and "/proc/filesystems" in text


def test_ebusy_from_umount_shows_the_busy_hint():
    text = describe(KernelError(errno.EBUSY, "umount", "/mnt/usb", where="in guest c1"))
    assert text == ("umount /mnt/usb in guest c1 failed: Device or resource busy (EBUSY); "
                    "hint: something still uses it: try `mirrormount busy`")


def test_ebusy_from_another_op_has_no_busy_hint():
    assert "hint" not in describe(KernelError(errno.EBUSY, "mount", "/a", "/b"))


def test_enospc_from_mount_points_at_mount_max():
    text = describe(KernelError(errno.ENOSPC, "mount", "/a", "/b"))
    assert "(ENOSPC); hint: " in text and "/proc/sys/fs/mount-max" in text


@pytest.mark.parametrize("err,op,needle", [
    (errno.ELOOP, "open_tree", "nsfs"),
    (errno.ENOSYS, "statmount", "kernel lacks"),
    (errno.EPERM, "setns", "needs root"),
    (errno.EPERM, "mount", "needs root"),
])
def test_other_hints(err, op, needle):
    assert needle in describe(KernelError(err, op, "/x"))


def test_describe_caller_op_wins_for_the_words_but_hints_follow_the_kernel_op():
    exc = KernelError(errno.EINVAL, "move_mount", "/src", "/dst")
    text = describe(exc, "mount")
    assert text.startswith("mount /src on /dst failed: Invalid argument (EINVAL)")
    assert "propagation" in text


def test_describe_a_plain_oserror_from_python():
    exc = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/etc/nope")
    assert describe(exc) == "operation /etc/nope failed: No such file or directory (ENOENT)"
    assert describe(exc, "resolve") == \
        "resolve /etc/nope failed: No such file or directory (ENOENT)"
    # no errno, no strerror: still one sane line
    assert describe(OSError("something odd")) == "operation failed: something odd"
    with pytest.raises(OSError) as info:
        os.rmdir("/nonexistent/mirrormount-test")
    text = describe(info.value)
    assert text.startswith("operation /nonexistent/mirrormount-test failed: ")
    assert text.endswith("(ENOENT)")


def test_describe_is_one_line():
    exc = KernelError(errno.ENOENT, "mount", "/a\nb")
    assert "\n" not in describe(exc)


# ------------------------------------------------------------------ the CLI's handler
@pytest.fixture
def cli(tmp_path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["--base", str(tmp_path / "base"),
                                   "--state", str(tmp_path / "state"), *args])
    return invoke


def _one_line(result) -> str:
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("mirrormount: ")
    return result.stderr


def _raise(exc: BaseException):
    def fn(*args, **kwargs):
        raise exc
    return fn


def test_cli_kernel_error_exit_1_and_one_line(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all",
                        _raise(KernelError(errno.EINVAL, "pivot_root", ".", "mnt")))
    r = cli("list")
    assert r.exit_code == EXIT_FAILED, (r.output, r.exception)
    line = _one_line(r)
    assert "pivot_root . on mnt failed: Invalid argument (EINVAL); hint:" in line


def _in_child_raises_busy() -> None:
    raise KernelError(errno.EBUSY, "umount", "/mnt/usb", where="in guest c1")


def test_cli_kernel_error_from_a_child_exit_1(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all", lambda self: child.run(_in_child_raises_busy))
    r = cli("list")
    assert r.exit_code == EXIT_FAILED, (r.output, r.exception)
    line = _one_line(r)
    assert "umount /mnt/usb in guest c1 failed: Device or resource busy (EBUSY)" in line
    assert "try `mirrormount busy`" in line


def _in_child_real_kernel_error() -> None:
    sc.statx("/nonexistent/mirrormount-test")


def test_cli_real_kernel_error_from_a_child_exit_1(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all", lambda self: child.run(_in_child_real_kernel_error))
    r = cli("list")
    assert r.exit_code == EXIT_FAILED, (r.output, r.exception)
    assert "statx /nonexistent/mirrormount-test failed:" in _one_line(r)


def test_cli_child_that_died_exit_1(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all", lambda self: child.run(os._exit, 3))
    r = cli("list")
    assert r.exit_code == EXIT_FAILED, (r.output, r.exception)
    assert "died without reporting" in _one_line(r)


def test_cli_plain_oserror_exit_1(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all",
                        _raise(PermissionError(errno.EACCES, "Permission denied", "/x")))
    r = cli("list")
    assert r.exit_code == EXIT_FAILED
    assert "/x failed: Permission denied (EACCES)" in _one_line(r)


def test_cli_domain_error_keeps_its_exit_code(cli, monkeypatch):
    class Odd(MirrormountError):
        exit_code = 3
    monkeypatch.setattr(Guests, "list_all", _raise(Odd("it is busy")))
    r = cli("list")
    assert r.exit_code == 3
    assert _one_line(r) == "mirrormount: it is busy\n"
    monkeypatch.setattr(Guests, "list_all", _raise(OperationError("nope")))
    assert cli("list").exit_code == 1


def test_cli_interrupted_exit_130(cli, monkeypatch):
    monkeypatch.setattr(Guests, "list_all", _raise(KeyboardInterrupt()))
    r = cli("list")
    assert r.exit_code == 130
    assert _one_line(r) == "mirrormount: interrupted\n"

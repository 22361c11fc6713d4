#!/usr/bin/env python3
"""`make kernel-test`: the privileged vm-tests on Debian's 6.1 and 6.12 kernels, under QEMU.

For each kernel series in KERNELS (default "6.1 6.12", one after the other: TCG keeps both
CPUs busy): fetch the kernel (kernels.py, cached), build an initramfs (initramfs.py), boot it
(qemu.py) with this machine's / as a read-only root under a tmpfs overlay, and run

    PYTHON -m pytest -q -p no:cacheprovider $KERNEL_TEST_ARGS     (default: -v -m kernels vm-tests)

in this repository inside the guest. Every vm-test runs in both sandbox modes (private and
rshared) as on the host. The guest prints its `uname -r`; this prints pytest's summary line
per kernel and exits 1 when any kernel's run failed or never reported back (exit 125 inside:
panic, hang past KERNEL_TEST_TIMEOUT seconds, failed init), naming the kernel.

Environment: KERNELS ("6.1", "6.12", "6.1 6.12"), KERNEL_CACHE (kernels.py),
KERNEL_TEST_ARGS, KERNEL_TEST_TIMEOUT (per kernel, default 1500), KERNEL_TEST_MEMORY (MiB,
default 3072), KERNEL_TEST_CPUS (default 2). Needs root (the guest's tests do) and
qemu-system-x86, busybox-static, zstd (.ci/debian-packages).
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import initramfs  # noqa: E402
import kernels  # noqa: E402
import qemu  # noqa: E402
from mirrormount.kernel.removal import remove_tree  # noqa: E402

# -q (always given) and -v cancel out: one line per test file, so a CI log shows progress.
DEFAULT_ARGS = "-v -m kernels vm-tests"


def guest_env(python: str) -> dict[str, str]:
    """The environment the tests see in the guest (the host's own is not carried in)."""
    return {"PATH": f"{Path(python).parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                    "/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}


def write_job(job: Path, python: str, args: str, modules: Path) -> None:
    shutil.copy(HERE / "guest.sh", job / "guest.sh")
    (job / "env").write_text("".join(f"{k}={shlex.quote(v)}\n"
                                     for k, v in guest_env(python).items()))
    (job / "cwd").write_text(str(REPO) + "\n")
    (job / "modules").write_text(str(modules) + "\n")
    (job / "command").write_text(
        f"exec {shlex.quote(python)} -m pytest -q -p no:cacheprovider {args}\n")


def one(series: str, cache: Path, env: dict[str, str]) -> tuple[int, str]:
    """Boot one kernel and run the tests; (exit code, the line for the final report)."""
    try:
        k = kernels.fetch(series, cache)
    except kernels.FetchError as exc:
        return 1, f"FAILED kernel {series}: {exc}"
    timeout = float(env.get("KERNEL_TEST_TIMEOUT", "1500"))
    job = Path(tempfile.mkdtemp(prefix=f"mirrormount-kernel-test-{series}-"))
    try:
        try:
            mods = initramfs.build(k.modules, Path("/bin/busybox"), job / "initramfs.cpio")
        except (initramfs.ModuleError, OSError) as exc:
            return 1, f"FAILED kernel {series} ({k.package}): initramfs: {exc}"
        write_job(job, sys.executable, env.get("KERNEL_TEST_ARGS", DEFAULT_ARGS), k.modules)
        print(f"kernel-test: booting {k.package} (modules {' '.join(mods)})", flush=True)
        cmd = qemu.argv(k.vmlinux, job / "initramfs.cpio", job,
                        cpus=int(env.get("KERNEL_TEST_CPUS", "2")),
                        memory_mb=int(env.get("KERNEL_TEST_MEMORY", "3072")))
        log = cache / f"console-{series}.log"
        out = qemu.run(cmd, job, timeout, series, log)
    finally:
        remove_tree(str(job))
    boot = f"{out.boot_seconds:.1f}" if out.boot_seconds is not None else "?"
    facts = (f"uname -r {out.uname or '?'}; {out.summary or 'no pytest summary'}; "
             f"boot {boot} s, all {out.seconds:.0f} s")
    if out.code == 0:
        return 0, f"ok     kernel {series}: {facts}"
    reason = out.why or f"tests exited {out.code}"
    return 1, (f"FAILED kernel {series} ({k.package}): {reason} (exit {out.code}); {facts}; "
               f"console: {log}")


def main() -> int:
    env = dict(os.environ)
    if os.geteuid() != 0:
        print("kernel-test: needs root (the vm-tests inside the guest do)", file=sys.stderr)
        return 2
    try:
        wanted = kernels.parse_series(env.get("KERNELS", ""))
    except kernels.FetchError as exc:
        print(f"kernel-test: {exc}", file=sys.stderr)
        return 2
    cache = kernels.cache_dir(env)
    cache.mkdir(parents=True, exist_ok=True)
    results = [one(s, cache, env) for s in wanted]
    print("kernel-test: results", flush=True)
    for _, line in results:
        print(f"  {line}")
    return 1 if any(code for code, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())

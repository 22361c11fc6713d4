"""Debian's kernels for the test boots: which package, fetched once, unpacked, cached.

A kernel series ("6.1", "6.12") names the newest unsigned amd64 image package apt knows:
bookworm's linux-image-6.1.0-N-amd64-unsigned and bookworm-security's
linux-image-6.12.N+debM-amd64-unsigned (the unsigned package holds the same kernel as the
signed one, without the Secure Boot wrapper). It is fetched with `apt-get download` and
unpacked with `dpkg-deb -x` into the cache: nothing is installed, /boot is never touched, and
apt's choices for this machine do not change.

Cache layout (KERNEL_CACHE, default $XDG_CACHE_HOME/mirrormount-kernels or
~/.cache/mirrormount-kernels), one folder per package:
  PACKAGE/root/      the unpacked package (boot/, lib/modules/VERSION/)
  PACKAGE/vmlinux    the uncompressed kernel (vmlinux.py)
  PACKAGE/complete   written last: a folder without it is an interrupted fetch, redone
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import vmlinux

# series -> the package names that belong to it; the number group orders them (newest last).
SERIES: dict[str, re.Pattern[str]] = {
    "6.1": re.compile(r"^linux-image-6\.1\.0-(\d+)-amd64-unsigned$"),
    "6.12": re.compile(r"^linux-image-6\.12\.(\d+)\+deb\d+-amd64-unsigned$"),
}


class FetchError(Exception):
    """The kernel could not be found or fetched; the message names the series and why."""


@dataclass(frozen=True)
class Kernel:
    series: str          # "6.1"
    package: str         # linux-image-6.1.0-57-amd64-unsigned
    folder: Path         # the cache folder for this package

    @property
    def vmlinux(self) -> Path:
        return self.folder / "vmlinux"

    @property
    def modules(self) -> Path:
        """lib/modules/VERSION of the unpacked package (the one folder there)."""
        [version] = list((self.folder / "root/lib/modules").iterdir())
        return version


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """KERNEL_CACHE, else $XDG_CACHE_HOME/mirrormount-kernels, else ~/.cache/...; env
    defaults to os.environ."""
    e: Mapping[str, str] = os.environ if env is None else env
    if e.get("KERNEL_CACHE"):
        return Path(e["KERNEL_CACHE"])
    base = e.get("XDG_CACHE_HOME") or str(Path(e.get("HOME", "/root")) / ".cache")
    return Path(base) / "mirrormount-kernels"


def parse_series(text: str) -> list[str]:
    """KERNELS="6.1 6.12" (spaces or commas; empty: all) -> ["6.1", "6.12"].
    Raises FetchError naming an unknown series."""
    wanted = [w for w in re.split(r"[\s,]+", text.strip()) if w] or list(SERIES)
    unknown = [w for w in wanted if w not in SERIES]
    if unknown:
        raise FetchError(f"unknown kernel series {', '.join(unknown)} "
                         f"(known: {', '.join(SERIES)})")
    return list(dict.fromkeys(wanted))


def pick(series: str, names: list[str]) -> str | None:
    """The newest package of a series among package names (pure); None when there is none."""
    pattern = SERIES[series]
    found = [(int(m.group(1)), n) for n in names if (m := pattern.match(n))]
    return max(found)[1] if found else None


def _apt_names() -> list[str]:
    cp = subprocess.run(["apt-cache", "pkgnames", "linux-image-6."], capture_output=True,
                        text=True)
    return cp.stdout.split()


def _cached(cache: Path, series: str) -> list[str]:
    if not cache.is_dir():
        return []
    return [p.name for p in cache.iterdir() if (p / "complete").exists()
            and SERIES[series].match(p.name)]


def resolve(series: str, cache: Path) -> str:
    """The package for a series: the newest apt knows (after one `apt-get update` if it
    knows none), else the newest already in the cache (offline). Raises FetchError."""
    name = pick(series, _apt_names())
    if name is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        name = pick(series, _apt_names())
    if name is None:
        name = pick(series, _cached(cache, series))
    if name is None:
        raise FetchError(f"kernel {series}: no package matching {SERIES[series].pattern} in "
                         "apt's lists (bookworm and bookworm-security are needed)")
    return name


def fetch(series: str, cache: Path) -> Kernel:
    """The kernel of a series, downloaded and unpacked unless the cache has it already."""
    package = resolve(series, cache)
    k = Kernel(series, package, cache / package)
    if (k.folder / "complete").exists():
        return k
    k.folder.mkdir(parents=True, exist_ok=True)
    for stale in k.folder.glob("*.deb"):
        stale.unlink()
    print(f"kernel-test: fetching {package}", flush=True)
    cp = subprocess.run(["apt-get", "download", "-q", package], cwd=k.folder,
                        capture_output=True, text=True)
    debs = list(k.folder.glob("*.deb"))
    if cp.returncode != 0 or len(debs) != 1:
        raise FetchError(f"kernel {series}: apt-get download {package} failed: "
                         f"{cp.stderr.strip()}")
    root = k.folder / "root"
    cp = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], capture_output=True,
                        text=True)
    if cp.returncode != 0:
        raise FetchError(f"kernel {series}: dpkg-deb -x failed: {cp.stderr.strip()}")
    debs[0].unlink()    # the unpacked tree is what the boots use
    [image] = list((root / "boot").glob("vmlinuz-*"))
    try:
        kernel = vmlinux.extract(image.read_bytes())
    except vmlinux.ExtractError as exc:
        raise FetchError(f"kernel {series}: {image.name}: {exc}") from exc
    tmp = k.folder / "vmlinux.tmp"
    tmp.write_bytes(kernel)
    os.replace(tmp, k.vmlinux)
    (k.folder / "complete").write_text(package + "\n")
    return k

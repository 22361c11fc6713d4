"""Every package of mirrormount is shipped: pyproject's find pattern must match each
directory that holds an __init__.py (a plain `pip install .` once left out the layers)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_in_the_distribution():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(setuptools.find_packages(str(REPO), include=include))
    on_disk = {".".join(p.parent.relative_to(REPO).parts)
               for p in (REPO / "mirrormount").rglob("__init__.py")}
    assert on_disk == shipped
    assert {"mirrormount.kernel", "mirrormount.guest", "mirrormount.busy",
            "mirrormount.cli"} <= shipped


def test_wheel_installs_the_man_page(tmp_path):
    """`pip install` puts mirrormount.8 in PREFIX/share/man/man8: the wheel carries it as
    data (pyproject [tool.setuptools.data-files]). Built from a copy of the sources, so the
    build leaves nothing in the work tree; offline (no build isolation)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "man", src / "man")
    shutil.copytree(REPO / "mirrormount", src / "mirrormount",
                    ignore=shutil.ignore_patterns("__pycache__"))
    cp = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                         "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                        capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr
    (wheel,) = (tmp_path / "dist").glob("mirrormount-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    page = [n for n in names if n.endswith(".data/data/share/man/man8/mirrormount.8")]
    assert page, names
    assert zipfile.ZipFile(wheel).read(page[0]) == (REPO / "man" / "mirrormount.8").read_bytes()

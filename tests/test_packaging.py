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

"""The package's layers point one way (kernel <- guest <- busy <- cli; errors.py and record.py
shared) and no module imports another that imports it back, directly or around a loop.
Imports made inside functions (lazy ones) count too: a cycle is a cycle whenever it is
closed."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mirrormount"
ORDER = {"kernel": 0, "guest": 1, "busy": 2, "views": 3, "cli": 4}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The mirrormount modules `path` imports, resolved to module names."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("mirrormount"):
                continue
            for alias in node.names:     # `from . import x` may name a module
                sub = f"{mod}.{alias.name}"
                found.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (PKG.parent / sub.replace(".", "/")).is_dir() else mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mirrormount"))
    return found - {name}


GRAPH = {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def layer(mod: str) -> int | None:
    parts = mod.split(".")
    return ORDER.get(parts[1]) if len(parts) > 1 else None


def test_layers_point_one_way():
    wrong = [(m, d) for m, deps in GRAPH.items() for d in deps
             if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]
    assert wrong == [], f"a lower layer imports a higher one: {wrong}"


def test_no_import_cycles():
    # A package's __init__ importing its own modules is how commands register; the
    # modules must not import the package back, which is what this checks.
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d not in GRAPH:
                continue
            if seen.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in seen:
                visit(d)
        stack.pop()
        seen[m] = 2

    for m in sorted(GRAPH):
        if m not in seen:
            visit(m)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_module_is_over_600_lines():
    big = {module_name(p): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 600}
    assert big == {}, big

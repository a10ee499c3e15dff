"""The package's shape: no import circles (imports inside functions count), no module a reader cannot hold.

Run as a script for the report: ``python tests/test_structure.py`` prints every module's lines and the circles.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "resnet"
MAX_LINES, BUDGET_LINES = 500, 300


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file (a package's own parents excluded)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m in known and m != name and not name.startswith(m + ".")}


def circles(root: Path = PACKAGE) -> list[list[str]]:
    """Groups of modules that import each other, directly or around a loop (Tarjan's strongly connected parts)."""
    known = modules(root)
    graph = {m: imports(m, p, known) for m, p in known.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return groups


def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_the_package_has_no_import_circles():
    assert circles() == []


def test_the_counter_finds_a_circle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    assert circles(pkg) == [["pkg.a", "pkg.b"]]


def test_no_module_is_over_its_size():
    sizes = {name: lines(path) for name, path in modules().items()}
    assert {n: k for n, k in sizes.items() if k > MAX_LINES} == {}
    assert sizes["resnet.budget"] < BUDGET_LINES


if __name__ == "__main__":
    for name, path in sorted(modules().items(), key=lambda kv: -lines(kv[1])):
        print(f"{lines(path):5d}  {name}")
    print("total", sum(lines(p) for p in modules().values()), "lines in resnet/;",
          sum(lines(p) for p in (ROOT / "bench").rglob("*.py")), "in bench/")
    found = circles()
    for group in found:
        print("circle:", " <-> ".join(group))
    print(len(found), "import circles")
    sys.exit(1 if found else 0)

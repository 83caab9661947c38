"""The module structure of `tet`: no import cycles, no use of another module's private
names.  An AST scan of every module under tet/: imports inside functions count, those
under ``if TYPE_CHECKING:`` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "tet"

def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()
EXTENSIONS = frozenset({"tet._native"})  # the compiled kernels (tet.native loads them)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return ((isinstance(t, ast.Name) and t.id == "TYPE_CHECKING")
            or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (TYPE_CHECKING blocks left out)."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                todo.extend(child.orelse)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            todo.append(child)
    return found


def _scan() -> tuple[dict[str, set[str]], list[str]]:
    """The import graph among tet modules and the private names used across modules."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    private: list[str] = []
    for mod, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        imported: dict[str, str] = {}  # local name -> tet module
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    while target and target not in MODULES:
                        target = target.rpartition(".")[0]
                    if target:
                        edges[mod].add(target)
                        if alias.asname:
                            imported[alias.asname] = alias.name
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            if not (base == "tet" or base.startswith("tet.")):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES:
                    edges[mod].add(full)
                    imported[alias.asname or alias.name] = full
                elif full in EXTENSIONS:
                    continue
                elif base in MODULES:
                    edges[mod].add(base)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{mod}: from {base} import {alias.name}")
        for node in ast.walk(tree):  # module._name on an imported tet module
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                private.append(f"{mod}: {imported[node.value.id]}.{node.attr}")
        edges[mod].discard(mod)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_scan_sees_the_modules() -> None:
    edges, _ = _scan()
    assert {"tet.file", "tet.reader", "tet.query.api", "tet.opencache"} <= set(edges)
    assert "tet.reader" in edges["tet.file"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_tet_modules() -> None:
    edges, _ = _scan()
    assert _cycles(edges) == []


def test_no_module_uses_another_modules_private_names() -> None:
    _, private = _scan()
    assert private == []


def test_the_reader_core_imports_nothing_above_it() -> None:
    edges, _ = _scan()
    above = {"tet", "tet.file", "tet.query.api", "tet.query.execute", "tet.dask",
             "tet.opencache", "tet.writer", "tet.many", "tet.export_zarr", "tet.export_plan"}
    assert not (edges["tet.reader"] & above)
    # the dask integration and the open-file cache sit on the reader, below the façade
    assert not (edges["tet.opencache"] & (above - {"tet.opencache"}))
    assert not (edges["tet.dask"] & (above - {"tet.dask", "tet.opencache"}))

"""No import cycles between hutong's modules (DESIGN.md: arrows go downwards only).

The graph is built from the source with :mod:`ast`, not by importing: every
``import hutong.x`` / ``from hutong.x import y`` (``y`` counts as the module
``hutong.x.y`` when that is a module), at module level or inside a function,
since a deferred import is still an arrow (it only hides the cycle from the
interpreter).  Imports under ``if TYPE_CHECKING:`` are annotations, not
arrows, and are left out.  Issue 13 measured one cycle at bc329d5
(hutong.fhir.service -> hutong.security.guard -> hutong.security.policy ->
hutong.fhir.service); it went when the policy got its MPI injected
(hutong.security.policy_store.mpi_of).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hutong"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, here: str, is_package: bool, modules: set[str]) -> set[str]:
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("hutong"):
                    out.add(_nearest(a.name, modules))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here.split(".") if is_package else here.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            if base.startswith("hutong"):
                for a in node.names:
                    full = f"{base}.{a.name}"
                    out.add(full if full in modules else _nearest(base, modules))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out.discard(here)
    return out


def _nearest(name: str, modules: set[str]) -> str:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    return {m: _imports(ast.parse(p.read_text(encoding="utf-8")), m, p.name == "__init__.py", modules)
            for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(old)
    return sorted(out)


def test_the_graph_sees_real_imports() -> None:
    g = import_graph()
    assert "hutong.store.repository" in g["hutong.security.policy"]
    assert "hutong.security.policy" in g["hutong.fhir.service"]


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# Cycles being worked on, each with its owner.  Empty since the identifier fast
# path and the SQL repository share hutong.store.rows instead of importing each
# other (issue 13).  This list only shrinks: a new cycle fails, and so does one
# listed here that is gone.
KNOWN: dict[tuple[str, ...], str] = {}


def test_no_import_cycles() -> None:
    found = {tuple(c) for c in cycles(import_graph())}
    new = sorted(found - set(KNOWN))
    if new:
        pytest.fail("import cycles between hutong modules:\n" + "\n".join(" <-> ".join(c) for c in new))
    gone = sorted(set(KNOWN) - found)
    assert not gone, f"no longer cycles: remove them from KNOWN: {gone}"


if __name__ == "__main__":  # python tests/test_import_cycles.py: print the cycles
    for c in cycles(import_graph()):
        print(len(c), " ".join(c))

"""The import graph: no cycle between the project's files, the CLI at the top, and a light
``dynasim --help`` (issue 14)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("dynasim", "replay")
HEAVY = ("pandas", "aiohttp", "dask", "plotly")


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports anywhere in the file (top level or inside a
    function: a late import is still an edge). ``from pkg import name`` is an edge to
    ``pkg.name`` when that is a module, else to ``pkg``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                if sub in modules:
                    found.add(sub)
                elif node.module in modules:
                    found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = _module_files()
    return {m: _imports(f, modules) - {m} for m, f in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_files():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the project
    assert cycles(graph) == []


def test_nothing_imports_the_cli():
    graph = import_graph()
    outside = {m: sorted(i for i in deps if i.startswith("dynasim.cli"))
               for m, deps in graph.items()
               if not m.startswith("dynasim.cli") and m != "dynasim.__main__"}
    assert {m: d for m, d in outside.items() if d} == {}


def test_help_does_not_import_heavy_packages():
    from dynasim.experiments.benchmark import run_startup_benchmark

    imported = run_startup_benchmark(repeat=1)["heavy_imported"]
    assert not set(imported) & set(HEAVY), imported

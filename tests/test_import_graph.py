"""The package's import graph has no cycles and points one way (docs/architecture.md):
envs, common <- sampling <- algos <- evaluation <- runs (experiment, train, cli, bench).

Every ``import`` / ``from ... import`` statement in metarl/ and envs/ counts, the ones inside
functions too: a lazy import only hides a circle from the interpreter, not from the reader. An edge
goes to the module named (``from metarl.common import trpo`` names ``metarl.common.trpo``); the
implicit import of a parent package's ``__init__`` is not an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> the package it installs as (pyproject.toml: envs/ is installed as metarl.envs)
SOURCES = {ROOT / "metarl": "metarl", ROOT / "envs": "metarl.envs"}


def module_files() -> dict[str, Path]:
    modules = {}
    for folder, package in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` names the submodule when there is one, else the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                # `import a.b.c` binds a.b.c; the nearest enclosing module in the package is the edge
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    # imported inside a function (sampling/collector.py imports the oracle env wrapper lazily)
    assert "metarl.sampling.oracle_env" in graph["metarl.sampling.collector"]
    assert "metarl.common.tasks" in graph["metarl.envs.navigation"]


#: package prefix -> layer; a module may import only modules of its own layer or below
LAYERS = {"metarl.envs": 0, "metarl.common": 0, "metarl.sampling": 1, "metarl.algos": 2, "metarl.evaluation": 3}
RUNS_LAYER = 4  # everything else: metarl/__init__ (the public API), experiment, train, cli, bench


def layer(module: str) -> int:
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return RUNS_LAYER


def family(module: str) -> str | None:
    """The algorithm family package of a module under metarl.algos (None for others and algos.base)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "algos" and parts[2] != "base" else None


def test_layer_and_family_of():
    assert layer("metarl.envs.navigation") == 0 and layer("metarl.sampling.collector") == 1
    assert layer("metarl.algos.maml.fisher") == 2 and layer("metarl.train") == RUNS_LAYER
    assert family("metarl.algos.maml.fisher") == "maml" and family("metarl.algos.base") is None


def test_imports_point_down_the_layers():
    upward = [f"{a} -> {b}" for a, targets in import_graph().items() for b in targets if layer(b) > layer(a)]
    assert not upward, "imports from a lower layer to a higher one: " + "; ".join(sorted(upward))


def test_algorithm_families_do_not_import_each_other():
    crossing = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if family(a) and family(b) and family(a) != family(b)
    ]
    assert not crossing, "what two families share belongs in metarl.common: " + "; ".join(sorted(crossing))


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_package_is_installed():
    """pyproject.toml lists packages explicitly; one left out imports from a checkout (editable
    installs) but is missing from a wheel, so the list must name every package folder."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"

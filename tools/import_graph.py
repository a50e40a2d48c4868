"""The import graph of a Python package, read with the standard library only (ast over the files, nothing imported).

Every `import` and `from ... import` counts, at module level or inside a function (lazy imports too); relative
imports are resolved. A *unit* is a subpackage (`synthrel/zoo/`) or a top-level module (`synthrel/jobs.py`);
the package's own `__init__.py` is the unit named like the package. Used by tests/core/test_layering.py and by
tools/architecture.py (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """The modules of `known` that the file imports (a name imported from a package counts as its submodule
    when there is one: `from synthrel.tiny import job` is an edge to synthrel.tiny.job)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import synthrel.zoo.registry.x` -> the deepest known module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(package_dir: str | Path) -> dict[str, set[str]]:
    """module -> the modules of the same package it imports (every module is a key)."""
    package_dir = Path(package_dir)
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    known = set(files)
    return {module: imports_of(path, module, known) for module, path in files.items()}


def unit_of(module: str) -> str:
    """`synthrel.zoo.registry` -> `zoo`; `synthrel.jobs` -> `jobs`; `synthrel` -> `synthrel`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def unit_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, set[str]]]:
    """unit -> {imported unit: the modules that import it}; every unit is a key."""
    units: dict[str, dict[str, set[str]]] = {unit_of(m): {} for m in graph}
    for module, targets in graph.items():
        for target in targets:
            a, b = unit_of(module), unit_of(target)
            if a != b:
                units[a].setdefault(b, set()).add(module)
    return units


def find_cycle(graph: dict) -> list[str] | None:
    """One cycle of `graph` (node -> iterable of nodes) as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_violations(units: dict[str, dict[str, set[str]]], layers: list[tuple[str, set[str]]]) -> list[str]:
    """Edges that point to a higher layer, and units that no layer names."""
    level = {unit: k for k, (_, members) in enumerate(layers) for unit in members}
    problems = [f"unit {u!r} is in no layer" for u in sorted(units) if u not in level]
    for unit, targets in sorted(units.items()):
        for target, modules in sorted(targets.items()):
            if unit in level and target in level and level[target] > level[unit]:
                problems.append(f"{unit} ({layers[level[unit]][0]}) imports {target} ({layers[level[target]][0]}, "
                                f"a higher layer) in {', '.join(sorted(modules))}")
    return problems


def edges_into(graph: dict[str, set[str]], unit: str) -> set[tuple[str, str]]:
    """(importer, imported) module pairs from outside `unit` into it."""
    return {(m, t) for m, targets in graph.items() for t in targets if unit_of(t) == unit and unit_of(m) != unit}


def longest_path_layers(units: dict[str, dict[str, set[str]]]) -> dict[str, int]:
    """Each unit's height in an acyclic unit graph: 0 for a unit that imports none, else 1 + its highest import."""
    height: dict[str, int] = {}

    def h(unit: str) -> int:
        if unit not in height:
            height[unit] = 0
            height[unit] = 1 + max((h(t) for t in units.get(unit, {})), default=-1)
        return height[unit]

    for unit in units:
        h(unit)
    return height

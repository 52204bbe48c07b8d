"""Who may import whom: calls go down, never back up.

keyseg is the library; pipelines/ (one module per stage) and cli.py sit on top of it.
Every import statement counts, at module level or inside a function: a lazy import still
ties the two modules together.

- nothing under keyseg/ imports `pipelines` or `cli`;
- keyseg's parts (each subpackage, e.g. keyseg.model, and each top-level module, e.g.
  keyseg.io) import each other without a cycle, e.g. training and evaluation import
  model, model imports neither;
- a stage does not import another stage: what two stages share belongs in keyseg.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path) -> list[tuple[str, int]]:
    """(module, line) for every import in the file; `from a import b` gives a.b as well as a,
    since b may be a module (a name that is not one matches no module and is harmless)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if node.module:
                found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def sources(folder: str) -> list[Path]:
    return sorted(path for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts)


def is_within(name: str, top: str) -> bool:
    return name == top or name.startswith(top + ".")


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


def part_of(module: str) -> str:
    """The node of a keyseg module in the graph: keyseg.<first part> (a subpackage or a
    top-level module); keyseg's own __init__ is the node "keyseg"."""
    return ".".join(module.split(".")[:2])


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_keyseg_imports_neither_pipelines_nor_cli():
    bad = [f"{where(path, line)} imports {name}" for path in sources("keyseg")
           for name, line in imported_names(path) if is_within(name, "pipelines") or is_within(name, "cli")]
    assert not bad, "keyseg is the library under pipelines/ and cli.py:\n" + "\n".join(bad)


def test_keyseg_parts_import_each_other_without_a_cycle():
    known = {module_name(path) for path in sources("keyseg")}
    edges: dict[str, set[str]] = {}
    sites: dict[tuple[str, str], list[str]] = {}
    for path in sources("keyseg"):
        source = part_of(module_name(path))
        for name, line in imported_names(path):
            if name not in known:
                continue
            target = part_of(name)
            if target != source:
                edges.setdefault(source, set()).add(target)
                sites.setdefault((source, target), []).append(where(path, line))
    cycle = find_cycle(edges)
    assert cycle is None, ("keyseg parts import each other in a cycle: " + " -> ".join(cycle) + "\n"
                           + "\n".join(f"  {a} -> {b}: {', '.join(sorted(set(sites[a, b])))}" for a, b in zip(cycle, cycle[1:])))


def test_a_stage_does_not_import_another_stage():
    known = {module_name(path) for path in sources("pipelines")} - {"pipelines"}
    bad = [f"{where(path, line)} imports {name}" for path in sources("pipelines")
           for name, line in imported_names(path)
           if name in known and name != module_name(path)]
    assert not bad, "what two stages share belongs in keyseg:\n" + "\n".join(sorted(set(bad)))


def test_the_cycle_finder_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}}) is None

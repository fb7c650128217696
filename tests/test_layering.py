"""The package's parts import in one direction: no cycle between its subpackages and modules.

Read from the source (lazy imports inside functions count too), so a cycle is caught
before it bites at import time. The one pair allowed is Jupyter's own pattern: the
package names its server extension, and the extension reads the package's version.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ambient_jupyter"
ALLOWED = {frozenset({"ambient_jupyter", "ambient_jupyter.server"})}


def _part(module: str) -> str:
    """``ambient_jupyter.kernel.host`` -> ``ambient_jupyter.kernel``: a subpackage or a top module."""
    return ".".join(module.split(".")[:2])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1]
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                if _part(module) != _part(target):
                    graph[_part(module)].add(_part(target))
            elif isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    if name.startswith("ambient_jupyter") and _part(module) != _part(name):
                        graph[_part(module)].add(_part(name))
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    found: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt in path:
                found.add(frozenset(path[path.index(nxt) :]))
            else:
                walk(nxt, [*path, nxt])

    for start in list(graph):
        walk(start, [start])
    return found


def test_no_import_cycles_between_the_parts_of_the_package() -> None:
    graph = _graph()
    assert "ambient_jupyter.history" in graph["ambient_jupyter.kernel"]  # the reader finds the edges
    assert _cycles(graph) - ALLOWED == set()


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}

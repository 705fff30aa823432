"""The package's import graph has no cycles: every `import` among src/normlab modules, at the
top of a module or inside a function (a lazy import is still a dependency), except those under
`if TYPE_CHECKING:`, which only type checkers follow."""

from __future__ import annotations

import ast
from pathlib import Path

from normlab.paths import REPO_DIR

SOURCE = REPO_DIR / "src"


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SOURCE / "normlab").rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def imports_of(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} & modules.keys()
            found |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
        found |= imports_of(node, modules)
    return found


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start, or None."""
    path, seen = [start], set()

    def walk(node: str) -> list[str] | None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                path.append(nxt)
                if found := walk(nxt):
                    return found
                path.pop()
        return None

    return walk(start)


def test_no_module_of_the_package_imports_itself_through_others():
    modules = module_names()
    graph = {
        name: imports_of(ast.parse(p.read_text()), modules) - {name} for name, p in modules.items()
    }
    cycles = [c for name in sorted(graph) if (c := cycle_from(name, graph))]
    assert not cycles, " -> ".join(cycles[0])


def test_the_checker_finds_a_cycle():
    assert cycle_from("a", {"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_from("a", {"a": {"b"}, "b": set()}) is None

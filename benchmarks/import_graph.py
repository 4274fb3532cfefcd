"""The import-time import graph of the ``lab`` package, and its cycles.

Every ``lab/**/*.py`` is parsed with ``ast`` (nothing is imported). An edge A -> B is one
import of B that runs when A is imported: a statement at module level, including inside
top-level ``if``/``try``/``with`` blocks and class bodies, but not inside a function (a lazy
import) and not inside ``if TYPE_CHECKING:``. Importing ``lab.a.b`` also imports ``lab.a``,
so both get an edge, except that a module's own ancestor packages are not added that way
(Python initialises them first anyway; an explicit ``from lab.a import x`` in ``lab.a.b``
still counts). Edges to the root package ``lab`` (it only sets an environment variable) and
a module's edges to itself are left out.

    python benchmarks/import_graph.py                # every dependency, lazy imports included
    python benchmarks/import_graph.py --import-time  # only imports that run at import time

It prints the graph, then the cycles, and exits 1 if there are any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_imports(body: list[ast.stmt], lazy: bool = False):
    """Yields the Import/ImportFrom statements of ``body`` that run at import time (with
    ``lazy``, also those inside functions, which run when the function is called)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from _import_time_imports(node.body, lazy)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_imports(node.body, lazy)
            yield from _import_time_imports(node.orelse, lazy)
        elif isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_imports(block, lazy)
            for handler in node.handlers:
                yield from _import_time_imports(handler.body, lazy)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from _import_time_imports(node.body, lazy)
            yield from _import_time_imports(getattr(node, "orelse", []), lazy)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The module names one import statement names (before existence checks)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importing module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    return [source] + [f"{source}.{alias.name}" for alias in node.names]


def import_graph(root: Path, *, lazy: bool = False) -> dict[str, set[str]]:
    """Maps each module of the package at ``root`` (a folder with ``__init__.py``) to its
    import-time dependencies within that package; with ``lazy``, to all its dependencies
    (imports inside functions too: a cycle hidden behind a lazy import is still a layering
    mistake, only one that fails later)."""
    root = Path(root)
    files = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        ancestors = {module.rsplit(".", n)[0] for n in range(1, module.count(".") + 1)}
        deps: set[str] = set()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_time_imports(tree.body, lazy):
            for target in _targets(node, module, is_package):
                if target not in files:
                    continue  # not a module of this package (a name in one, or outside)
                deps.add(target)
                parts = target.split(".")
                deps.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts)))
                            if p not in ancestors)
        deps.discard(root.name)
        deps.discard(module)
        graph[module] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing
    itself, each sorted; sorted by their first module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


# The rooms of lab/, bottom first (docs/architecture.md): a module may import from its own room and
# the rooms below it (tests/test_imports.py). The two registries belong with the configurations
# that check names against them, though their packages sit higher.
ROOMS = ["config", "system", "data", "models", "runs", "tasks", "studies", "report"]
REGISTRIES = {"lab.tasks", "lab.models"}


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph of lab's rooms (its top-level folders): which rooms each room imports from. The
    registries (``lab.tasks``, ``lab.models``: their packages' ``__init__``) are shown apart from
    their folders, since they sit with the configurations (docs/architecture.md)."""
    def room(module: str) -> str:
        return f"{module} (registry)" if module in REGISTRIES else ".".join(module.split(".")[:2])
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module != "lab":
            rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) not in {"lab", room(module)})
    return rooms


def main() -> int:
    graph = import_graph(Path(__file__).resolve().parents[1] / "lab", lazy="--import-time" not in sys.argv)
    rooms = room_graph(graph)
    print("rooms:")
    for name in sorted(rooms, key=lambda r: (len(rooms[r]), r), reverse=True):
        print(f"  {name} -> {', '.join(sorted(rooms[name]))}".rstrip())
    print("modules:")
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module]))}".rstrip())
    cycles = find_cycles(graph)
    print()
    if not cycles:
        print("no cycles")
        return 0
    for cycle in cycles:
        print("cycle: " + ", ".join(cycle))
    return 1


if __name__ == "__main__":
    sys.exit(main())

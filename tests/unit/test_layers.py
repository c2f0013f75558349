"""The package's imports point one way, down the layers, and close no circle.

An ``ast`` pass over every module of ``jobmonitor``: each import, including
those under ``TYPE_CHECKING`` and inside functions, is resolved to the module
it names.  An import of a higher layer, or a set of modules that import each
other, fails with the offending edges named (file, line, target).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import jobmonitor

PACKAGE_DIR = Path(jobmonitor.__file__).resolve().parent

#: Bottom to top.  A module may import its own layer and the layers below it.
#: ``wire.codes`` sits below ``errors`` (every error carries its reply code),
#: the rest of the wire layer above it.  The client shares the wire's vocabulary
#: and nothing of the server's side, so it sits right above the wire.  Program
#: jobs are handlers built on the engine alone, so they sit right above it;
#: ``config_file`` (which reads program projects) sits with the app.  The HTTP
#: listener is an adapter over the server's commands, above it and below the app.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("jobmonitor._version", "jobmonitor._lazy", "jobmonitor.wire.codes")),
    ("errors", ("jobmonitor.errors",)),
    ("wire", ("jobmonitor.wire",)),
    ("client", ("jobmonitor.client",)),
    ("settings", ("jobmonitor.users", "jobmonitor.queueing", "jobmonitor.config")),
    ("store", ("jobmonitor.store",)),
    ("engine", ("jobmonitor.engine",)),
    ("programs", ("jobmonitor.programs",)),
    ("server", ("jobmonitor.server",)),
    ("http", ("jobmonitor.http",)),
    ("app", ("jobmonitor.app", "jobmonitor.loader", "jobmonitor.config_file")),
    ("cli", ("jobmonitor.cli",)),
    ("top", ("jobmonitor", "jobmonitor.__main__")),
]
#: Entries that name one module only, not the modules under it.
EXACT = {"jobmonitor"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # path:line of the import

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ["jobmonitor", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The package modules ``name`` imports, wherever the import statement is."""
    return imports_in(path.read_text(), name, is_package=path.name == "__init__.py",
                      where=str(path.relative_to(PACKAGE_DIR.parent)), modules=modules)


def imports_in(source: str, name: str, *, is_package: bool, where: str,
               modules: dict[str, Path]) -> list[Edge]:
    """The package modules the source of module ``name`` imports."""
    package = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(source, where)
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            for alias in node.names:
                submodule = f"{base_name}.{alias.name}"
                targets.append(submodule if submodule in modules else base_name)
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package a.b
                target = target.rpartition(".")[0]
            if target.startswith("jobmonitor") and target != name:
                edges.append(Edge(name, target, f"{where}:{node.lineno}"))
    return edges


def all_edges() -> list[Edge]:
    modules = module_names()
    return [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]


def layer_of(name: str) -> int | None:
    """The index in LAYERS of the layer whose longest entry holds ``name``."""
    best: tuple[int, int] | None = None
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            covers = name == entry or (entry not in EXACT and name.startswith(entry + "."))
            if covers and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def upward(edges: list[Edge]) -> list[str]:
    """Each edge that imports a layer above its own, as a sentence."""
    found = []
    for edge in edges:
        source, target = layer_of(edge.source), layer_of(edge.target)
        assert source is not None and target is not None
        if target > source:
            found.append(f"{edge}: layer '{LAYERS[source][0]}' imports layer "
                         f"'{LAYERS[target][0]}' above it")
    return found


def cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Each set of modules that import each other, with one circle through it."""
    graph: dict[str, dict[str, Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, {}).setdefault(edge.target, edge)
    found = []
    for group in _strongly_connected(graph):
        if len(group) > 1:
            found.append((sorted(group), _circle_in(group, graph)))
    return found


def _strongly_connected(graph: dict[str, dict[str, Edge]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def _circle_in(group: set[str], graph: dict[str, dict[str, Edge]]) -> list[Edge]:
    """A shortest circle through the group's first module (breadth first)."""
    start = min(group)
    came_from: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target, edge in sorted(graph.get(node, {}).items()):
                if target not in group or target in came_from:
                    continue
                came_from[target] = edge
                if target == start:
                    circle = [edge]
                    while circle[0].source != start:
                        circle.insert(0, came_from[circle[0].source])
                    return circle
                following.append(target)
        frontier = following
    raise AssertionError(f"no circle found in {sorted(group)}")


# -- the package ---------------------------------------------------------------------


def test_every_module_belongs_to_a_layer():
    homeless = [name for name in module_names() if layer_of(name) is None]
    assert not homeless, f"add these modules to LAYERS in {__name__}: {homeless}"


def test_imports_point_down_the_layers():
    wrong = upward(all_edges())
    assert not wrong, "imports that point up a layer:\n" + "\n".join(wrong)


def test_no_modules_import_each_other():
    found = cycles(all_edges())
    assert not found, "modules that import each other:\n" + "\n".join(
        f"  {', '.join(group)}; for one:\n" + "".join(f"    {edge}\n" for edge in circle)
        for group, circle in found)


def test_the_pass_sees_imports_under_type_checking_and_in_functions():
    # The edges the layering is checked on include the ones the type checker or a
    # function call would follow, not just those run at import.
    modules = module_names()
    source = ("from typing import TYPE_CHECKING\n"
              "from . import stream\n"
              "if TYPE_CHECKING:\n"
              "    from ..server.server import Server\n"
              "def f():\n"
              "    from ..wire import codes\n"
              "    import jobmonitor.store.base\n")
    edges = imports_in(source, "jobmonitor.engine.job", is_package=False,
                       where="job.py", modules=modules)
    assert [(edge.target, edge.where) for edge in edges] == [
        ("jobmonitor.engine.stream", "job.py:2"), ("jobmonitor.server.server", "job.py:4"),
        ("jobmonitor.wire.codes", "job.py:6"), ("jobmonitor.store.base", "job.py:7")]


# -- the checker itself --------------------------------------------------------------


def test_an_upward_import_is_named_with_its_layers():
    edge = Edge("jobmonitor.engine.job", "jobmonitor.server.server", "jobmonitor/engine/job.py:3")
    assert upward([edge]) == [
        "jobmonitor/engine/job.py:3: jobmonitor.engine.job imports jobmonitor.server.server: "
        "layer 'engine' imports layer 'server' above it"]


def test_a_circle_is_named_edge_by_edge():
    edges = [Edge("jobmonitor.engine.job", "jobmonitor.engine.runner", "job.py:1"),
             Edge("jobmonitor.engine.runner", "jobmonitor.engine.stream", "runner.py:2"),
             Edge("jobmonitor.engine.stream", "jobmonitor.engine.job", "stream.py:3"),
             Edge("jobmonitor.engine.stream", "jobmonitor.wire.codes", "stream.py:4")]
    [(group, circle)] = cycles(edges)
    assert group == ["jobmonitor.engine.job", "jobmonitor.engine.runner",
                     "jobmonitor.engine.stream"]
    assert [str(edge) for edge in circle] == [
        "job.py:1: jobmonitor.engine.job imports jobmonitor.engine.runner",
        "runner.py:2: jobmonitor.engine.runner imports jobmonitor.engine.stream",
        "stream.py:3: jobmonitor.engine.stream imports jobmonitor.engine.job"]
    assert cycles(edges[1:]) == []

"""The layers of ``visualpath`` (docs/architecture.md): imports run one way, and the public
names stay where users find them."""

import ast
from pathlib import Path

import visualpath

PACKAGE = Path(visualpath.__file__).parent


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str) -> set[str]:
    """The ``visualpath`` modules ``tree`` imports anywhere (functions included), except
    under ``if TYPE_CHECKING:``, which names types for readers and never runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                parts = module.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            if base == "visualpath":
                found.update(f"visualpath.{a.name}" for a in node.names)
            elif base.startswith("visualpath."):
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("visualpath."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name
        deps = _imports(ast.parse(path.read_text()), package + (".__init__" if path.name == "__init__.py" else ""))
        # a package's own __init__ is not an edge of its submodules (Python imports it first anyway)
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = walk(dep)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from visualpath.x import A\n"
                     "def f():\n    from visualpath import y\n")
    assert _imports(tree, "visualpath.z") == {"visualpath.y"}


def test_visualpath_has_no_import_circles():
    """Function-level imports count (they run); annotation-only ones do not."""
    graph = _graph()
    assert {"visualpath.graph", "visualpath.model", "visualpath.spec", "visualpath.area", "visualpath.rundir",
            "visualpath.engine", "visualpath.interop.reading", "visualpath.interop.writing"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_layers_run_one_way():
    graph = _graph()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return False

    assert not reaches("visualpath.area", "visualpath.spec")  # areas register where they are defined
    assert not reaches("visualpath.model", "visualpath.graph")  # the declaration builds the model
    assert not reaches("visualpath.spec", "visualpath.graph")  # reading values knows no graph
    assert not reaches("visualpath.rundir", "visualpath.engine")  # the run directory stands without the loop
    assert not reaches("visualpath.interop.reading", "visualpath.interop.writing")


def test_the_public_names_are_where_they_were():
    from visualpath import interop

    for name in visualpath.__all__:
        assert hasattr(visualpath, name), name
    for name in interop.__all__:
        assert hasattr(interop, name), name

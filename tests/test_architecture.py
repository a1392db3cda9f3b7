"""The shape of the package, checked: no import cycles; every exception type in one tree in errors.py."""

from __future__ import annotations

import ast
import inspect
import pkgutil
from pathlib import Path

import posbridge
from posbridge import errors

PACKAGE = Path(posbridge.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every posbridge module ``path`` imports, wherever the import statement is (a late import inside a
    function is a cycle waiting to happen too), except under ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:
                    submodule = f"{child.module}.{alias.name}"
                    found.add(submodule if submodule in known else child.module)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strong(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                strong(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strong(node)
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_the_package_imports_itself_in_a_circle() -> None:
    known = _modules()
    graph = {name: _imports(path, known) - {name} for name, path in known.items()}
    assert _cycles(graph) == []


def test_the_redaction_module_imports_nothing_of_ours() -> None:
    known = _modules()
    assert _imports(known["posbridge.redaction"], known) == set()


def test_every_exception_type_of_the_package_is_in_errors_and_derives_from_posbridge_error() -> None:
    strays = []
    for module_info in pkgutil.walk_packages(posbridge.__path__, "posbridge."):
        if module_info.name.endswith("__main__"):
            continue  # importing it runs the command line
        module = __import__(module_info.name, fromlist=["_"])
        for name, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__
                    and module is not errors):
                strays.append(f"{module.__name__}.{name}")
    assert strays == []
    for name, value in vars(errors).items():
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__:
            assert issubclass(value, errors.PosbridgeError), name

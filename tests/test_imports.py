"""The import rules of DESIGN.md, read from the source (``ast``; nothing is imported).

An edge ``a -> b`` is an ``import`` or ``from ... import`` anywhere in file ``a`` (at module
level or inside a function: both run some time), naming module ``b`` (for ``from p import
x``: the module ``p.x`` if there is one, else ``p``). Imports under ``if TYPE_CHECKING:``
are left out: they never run. Python initialises a package before its submodules, but a
package's own ``__init__`` importing its submodules is how it exports them, so importing
``p.x`` is an edge to ``p/x.py`` only, not also to ``p/__init__.py``.

Rules: no cycle between files; no cycle between the packages (and modules) that sit side
by side in any one package, each taken as one node with everything under it; and the
layering of DESIGN.md: ``policies/`` and ``scheduler/`` never import ``storage``,
``service``, ``governance`` or ``backends``; ``scheduler/`` never imports ``policies/``
(``policies/`` implement the scheduler's protocol and hold the ``make_policy`` registry);
``storage/`` imports no ``governance/``; ``sim/`` and ``planner/`` import neither
``storage`` nor ``governance``. Beside those: ``governance/`` sits below the service (it
imports no ``service`` nor ``cli``) and builds no SQL (from SQLAlchemy it takes only the
``Session`` type); the dashboard (``service/ui``) never calls the API's route handlers
(``service/api``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "allotment"

FORBIDDEN = {  # package under allotment -> packages under allotment it never imports
    "policies": {"storage", "service", "governance", "backends"},
    "scheduler": {"storage", "service", "governance", "backends", "policies"},
    "storage": {"governance"},
    "sim": {"storage", "governance"},
    "planner": {"storage", "governance"},
    "governance": {"service", "cli"},
    "service.ui": {"service.api"},
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module under ``src/allotment``."""
    out: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules under ``allotment`` it imports."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[:len(up) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target and target not in modules:  # a name inside a module
                    target = target.rpartition(".")[0]
                if target.split(".")[0] == ROOT and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def collapsed(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """The graph among the direct children of ``package`` (each with all under it)."""
    depth = package.count(".") + 1

    def child(m: str) -> str | None:
        if not m.startswith(package + "."):
            return None
        return ".".join(m.split(".")[:depth + 1])

    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        ca = child(a)
        if ca is None:
            continue
        out.setdefault(ca, set())
        for b in targets:
            cb = child(b)
            if cb is not None and cb != ca:
                out[ca].add(cb)
    return out


MODULES = module_files()
GRAPH = edges(MODULES)
PACKAGES = sorted(m for m, p in MODULES.items() if p.name == "__init__.py")


def test_the_checker_sees_imports() -> None:
    """The graph is read right: known imports of the source are in it (and a checker that
    found no edges would pass every rule)."""
    assert "allotment.scheduler.policy" in GRAPH["allotment.policies"]
    assert "allotment.storage.repo" in GRAPH["allotment.storage.jobs"]
    assert "allotment.domain.jobstate" in GRAPH["allotment.storage.jobs"]
    assert sum(map(len, GRAPH.values())) > 200


def test_the_cycle_finder_finds_cycles() -> None:
    """A cycle of three files, one of them also importing a fourth, is found."""
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert find_cycle(collapsed({"p.x.m": {"p.y.n"}, "p.y.n": {"p.x.k"}, "p.x.k": set()},
                                "p")) == ["p.x", "p.y", "p.x"]


def test_no_import_cycle_between_files() -> None:
    """No file imports, directly or through others, a file that imports it back."""
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_between_packages(package: str) -> None:
    """Inside ``package``, its subpackages and modules import one another without a cycle."""
    cycle = find_cycle(collapsed(GRAPH, package))
    assert cycle is None, " -> ".join(cycle or [])


def _under(module: str, package: str) -> bool:
    return module == f"{ROOT}.{package}" or module.startswith(f"{ROOT}.{package}.")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    """The DESIGN rules: what a layer never imports."""
    bad = sorted(f"{a} imports {b}" for a, targets in GRAPH.items() if _under(a, layer)
                 for b in targets if any(_under(b, p) for p in FORBIDDEN[layer]))
    assert not bad, "\n".join(bad)


def test_governance_builds_no_sql() -> None:
    """Workflows read and write through storage: from SQLAlchemy, ``governance/`` takes
    only the ``Session`` type of its callers' transactions."""
    bad = []
    for name, path in MODULES.items():
        if not _under(name, "governance"):
            continue
        for node in _imports(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names])
            bad += [f"{name} imports {n}" for n in names
                    if n.split(".")[0] == "sqlalchemy" and n != "sqlalchemy.orm.Session"]
    assert not bad, "\n".join(bad)

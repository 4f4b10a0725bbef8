"""The package's layers import one way only: each folder imports only the layers below it (docs/tour.md, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src" / "vaekit"
# top to bottom; a module may import its own layer and any layer after it in this list
LAYERS = ["cli", "training", "apps", "evaluation", "checkpoint", "objectives", "models", "data", "base"]
BASE = {"config", "registry", "storage", "errors", "zoo"}


def _layer(module: str) -> str:
    head = module.split(".")[1] if module.count(".") else ""
    if head in BASE or head == "":
        return "base"
    return head


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaekit"):
            found += [node.module] if node.module != "vaekit" else [f"vaekit.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("vaekit")]
    return found


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        if module in ("vaekit.__init__", "vaekit.__main__"):
            continue  # the package's front door re-exports from every layer
        own = LAYERS.index(_layer(module))
        for target in _imports(path):
            if LAYERS.index(_layer(target)) < own:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()} == {
        "cli", "training", "apps", "evaluation", "objectives", "models", "data", "config"
    }


def _module_of(target: str) -> str:
    """The module an import names: `from vaekit.models import hierarchy` names the module vaekit.models.hierarchy."""
    path = PACKAGE.parent.joinpath(*target.split("."))
    return target if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else target.rsplit(".", 1)[0]


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module != "vaekit":  # the front door re-exports from every layer
            graph[module] = {_module_of(t) for t in _imports(path)} - {"vaekit", module}
    return graph


def test_no_import_circle() -> None:
    # Every import counts, at the top of a module, inside a function or under TYPE_CHECKING: a circle that a lazy
    # import hides is still two modules that cannot be read (or moved) one without the other.
    graph = _graph()
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, circles


def test_the_circle_check_finds_a_circle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(globals(), "_graph", lambda: {"vaekit.a": {"vaekit.b"}, "vaekit.b": {"vaekit.a"}})
    with pytest.raises(AssertionError, match="vaekit.a -> vaekit.b -> vaekit.a"):
        test_no_import_circle()

"""The package's layers import one way only: each folder imports only the layers below it (README, Layout)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "vaekit"
# top to bottom; a module may import its own layer and any layer after it in this list
LAYERS = ["cli", "training", "apps", "evaluation", "checkpoint", "objectives", "models", "data", "base"]
BASE = {"config", "config_checks", "registry", "storage", "errors", "zoo"}


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
        "cli", "training", "apps", "evaluation", "objectives", "models", "data"
    }

"""The docs site: built with warnings as errors, a page per command and per model kind, its examples run."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

import vaekit
from cli_server import CliServer
from conftest import REPO, SHARED_DATA
from vaekit.cli.main import build_parser
from vaekit.registry import Registry

DOCS = REPO / "docs"


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)  # type: ignore[attr-defined]


def _nav_files() -> list[str]:
    def walk(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [f for item in node for f in walk(item)]
        if isinstance(node, dict):
            return [f for value in node.values() for f in walk(value)]
        return []

    # mkdocs.yml is plain YAML apart from no tags; safe_load reads it
    return walk(yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"])


def test_every_command_has_a_page_in_the_nav_with_its_help() -> None:
    nav = _nav_files()
    for command in _commands():
        page = DOCS / "commands" / f"{command}.md"
        assert page.is_file(), f"no docs page for `vaekit {command}`"
        assert f"commands/{command}.md" in nav, command
        assert f"<!-- vaekit-help: {command} -->" in page.read_text(), command


def _registries() -> dict[str, Registry[object]]:
    """Every registry in the package, found by walking its modules (a new registry is checked without a test edit)."""
    found: dict[str, Registry[object]] = {}
    for info in pkgutil.walk_packages(vaekit.__path__, "vaekit."):
        if info.name.startswith("vaekit.cli") or info.name == "vaekit.__main__":
            continue
        for value in vars(importlib.import_module(info.name)).values():
            if isinstance(value, Registry):
                found[value.kind] = value
    return found


def test_every_model_kind_and_registry_entry_is_documented() -> None:
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    text = re.sub(r"```.*?```", " ", text, flags=re.S)  # fenced blocks would pair their backticks with prose
    spans = [span for line in text.splitlines() for span in re.findall(r"`([^`]+)`", line)]
    words = {w for span in spans for w in re.split(r"[^\w-]+", span)}
    registries = _registries()
    assert {"model kind", "objective", "prior", "posterior", "encoder", "decoder", "likelihood", "block"} <= set(
        registries
    )
    missing = [f"{kind} {name}" for kind, r in registries.items() for name in r.names() if name not in words]
    assert not missing, f"registry entries no docs page names (in backticks): {missing}"
    assert "conditional" in words


def test_docs_build_strict(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    train = (tmp_path / "site" / "commands" / "train" / "index.html").read_text()
    assert "--run-dir" in train and "vaekit-help" not in train  # the hook put the parser's help in
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "from_pretrained" in api and "log_likelihood" in api


def _example_lines() -> list[tuple[str, str]]:
    """(page, command) for every shell line of every docs page, in nav order; repeated lines once, and none that
    the README also shows and tests/test_readme.py already runs (a page's later lines never depend on those)."""
    readme = "\n".join(re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S))
    seen = {line.split(" #", 1)[0].strip() for line in readme.splitlines() if "cifar10-jpeg" in line}
    lines = []
    for rel in _nav_files():
        text = (DOCS / rel).read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                command = line.split(" #", 1)[0].strip()
                if command and command not in seen:
                    seen.add(command)
                    lines.append((rel, command))
    return lines


def test_docs_shell_examples_run(tmp_path: Path) -> None:
    lines = _example_lines()
    assert len(lines) >= 25
    with CliServer() as cli:
        for page, command in lines:
            argv = shlex.split(command)
            if "cifar10-jpeg" in argv and not (SHARED_DATA / "cifar10-jpeg").is_dir():
                continue  # needs ../shared/data/cifar10-jpeg beside the checkout
            assert argv[0] in ("vaekit", "python"), (page, command)
            if argv[0] == "vaekit":
                out = cli.run(argv[1:], tmp_path)
            else:
                out = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                                     timeout=600)
            assert out.returncode == 0, (page, command, out.stderr[-2000:])


def test_docs_python_examples_run(tmp_path: Path) -> None:
    blocks = [b for rel in _nav_files() for b in re.findall(r"```python\n(.*?)```", (DOCS / rel).read_text(), re.S)]
    assert blocks
    for code in blocks:
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]

"""MkDocs hook: a command page's `<!-- vaekit-help: NAME -->` becomes that command's `--help`, read from the parser.

So the flags the docs list are always the code's own; a marker naming an unknown command fails the build.
"""

from __future__ import annotations

import os
import re
from typing import Any

MARKER = re.compile(r"<!-- vaekit-help: ([a-z-]+) -->")


def _help(command: str) -> str:
    from vaekit.cli.main import build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if command not in sub.choices:  # type: ignore[attr-defined]
        raise ValueError(f"docs: no vaekit command {command!r}")
    text = sub.choices[command].format_help()  # type: ignore[attr-defined]
    return f"```text\n{text.rstrip()}\n```"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return MARKER.sub(lambda m: _help(m.group(1)), markdown)

"""Shared by the benchmark scripts: replace one marked section of bench/RESULTS.md; plan a run's epochs."""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import vaekit

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def update_section(name: str, body: str) -> None:
    """Write `body` between `<!-- name:start -->` and `<!-- name:end -->`, appending the pair if absent."""
    block = f"<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->"
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def plan_epochs(preset: str | None, sets: list[str], minutes: float, probe_steps: int = 200) -> int:
    """Epochs of `preset` (with `sets`) that fill `minutes` of training steps, from a short run's examples/s.

    The rate counts training steps only (the run's evaluations are left out), so a model whose test evaluation
    is slow is not planned too short; the evaluations after each epoch come on top of `minutes`.
    """
    probe = vaekit.load_config(preset, [*sets, f"train.steps={probe_steps}", f"train.log_every={probe_steps}"])
    with tempfile.TemporaryDirectory() as tmp:
        rate = vaekit.train(probe, f"{tmp}/probe", quiet=True).examples_per_s
    n_train = len(vaekit.load_dataset(probe.data.name, "train"))
    return max(1, math.floor(minutes * 60 * rate / n_train))

"""Shared by the benchmark scripts: replace one marked section of bench/RESULTS.md; plan a run's length."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import vaekit
from vaekit.apps.report import read_metrics

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# RESULTS.md's topics (its `## ` headings), in order, and which sections (by marker name prefix) belong to each
TOPICS = {
    "Likelihood": ("foundation", "nll", "time-to-nll", "family-calibration"),
    "Speed": ("throughput", "batch-sweep", "ablation", "compile-break-even", "time-to-quality", "model-speed", "gpu",
              "step-refactor", "weights-digest"),
    "Stability": ("stability", "collapse", "reliability"),
    "Compression": ("compress", "latent-codes"),
    "Colour images": ("cifar", "ema-lag"),
    "Uses": ("anomaly", "conditional"),
    "Sample quality": ("quality",),
    "Adversarial": ("adversarial",),
    "Imbalance": ("imbalance",),
    "Disentanglement": ("disentanglement",),
    "VQ-VAE": ("vq-",),
}


def topic_of(name: str) -> str | None:
    """The topic a section named `name` goes under (the longest matching prefix), or None."""
    found = [(len(p), topic) for topic, prefixes in TOPICS.items() for p in prefixes if name.startswith(p)]
    return max(found)[1] if found else None


def update_section(name: str, body: str) -> None:
    """Write `body` between `<!-- name:start -->` and `<!-- name:end -->`; a new pair goes at the end of its topic
    (`topic_of`), or at the end of the file when it has none."""
    block = f"<!-- {name}:start -->\n{body.strip()}\n<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->"
    if re.search(pattern, text, flags=re.S):
        text = re.sub(pattern, lambda _: block, text, flags=re.S)
    else:
        text = insert_under_topic(text, topic_of(name), block)
    RESULTS.write_text(text)


def insert_under_topic(text: str, topic: str | None, block: str) -> str:
    """`text` with `block` added as the last part of the `## topic` section (appended when there is none)."""
    heading = re.search(rf"(?m)^## {re.escape(topic)}\n", text) if topic else None
    if heading is None:
        return text.rstrip() + "\n\n" + block + "\n"
    after = re.search(r"(?m)^## ", text[heading.end():])
    end = heading.end() + after.start() if after else len(text)
    return text[:end].rstrip() + "\n\n" + block + "\n\n" + text[end:].lstrip("\n")


def budget_table(rows: Path, data: str, minutes: float, n: int,
                 floor: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every table of a budgeted benchmark's rows file and `data`'s own (made, with its `floor`, when new); rows of
    another budget or sample count are refused, so one table never mixes two."""
    every = json.loads(rows.read_text()) if rows.exists() else {}
    table = every.setdefault(data, {"rows": {}, "commands": []})
    if table.get("minutes", minutes) != minutes or table.get("n", n) != n:
        raise SystemExit(f"{rows.name} holds {data} rows at another budget or sample count")
    table.update(minutes=minutes, n=n)
    if "floor" not in table:
        table["floor"] = floor()
    return every, table


def plan_epochs(preset: str | None, sets: list[str], minutes: float, probe_steps: int = 400) -> int:
    """Epochs of `preset` (with `sets`) that fill `minutes` of training steps, rounded to the nearest whole epoch.

    The rate is `steps_per_second` over a short run's second half (training steps only: the first steps' warm-up
    and the run's evaluations are left out; the 200-step probe this replaced read the slow first steps and planned
    a fast model's 5 minutes as 251 s). Rounding rather than flooring: the run's `train.max_minutes` ends a plan
    that runs over, which costs at most half an epoch of the schedule, where a floor left up to an epoch unused.
    """
    rate = steps_per_second(preset, sets, probe_steps)
    cfg = vaekit.load_config(preset, sets)
    n_train = len(vaekit.load_dataset(cfg.data.name, "train"))
    return max(1, round(minutes * 60 * rate * cfg.train.batch_size / n_train))


def steps_per_second(preset: str | None, sets: list[str], steps: int = 600) -> float:
    """Training steps per second of `preset` (with `sets`) over the second half of a `steps`-step run.

    The first half is left out: it holds a compiled step's compilation and, on a CPU, the slower first steps
    while the allocator and oneDNN's kernel caches warm up (a cifar run went from 49 examples/s over its first
    200 steps to 86 later, so a rate from the first steps plans a budget about 2x too short).
    """
    half = steps // 2
    with tempfile.TemporaryDirectory() as tmp:
        cfg = vaekit.load_config(preset, [*sets, f"train.steps={2 * half}", f"train.log_every={half}",
                                          "train.tensorboard=false"])
        vaekit.train(cfg, f"{tmp}/r", quiet=True)
        rows = [r for r in read_metrics(Path(f"{tmp}/r")) if r["kind"] == "train"]
    # rows log cumulative examples/s, so each row gives the wall time of the steps up to it
    (s0, e0), (s1, e1) = [(r["step"], r["examples_per_s"]) for r in rows[-2:]]
    t0, t1 = s0 * cfg.train.batch_size / e0, s1 * cfg.train.batch_size / e1
    return (s1 - s0) / (t1 - t0)

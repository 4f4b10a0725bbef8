"""Long-tailed data and its remedies (issue 44): per-class test -ELBO and the class coverage of samples.

    .venv/bin/python bench/imbalance.py --data mnist --ratio 100            # 6 variants x 3 seeds, ~40 min
    .venv/bin/python bench/imbalance.py --data fashion-mnist --ratio 10

Every run trains the `mlp` preset (784-400-20, Bernoulli) for --steps steps of batch 128 on the training split made
long-tailed by `data.imbalance=RATIO` (Cui et al.'s exponential profile; the test split untouched), one variant:

- plain: as is; balanced-sampler: `data.sampler=balanced`; reweight: `data.class_weights=effective` (Cui et al.);
  vamp: `model.prior=vamp` (100 pseudo-inputs, the `vamp` preset's); conditional: `model.conditional=true`;
  conditional-balanced: both `model.conditional=true` and `data.sampler=balanced` (the decoder sees each label
  equally often, so a rare label's samples are drawn by a decoder that learned it);
- balanced-data: the control, `data.imbalance_profile=balanced`, the same number of images spread evenly.

Each run's row: the test -ELBO overall and per class (the three rarest training classes averaged: "rare-3"), and
two sets of 10,000 samples classified by lenet-mnist's / lenet-fashion-mnist's classifier: drawn as the model draws
(the prior; a conditional model's labels at the training distribution), and drawn at a uniform class balance (a
20-component GMM sampler's components reweighted by the classes they hold, the VampPrior's components the same way,
a conditional model's labels uniform; apps/samplers/balance.py). From each: the total variation distance of the
class histogram to the training distribution and to uniform, the smallest class share and the classes under 10% of
their target share ("missing"). Rows go to bench/imbalance_rows.json, one per run, skipped when present (so a table
fills over several invocations; --redo reruns them); the section imbalance of bench/RESULTS.md is rewritten from all
rows. Equal budget: the same steps for every variant. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import vaekit
from results import update_section
from vaekit.apps.samplers import fit_sampler
from vaekit.apps.samplers.balance import balanced_draws
from vaekit.data.datasets import load_dataset
from vaekit.data.imbalance import class_counts, long_tail_counts
from vaekit.evaluation.quality import quality
from vaekit.training.splits import load_splits

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "imbalance_rows.json"
VARIANTS = {
    "plain": [],
    "balanced-sampler": ["data.sampler=balanced"],
    "reweight": ["data.class_weights=effective"],
    "vamp": ["model.prior=vamp", "model.prior_components=100"],
    "conditional": ["model.conditional=true"],
    "conditional-balanced": ["model.conditional=true", "data.sampler=balanced"],
    "balanced-data": ["data.imbalance_profile=balanced"],
}
SAMPLES = 10_000
GMM_COMPONENTS = 20


def coverage_of(model: Any, test: Any, train: Any, n: int, latents: Any = None,
                balance: list[float] | None = None) -> dict[str, Any]:
    """The class coverage (and FD) of n samples judged against the training split's class distribution."""
    result = quality(model, test, None, n=n, latents=latents, train_labels=train.labels, class_balance=balance)
    c = result.class_coverage or {}
    return {"shares": [round(s, 4) for s in c["shares"]], "tv_train": c["tv_train"], "tv_uniform": c["tv_uniform"],
            "min_share": min(c["shares"]), "missing": c["missing"], "under": c["under_generated"],
            "fd": result.samples.fd, "features": result.features}


def one_run(data: str, ratio: float, variant: str, seed: int, steps: int, n: int) -> dict[str, Any]:
    sets = [f"data.name={data}", f"data.imbalance={ratio}", f"train.steps={steps}", f"train.seed={seed}",
            "train.tensorboard=false", "train.samples=16", *VARIANTS[variant]]
    cfg = vaekit.load_config("mlp", sets)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = vaekit.train(cfg, f"{tmp}/r", quiet=True)
    seconds = time.perf_counter() - started
    model, test_result = result.model.eval(), result.test
    assert test_result is not None and test_result.per_class is not None
    train, _, test = load_splits(cfg)
    assert test is not None and train.labels is not None
    counts = class_counts(train.labels, 10).tolist()
    uniform = [0.1] * 10
    natural_balance = [c / sum(counts) for c in counts] if model.num_classes else None
    natural = coverage_of(model, test, train, n, balance=natural_balance)
    if model.num_classes:
        at_uniform = coverage_of(model, test, train, n, balance=uniform)
    else:
        sampler = None if variant == "vamp" else fit_sampler(model, train, "gmm", components=GMM_COMPONENTS)
        at_uniform = coverage_of(model, test, train, n, balanced_draws(model, train, uniform, sampler), uniform)
    per_class = {r["label"]: r["neg_elbo"] for r in test_result.per_class}
    tail = long_tail_counts(class_counts(load_dataset(data).labels, 10).tolist(), ratio)  # type: ignore[arg-type]
    rarest = sorted(range(10), key=lambda c: tail[c])[:3]  # the long tail's rarest, for the control as well
    return {"data": data, "ratio": ratio, "variant": variant, "seed": seed, "steps": steps,
            "train_seconds": round(seconds, 1), "train_counts": counts, "neg_elbo": test_result.neg_elbo,
            "per_class": [per_class[c] for c in range(10)], "rare3": statistics.mean(per_class[c] for c in rarest),
            "rarest": rarest, "natural": natural, "uniform": at_uniform}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(rows: dict[str, dict[str, Any]], commands: list[list[str]]) -> str:
    lines = ["The `mlp` preset (784-400-20, Bernoulli) on a long-tailed training split (`data.imbalance`; test split "
             "untouched), the same steps for every variant (bench/imbalance.py). Medians over seeds. rare-3: the "
             "test -ELBO of the three rarest training classes, averaged; gap: rare-3 minus the balanced-data "
             "control's. Samples: 10,000, classified by the named lenet's classifier; TV: total variation distance "
             "of their class histogram; missing: classes under 10% of their target share (in any seed). "
             "\"as drawn\": the prior (a conditional model: labels at the training distribution); \"at uniform\": "
             "a 20-component GMM's (the VampPrior's) components reweighted by the classes they hold, or a "
             "conditional model's labels drawn uniformly. A conditional model's -ELBO bounds -log p(x | y), given "
             "the true label: not the others' -log p(x). A step budget: no number here depends on what else ran "
             "(the 2026-12-07 rows overlapped the test suite and another benchmark).", "",
             "Commands (each adds its rows):", "", *[f"- `{c}` ({d})" for c, d in commands], ""]
    groups: dict[tuple[str, float], dict[str, list[dict[str, Any]]]] = {}
    for r in rows.values():
        groups.setdefault((r["data"], r["ratio"]), {}).setdefault(r["variant"], []).append(r)
    for (data, ratio), variants in sorted(groups.items()):
        control = _median([r["rare3"] for r in variants.get("balanced-data", [])])
        some = next(iter(variants.values()))[0]
        lines += [f"**{data}, ratio {ratio:g}** ({sum(some['train_counts']):,} training images, "
                  f"{some['train_counts'][0]:,} to {min(some['train_counts']):,} per class; "
                  f"{some['steps']:,} steps; samples classified by {some['natural']['features']})", "",
                  "| variant | seeds | test -ELBO | rare-3 -ELBO | gap to balanced data | as drawn: TV to training | "
                  "TV to uniform | missing | at uniform: smallest class share | TV to uniform | missing |",
                  "|---" * 11 + "|"]
        for name in VARIANTS:
            runs = variants.get(name, [])
            if not runs:
                continue
            rare = _median([r["rare3"] for r in runs])
            missing = sorted({m for r in runs for m in r["natural"]["missing"]})
            missing_u = sorted({m for r in runs for m in r["uniform"]["missing"]})
            lines.append(
                f"| {name} | {len(runs)} | {_median([r['neg_elbo'] for r in runs]):.2f} | {rare:.2f} | "
                f"{rare - control:+.2f} | {_median([r['natural']['tv_train'] for r in runs]):.3f} | "
                f"{_median([r['natural']['tv_uniform'] for r in runs]):.3f} | {', '.join(missing) or 'none'} | "
                f"{100 * _median([r['uniform']['min_share'] for r in runs]):.1f}% | "
                f"{_median([r['uniform']['tv_uniform'] for r in runs]):.3f} | {', '.join(missing_u) or 'none'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--redo", action="store_true", help="rerun rows that are already there")
    parser.add_argument("--rows", type=Path, default=ROWS, help="the rows file (default bench/imbalance_rows.json)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows_path = args.rows
    saved = json.loads(rows_path.read_text()) if rows_path.exists() else {"rows": {}, "commands": []}
    for variant in args.variants:
        for seed in args.seeds:
            key = f"{args.data}/{args.ratio:g}/{variant}/{seed}"
            if key in saved["rows"] and not args.redo:
                continue
            saved["rows"][key] = one_run(args.data, args.ratio, variant, seed, args.steps, args.samples)
            print(json.dumps(saved["rows"][key]), flush=True)
            rows_path.write_text(json.dumps(saved, indent=1) + "\n")
    command = (f".venv/bin/python bench/imbalance.py --data {args.data} --ratio {args.ratio:g} --seeds "
               f"{' '.join(map(str, args.seeds))} --variants {' '.join(args.variants)} --steps {args.steps}")
    saved["commands"].append([command, time.strftime("%Y-%m-%d")])
    rows_path.write_text(json.dumps(saved, indent=1) + "\n")
    if rows_path == ROWS:
        update_section("imbalance", render(saved["rows"], saved["commands"]))
    print(render(saved["rows"], saved["commands"]))


if __name__ == "__main__":
    main()

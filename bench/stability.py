"""Stability sweep: a plain loop (Adam, no clipping, no schedule, no guard) against vaekit's defaults.

learning rate {1e-4, 1e-3, 3e-3, 1e-2, 3e-2} x 5 seeds x {Bernoulli, learned-scale Gaussian},
the `mlp` network (784-400-20) on MNIST, short runs of the same number of steps for both.
A run has diverged when its final test -ELBO is non-finite, or worse than the best run of its
likelihood by more than |best| (for a positive best: worse than twice the best, as the issue says;
the Gaussian's -ELBO on MNIST is negative, where "twice" would flip meaning).

Run alone on an idle machine:

    .venv/bin/python bench/stability.py            # ~10 min on 2 cores
    .venv/bin/python bench/stability.py --steps 50 --seeds 1   # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

import vaekit
from results import update_section
from vaekit.data.datasets import load_dataset
from vaekit.models.vae import VAE

LRS = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
LIKELIHOODS = ["bernoulli", "gaussian"]


def plain_run(cfg: vaekit.Config, train_set: vaekit.Dataset, test_set: vaekit.Dataset) -> vaekit.EvalResult:
    """The textbook loop: Adam on the -ELBO, nothing else."""
    torch.manual_seed(cfg.train.seed)
    model = VAE(replace(cfg.model, input_shape=list(train_set.shape)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    step = 0
    while step < (cfg.train.steps or 0):
        for x in train_set.batches(cfg.train.batch_size, shuffle=True, generator=gen):
            model.elbo(x).neg_elbo().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == cfg.train.steps:
                break
    return vaekit.evaluate(model, test_set)


def vaekit_run(cfg: vaekit.Config) -> tuple[vaekit.EvalResult, int, int]:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        except vaekit.VaekitError as exc:  # TrainingDiverged counts as diverged
            print(f"    vaekit stopped: {exc}")
            nan = float("nan")
            return vaekit.EvalResult("test", 0, nan, nan, nan, nan, nan, 0, nan, []), -1, -1
        text = Path(f"{tmp}/run/metrics.jsonl").read_text()
        skipped = int(text.rsplit('"skipped": ', 1)[1].split(",")[0]) if '"skipped": ' in text else 0
        rollbacks = text.count('"kind": "rollback"')
    assert result.test is not None
    return result.test, skipped, rollbacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    results: dict[tuple[str, float, str], list[tuple[float, int, int, int]]] = {}
    t0 = time.perf_counter()
    for likelihood in LIKELIHOODS:
        for lr in LRS:
            for seed in range(args.seeds):
                cfg = vaekit.load_config("mlp", [f"model.likelihood={likelihood}", f"optim.lr={lr}",
                                                 f"train.steps={args.steps}", f"train.seed={seed}",
                                                 f"train.log_every={args.steps}"])
                plain = plain_run(cfg, train_set, test_set)
                ours, skipped, rollbacks = vaekit_run(cfg)
                results.setdefault((likelihood, lr, "plain"), []).append((plain.neg_elbo, plain.active_units, 0, 0))
                results.setdefault((likelihood, lr, "vaekit"), []).append((ours.neg_elbo, ours.active_units,
                                                                           skipped, rollbacks))
                print(f"{likelihood:9s} lr={lr:<6g} seed={seed} plain {plain.neg_elbo:10.2f}  "
                      f"vaekit {ours.neg_elbo:10.2f} (skipped {skipped}, rollbacks {rollbacks})  "
                      f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    report(results, args, time.perf_counter() - t0)


def _diverged(value: float, best: float) -> bool:
    return not math.isfinite(value) or value > best + abs(best)


def report(results: dict[tuple[str, float, str], list[tuple[float, int, int, int]]], args: argparse.Namespace,
           seconds: float) -> None:
    lines = [f"Command: `.venv/bin/python bench/stability.py --steps {args.steps} --seeds {args.seeds}` "
             f"({seconds / 60:.1f} min, {time.strftime('%Y-%m-%d')}). The `mlp` network, batch 128, "
             f"{args.steps} steps per run; test -ELBO in nats (median over seeds of the finite runs).", "",
             "| likelihood | lr | plain: diverged | plain: -ELBO | plain: active | vaekit: diverged | vaekit: -ELBO "
             "| vaekit: active | vaekit: skipped / rollbacks |", "|---|---|---|---|---|---|---|---|---|"]
    totals = {"plain": [0, 0], "vaekit": [0, 0]}
    for likelihood in LIKELIHOODS:
        finite = [v[0] for (lik, _, _), runs in results.items() if lik == likelihood for v in runs
                  if math.isfinite(v[0])]
        best = min(finite) if finite else math.inf
        for lr in LRS:
            cells = []
            for arm in ("plain", "vaekit"):
                runs = results[(likelihood, lr, arm)]
                div = sum(_diverged(r[0], best) for r in runs)
                nonfinite = sum(not math.isfinite(r[0]) for r in runs)
                totals[arm][0] += div
                totals[arm][1] += len(runs)
                ok = [r[0] for r in runs if math.isfinite(r[0])]
                med = f"{statistics.median(ok):.1f}" if ok else "nan"
                active = statistics.median(r[1] for r in runs)
                cells += [f"{div}/{len(runs)} ({nonfinite} non-finite)", med, f"{active:.0f}"]
            extra = results[(likelihood, lr, "vaekit")]
            cells.append(f"{sum(r[2] for r in extra)} / {sum(r[3] for r in extra)}")
            lines.append(f"| {likelihood} | {lr:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Diverged runs: plain loop {totals['plain'][0]}/{totals['plain'][1]}, "
              f"vaekit {totals['vaekit'][0]}/{totals['vaekit'][1]}."]
    update_section("stability", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

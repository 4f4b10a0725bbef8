"""The conditional MNIST model: generative-classifier accuracy on the test split and a per-class sample grid.

Trains a conditional preset (`model.conditional=true`) on MNIST for a wall-clock budget (epochs planned from a
timing run), then scores all 10,000 test images by argmax_y log p(x | y), each class's log-likelihood
importance-sampled with k samples (`vaekit eval --classify-k`), and writes a grid with one row per class for
the README (docs/figures/conditional-per-class.png).

    .venv/bin/python bench/conditional.py --preset mlp --minutes 20 --k 50
    .venv/bin/python bench/conditional.py --preset hvae --minutes 40 --k 50 --set data.name=mnist
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import vaekit
from results import plan_epochs, update_section
from vaekit.apps.images import save_grid
from vaekit.evaluation.evaluate import evaluate

BENCH = Path(__file__).resolve().parent
FIGURE = BENCH.parent / "docs" / "figures" / "conditional-per-class.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mlp")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--k", type=int, default=50, help="importance samples per class")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    base = ["model.conditional=true", "train.tensorboard=false", *args.set]
    epochs = plan_epochs(args.preset, base, args.minutes)
    cfg = vaekit.load_config(args.preset, [*base, f"train.epochs={epochs}"])
    run = BENCH / "out" / f"conditional-{args.preset}"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    t0 = time.perf_counter()
    result = vaekit.train(cfg, run, quiet=True)
    minutes = (time.perf_counter() - t0) / 60
    test = vaekit.load_dataset(cfg.data.name, "test")
    t1 = time.perf_counter()
    scored = evaluate(result.model, test, batch_size=500, classify_k=args.k)
    score_minutes = (time.perf_counter() - t1) / 60
    assert scored.class_accuracy is not None
    model = result.model
    labels = torch.arange(10).repeat_interleave(10)
    grid = model.sample(100, generator=torch.Generator().manual_seed(0), labels=labels)
    save_grid(grid, FIGURE, nrow=10)
    flags = " ".join(f"--set {s}" for s in args.set)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/conditional.py --preset {args.preset} --minutes {args.minutes:g} "
        f"--k {args.k}{' ' + flags if flags else ''}` ({time.strftime('%Y-%m-%d')}). `{args.preset}` with "
        f"`model.conditional=true` on `{cfg.data.name}`, {epochs} epoch{'s' if epochs != 1 else ''} in "
        f"{minutes:.1f} min of wall time (per-epoch test evaluations included); all 10,000 test images.", "",
        "| measure | value |", "|---|---|",
        f"| generative-classifier accuracy, argmax_y log p(x \\| y), k = {args.k} per class | "
        f"**{scored.class_accuracy:.2%}** |",
        f"| test -ELBO given the true label (nats) | {scored.neg_elbo:.2f} ± {scored.neg_elbo_se:.2f} |",
        f"| scoring time (10 classes x k samples per image) | {score_minutes:.1f} min |", "",
        f"Grid: `{FIGURE.relative_to(BENCH.parent)}`, one row per class 0-9, 10 samples each (seed 0)."])
    update_section(f"conditional-{args.preset}", body)
    print(body)


if __name__ == "__main__":
    main()

"""Test NLL of the `burda` preset on dynamically binarized MNIST, against Burda et al. (2016), Table 1.

Trains for a wall-clock budget (the number of epochs that fit is estimated from a short timing
run, so the cosine schedule ends on time), keeps a checkpoint per epoch, then estimates the test
NLL with k importance samples on all 10,000 test images, and an NLL-against-minutes curve from
the saved checkpoints (k = 1000 on the first 1,000 test images).

    .venv/bin/python bench/nll.py --minutes 60 --k 5000        # the paper's batch 20, planned
    .venv/bin/python bench/nll.py --epochs 1000 --k 5000 --set train.batch_size=100 --set optim.lr=0.002
    .venv/bin/python bench/nll.py --preset iwae-mlp --epochs 140 --k 5000   # IWAE k = 50, ~112 min
    .venv/bin/python bench/nll.py --preset lvae --minutes 80 --k 1000 --test-images 2000 --curve-k 100
        # a convolutional hierarchy: k = 5000 on all 10,000 test images would take hours of this CPU

The timing run measures its second window of steps, so a compiled run's plan leaves the compilation out.

Batch 100 at lr 2e-3 reaches a lower NLL per minute than the paper's batch 20 on this CPU (batch 20
is overhead-bound: 8k against 22k examples/s); see bench/RESULTS.md for the equal-time comparison.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import vaekit
from results import steps_per_second, update_section
from vaekit.checkpoint import list_checkpoints, unflatten_state
from vaekit.evaluation.evaluate import evaluate
from vaekit.storage import read_safetensors
from vaekit.training.players import model_weights

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--preset", default="burda")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of planning them from --minutes "
                        "(the plan rests on a 600-step timing run, which anything else running on the machine skews)")
    parser.add_argument("--tag", default="", help="suffix of the RESULTS.md section (nll-PRESET-TAG) and the run "
                        "folder, so a calibration run does not replace a preset's measured row")
    parser.add_argument("--test-images", type=int, default=10000, help="the final NLL on the first N test images "
                        "(a convolutional hierarchy at k = 5000 on all 10,000 is hours on this CPU)")
    parser.add_argument("--curve-k", type=int, default=1000, help="importance samples of the NLL-against-minutes curve")
    parser.add_argument("--curve-images", type=int, default=1000, help="test images of the curve")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override on top of the preset, as in `vaekit train --set` (repeatable)")
    args = parser.parse_args()
    cfg = vaekit.load_config(args.preset, [*args.set, "train.tensorboard=false"])
    steps_per_epoch = math.ceil(60000 / cfg.train.batch_size)
    rate = steps_per_second(args.preset, args.set) if args.epochs is None else math.nan
    # The short timing run is faster per step than a long run with its per-epoch test evaluation and
    # checkpoint: a 15-minute budget at 0.9 of the timed rate took 18.1 minutes (1.34x), so plan with 0.72.
    epochs = args.epochs or max(1, int(0.72 * args.minutes * 60 * rate / steps_per_epoch))
    name = f"{args.preset}-{args.tag}" if args.tag else args.preset
    run = OUT / name
    cfg = vaekit.load_config(args.preset, [*args.set, f"train.epochs={epochs}", "train.keep_checkpoints=1000",
                                           "train.tensorboard=false"])
    if run.exists():
        import shutil

        shutil.rmtree(run)
    t0 = time.perf_counter()
    result = vaekit.train(cfg, run, quiet=True)
    train_minutes = (time.perf_counter() - t0) / 60
    test = vaekit.load_dataset("binarized-mnist", "test")
    if args.test_images < len(test):
        test = test.subset(torch.arange(args.test_images))
    t1 = time.perf_counter()
    final = evaluate(result.model, test, batch_size=100, iw_samples=args.k)
    nll_minutes = (time.perf_counter() - t1) / 60
    curve = nll_curve(result.model, run, test, epochs, train_minutes, args.curve_k, args.curve_images)
    extra = "".join(f" --{flag} {value}" for flag, value, default in (
        ("test-images", args.test_images, 10000), ("curve-k", args.curve_k, 1000),
        ("curve-images", args.curve_images, 1000)) if value != default)
    lines = [
        f"Command: `.venv/bin/python bench/nll.py --preset {args.preset} --k {args.k}"
        f"{f' --tag {args.tag}' if args.tag else ''} "
        f"{f'--epochs {args.epochs}' if args.epochs else f'--minutes {args.minutes:g}'}"
        f"{extra}{''.join(f' --set {o}' for o in args.set)}` "
        f"({time.strftime('%Y-%m-%d')}). {epochs} epochs of batch "
        f"{cfg.train.batch_size}{f' ({rate:.0f} steps/s measured first)' if args.epochs is None else ''} in "
        f"{train_minutes:.1f} min; binarized test split = one fixed draw "
        f"(seed {vaekit.data.datasets.BINARIZED_TEST_SEED}); final model = "
        f"{'the EMA weights' if cfg.guard.ema_decay > 0 else 'the last weights (no EMA)'}.", "",
        "| estimate | nats | bits/dim | reference (Burda et al. 2016, Table 1) |", "|---|---|---|---|",
        f"| test -ELBO (single sample) | {final.neg_elbo:.2f} ± {final.neg_elbo_se:.2f} | {final.bits_per_dim:.4f} | |",
        f"| test NLL, IW bound at k = {args.k} | {final.nll:.2f} ± {final.nll_se:.2f} | {final.nll_bits_per_dim:.4f} "
        f"| VAE 86.76, IWAE (k = 50) 84.78 |", "",
        f"NLL evaluation of {'all 10,000' if len(test) == 10000 else f'the first {len(test):,}'} test images at "
        f"k = {args.k}: {nll_minutes:.1f} min (target: under 10).", "",
        f"NLL against training time (k = {args.curve_k}, first {args.curve_images:,} test images, from the "
        "per-epoch checkpoints):", "",
        "| training minutes | epoch | NLL (nats) |", "|---|---|---|", *curve]
    lines += ["", f"Test KL per group (nats, top first): {final.kl_per_group}; active units per group: "
              f"{final.active_per_group} of {final.group_dims}; examples/s in training steps: "
              f"{result.examples_per_s:,.0f}."]
    update_section(f"nll-{name}", "\n".join(lines))
    print("\n".join(lines))


def nll_curve(model: vaekit.VAE, run: Path, test: vaekit.Dataset, epochs: int, minutes: float, k: int = 1000,
              images: int = 1000) -> list[str]:
    checkpoints = list_checkpoints(run / "checkpoints")
    picks = sorted({checkpoints[int(i)] for i in torch.linspace(1, len(checkpoints) - 1, 6).round().tolist()})
    subset = test.subset(torch.arange(min(images, len(test))))
    rows = []
    for path in picks:
        tensors, meta = read_safetensors(path)
        state = unflatten_state(json.loads(meta["state"]), tensors)
        model.load_state_dict(model_weights(state))  # the EMA weights when kept
        nll = evaluate(model, subset, batch_size=100, iw_samples=k).nll
        epoch = float(state["epoch"])
        rows.append(f"| {minutes * epoch / epochs:.1f} | {epoch:.0f} | {nll:.2f} |")
    return rows


if __name__ == "__main__":
    main()

"""The EMA's lag on a short run: test -ELBO of a run's exported weights (the EMA, when `guard.ema_decay` > 0)
against the live weights of its last training checkpoint, on the same images with the same seed.

With decay d the average reaches back about 1 / (1 - d) steps, and the weight of the first n steps in it after
N is d^(N - n): over a run of a few thousand steps a decay of 0.999 still holds the steep early part of
training. This script measures what that costs a finished run; it trains nothing.

    .venv/bin/python bench/ema_lag.py bench/out/cifar-jpeg --test-images 2000
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

import vaekit
from results import update_section
from vaekit.checkpoint import load_latest_checkpoint
from vaekit.evaluation.evaluate import evaluate
from vaekit.training.players import players_state

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run directory (model/ and checkpoints/)")
    parser.add_argument("--test-images", type=int, default=2000, help="score the first N test images")
    parser.add_argument("--section", default=None, help="RESULTS.md section name (default: ema-lag-<run name>)")
    args = parser.parse_args()
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    cfg = vaekit.load_config(args.run / "config.yaml")
    state = load_latest_checkpoint(args.run / "checkpoints")
    if state is None:
        parser.error(f"{args.run}/checkpoints holds no readable checkpoint")
    data = vaekit.load_dataset(cfg.data.name, "test")
    data = data.subset(torch.arange(min(args.test_images, len(data))))
    exported = vaekit.VAE.from_pretrained(str(args.run))
    live = copy.deepcopy(exported)
    live.load_state_dict(players_state(state)["model"]["weights"])
    dims = data.images[0].numel()
    rows = []
    for name, model in (("exported (EMA)" if cfg.guard.ema_decay > 0 else "exported", exported),
                        (f"live weights at step {state['step']:,}", live)):
        t0 = time.perf_counter()
        scored = evaluate(model, data, batch_size=250)
        rows.append(f"| {name} | {scored.neg_elbo:.1f} +- {scored.neg_elbo_se:.1f} | {scored.bits_per_dim:.3f} | "
                    f"{scored.kl:.1f} | {time.perf_counter() - t0:.0f} s |")
        print(rows[-1], flush=True)
    body = (f"Command: `.venv/bin/python bench/ema_lag.py {args.run.as_posix()} "
            f"--test-images {len(data)}` ({time.strftime('%Y-%m-%d')}). Run `{args.run.name}`: "
            f"data `{cfg.data.name}`, EMA decay {cfg.guard.ema_decay:g}, {state['step']:,} steps; the first "
            f"{len(data):,} test images, {dims} dimensions each, same evaluation seed.\n\n"
            "| weights | test -ELBO (nats) | bits/dim | KL (nats) | scored in |\n|---|---|---|---|---|\n"
            + "\n".join(rows))
    update_section(args.section or f"ema-lag-{args.run.name}", body)
    print(body)


if __name__ == "__main__":
    main()

"""Train presets for a wall-clock budget each and add them to the model zoo (bench/zoo_add.py measures the cards).

Each entry's epochs are planned from a 200-step timing run (examples/s in training steps, evaluations left out),
then the preset trains eagerly into bench/out/zoo-NAME and goes into src/vaekit/pretrained/NAME with a card
measured on its fp16 weights. Entries already in the zoo are skipped unless named with --only.

    .venv/bin/python bench/zoo_build.py                      # every entry below, ~50 min on 2 cores
    .venv/bin/python bench/zoo_build.py --only vamp-mnist    # one entry
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import vaekit
from results import plan_epochs
from vaekit import zoo
from zoo_add import add

BENCH = Path(__file__).resolve().parent
EAGER = ["train.compile=false", "train.tensorboard=false"]


@dataclass
class Entry:
    name: str
    preset: str
    minutes: float | None  # wall budget for the training steps; None = the preset's own epochs
    sets: list[str] = field(default_factory=list)
    nll_k: int = 0  # the card's NLL (0 = none: too slow for a convolutional model on all 10,000 test images)
    notes: str = ""


ENTRIES = [
    Entry("conv-mnist", "conv", None, notes="The conv preset as shipped (10 epochs)."),
    # no stable entry: the stable preset writes out the defaults, so it trains mlp-mnist's weights bit for bit
    Entry("iwae-mnist", "iwae-mlp", 5, nll_k=1000,
          notes="The iwae-mlp preset (IWAE bound, k = 50) for a 5-minute budget: a short run of a 100-epoch preset."),
    Entry("vamp-mnist", "vamp", 7, nll_k=1000,
          notes="The vamp preset (VampPrior, 100 pseudo-inputs) for a 7-minute budget; the 62-minute row of "
                "bench/RESULTS.md reached 83.94 nats, this short run is weaker."),
    Entry("iaf-mnist", "iaf", 7, ["objective.kl_warmup_steps=10000"], nll_k=1000,
          notes="The iaf preset (2-step IAF posterior) for a 7-minute budget, KL warm-up shortened to 10,000 steps "
                "to end inside the run; its KL is a single-sample Monte Carlo estimate."),
    Entry("lvae-mnist", "lvae", 9, ["objective.kl_warmup_steps=1500"],
          notes="The lvae preset (four residual-convolution groups, top-down) for a 9-minute budget, KL warm-up "
                "shortened to 1,500 steps to end inside the run; no NLL on the card (k = 1000 over 10,000 images "
                "of a convolutional hierarchy takes over an hour here)."),
    Entry("vq-mnist", "vqvae", 15,
          notes="The vqvae preset (a 7x7 grid of 512 codes, EMA codebook, gated PixelCNN prior trained alongside) "
                "for a 15-minute budget; its -ELBO is the two-part code length (an NLL would give the same number)."),
]


def build(entry: Entry) -> None:
    sets = [*entry.sets, *EAGER]
    if entry.minutes is not None:
        sets.append(f"train.epochs={plan_epochs(entry.preset, [*entry.sets, *EAGER], entry.minutes)}")
    cfg = vaekit.load_config(entry.preset, sets)
    run = BENCH / "out" / f"zoo-{entry.name}"
    shutil.rmtree(run, ignore_errors=True)
    t0 = time.perf_counter()
    result = vaekit.train(cfg, run, quiet=True)
    wall = (time.perf_counter() - t0) / 60
    steps_minutes = result.steps * cfg.train.batch_size / result.examples_per_s / 60  # evaluations left out
    command = f"vaekit train {entry.preset} " + " ".join(f"--set {s}" for s in sets)
    epochs = f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
    notes = (f"{entry.notes} {epochs}, {result.steps:,} steps: {steps_minutes:.1f} min of training "
             f"steps, {wall:.1f} min of wall time with the per-epoch test evaluations (bench/zoo_build.py).")
    card = add(run, entry.name, command, round(steps_minutes, 1), entry.nll_k, notes)
    test = card["test"]
    nll = f", NLL {test['nll']:.2f} (k = {test['iw_samples']})" if test["nll"] is not None else ""
    print(f"{entry.name}: -ELBO {test['neg_elbo']:.2f} +- {test['neg_elbo_se']:.2f}{nll}, "
          f"{steps_minutes:.1f} min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build these entries (even if in the zoo)")
    args = parser.parse_args()
    known = {e.name: e for e in ENTRIES}
    if args.only:
        unknown = sorted(set(args.only) - set(known))
        if unknown:
            parser.error(f"unknown entries {unknown}; valid: {', '.join(known)}")
        todo = [known[n] for n in args.only]
    else:
        todo = [e for e in ENTRIES if e.name not in zoo.names()]
    for entry in todo:
        build(entry)


if __name__ == "__main__":
    main()

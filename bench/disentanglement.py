"""Disentangling objectives on dsprites-like (issue 43): disentanglement_lib's metrics at an equal wall-clock budget.

    .venv/bin/python bench/disentanglement.py --minutes 10 --seeds 0            # 6 runs, ~2.5 h with the metrics
    .venv/bin/python bench/disentanglement.py --minutes 10 --seeds 1 --objectives beta-tcvae factor-vae

Every run trains the same network on dsprites-like (dSprites' factor grid drawn procedurally: not the original's
pixels; data/dsprites.py) for --minutes of wall clock (train.max_minutes): disentanglement_lib's convolutional
encoder and decoder widths (32, 32, 64, 64; 4 stride-2 layers here of vaekit's `conv` kind, its kernel and
padding), 10 latents, Bernoulli likelihood, Adam 1e-4, batch 64, the eager step (`train.compile=false`: `auto` would
compile the objectives it can, and the compile would come out of their budgets and not the others'), one
objective:

- beta-vae: `elbo`, beta 4; annealed-vae: Burgess et al.'s gamma 1000, C to 25 nats over the run's steps (a 200-step
  probe before the budget gives the steps/s);
- beta-tcvae: beta 6 (Chen et al.'s dSprites choice), stratified estimator; factor-vae: gamma 10 (InfoGAN-CR's
  FactorVAE row); dip-vae-i: lambda_od 10, lambda_d 100; dip-vae-ii: lambda_od = lambda_d = 10.

Then `vaekit eval --disentanglement` on the train split (the whole grid) with disentanglement_lib's defaults
(--fast: a tenth of the points, named so in the rows). The goals (issue 43, from InfoGAN-CR's Table 1, FactorVAE
gamma 10 under disentanglement_lib's metrics): the best objective's median MIG >= 0.40, FactorVAE score >= 0.83,
DCI disentanglement >= 0.70. pythae's BetaTCVAE, FactorVAE and DisentangledBetaVAE (`--objectives pythae-beta-tcvae
pythae-factor-vae pythae-disentangled-beta-vae`) train the same network at the same budget in pythae's venv
(bench/pythae_disentangle.py, on a seeded draw of 100,000 grid images rendered here), and their saved encoders are
scored here by the same metric code.
Rows go to bench/disentanglement_rows.json, one per run, skipped when present; the section disentanglement of
bench/RESULTS.md is rewritten from all rows. Run it alone: the budget is wall clock.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

import vaekit
from results import steps_per_second, update_section
from throughput import ensure_pythae
from vaekit.evaluation.disentanglement import Codes, disentanglement, score_codes
from vaekit.models.nets import ConvEncoder

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "disentanglement_rows.json"
NETWORK = ["data.name=dsprites-like", "model.encoder=conv", "model.decoder=conv", "model.hidden=[32, 32, 64, 64]",
           "model.decoder_hidden=[64, 64, 32, 32]", "model.latent_dim=10", "model.likelihood=bernoulli",
           "optim.lr=0.0001", "train.batch_size=64", "train.steps=10000000", "train.checkpoint_minutes=30",
           "train.tensorboard=false", "train.samples=16", "train.log_every=200",
           "train.compile=false"]  # eager for all: a compile would come out of some objectives' budgets, not others'
OBJECTIVES = {
    "beta-vae": ["objective.name=elbo", "objective.beta=4"],
    "annealed-vae": ["objective.name=annealed-vae"],
    "beta-tcvae": ["objective.name=beta-tcvae", "objective.beta=6"],
    "factor-vae": ["objective.name=factor-vae", "objective.factor_gamma=10"],
    "dip-vae-i": ["objective.name=dip-vae", "objective.dip_kind=i", "objective.dip_offdiag=10"],
    "dip-vae-ii": ["objective.name=dip-vae", "objective.dip_kind=ii", "objective.dip_offdiag=10",
                   "objective.dip_diag=10"],
}
PYTHAE = {"pythae-beta-tcvae": "beta-tcvae", "pythae-factor-vae": "factor-vae",
          "pythae-disentangled-beta-vae": "disentangled-beta-vae"}  # bench/pythae_disentangle.py's models
PYTHAE_TRAIN_IMAGES = 100_000  # a seeded draw from the grid, rendered here (pythae holds its data as float32)
METRICS = ("beta_vae", "factor_vae", "mig", "disentanglement", "completeness", "informativeness", "sap",
           "modularity", "explicitness")


def one_run(objective: str, seed: int, minutes: float, fast: bool) -> dict[str, Any]:
    if objective in PYTHAE:
        return pythae_run(objective, seed, minutes, fast)
    sets = [*NETWORK, *OBJECTIVES[objective], f"train.seed={seed}", f"train.max_minutes={minutes}"]
    # a 200-step probe before every run: it warms the process up, so the first run of a process is not the slow one
    # (beta-vae, run first, made 6,457 and 8,490 steps where the others made ~10,100), and gives annealed-vae the
    # steps/s that puts C's maximum at the budget's end
    rate = steps_per_second(None, [*NETWORK, *OBJECTIVES[objective]], 200)
    if objective == "annealed-vae":
        sets.append(f"objective.capacity_steps={int(minutes * 60 * rate)}")
    cfg = vaekit.load_config(None, sets)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = vaekit.train(cfg, f"{tmp}/r", quiet=True)
        seconds = time.perf_counter() - started
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence notes
        scores = disentanglement(result.model, vaekit.load_dataset("dsprites-like"), fast=fast, seed=seed)
    test = result.test
    return {"objective": objective, "seed": seed, "minutes": minutes, "steps": result.steps,
            "probe_steps_per_second": round(rate, 2),
            "train_seconds": round(seconds, 1), "neg_elbo": test.neg_elbo if test else None,
            "active_units": test.active_units if test else None, **scores}


class SavedEncoder:
    """pythae's trained encoder in vaekit's ConvEncoder (the same parameter names), as disentanglement.Codes reads a
    model: `encode(x).mean` are the first 10 outputs."""

    latent_dim, device = 10, torch.device("cpu")

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.net = ConvEncoder((1, 64, 64), [32, 32, 64, 64], 20, "relu")
        self.net.load_state_dict(state)
        self.net.eval()

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(mean=self.net(x)[:, : self.latent_dim])


def rendered(data: Any, index: torch.Tensor, path: Path) -> Path:
    """Images `index` of a dsprites-like split as uint8 (N, 1, 64, 64) in a .npy for pythae's venv."""
    np.save(path, torch.cat([data.batch(part) for part in index.split(5000)]).to(torch.uint8).numpy())
    return path


def pythae_run(objective: str, seed: int, minutes: float, fast: bool) -> dict[str, Any]:
    rate = 0.0  # steps/s, for disentangled-beta-vae's C warm-up only: from a probe of vaekit on the same network
    if PYTHAE[objective] == "disentangled-beta-vae":
        rate = steps_per_second(None, [*NETWORK, *OBJECTIVES["annealed-vae"]], 200)
    data, test = vaekit.load_dataset("dsprites-like"), vaekit.load_dataset("dsprites-like", "test")
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:PYTHAE_TRAIN_IMAGES]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train_npy, test_npy = rendered(data, pick, folder / "train.npy"), rendered(test, torch.arange(len(test)),
                                                                                   folder / "test.npy")
        out = folder / "encoder.pt"
        subprocess.run([str(ensure_pythae()), str(BENCH / "pythae_disentangle.py"), str(train_npy), str(test_npy),
                        "--model", PYTHAE[objective], "--minutes", str(minutes), "--out", str(out), "--seed",
                        str(seed), "--steps-per-second", str(rate)], check=True)
        saved = torch.load(out)
    info = saved["info"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's convergence notes
        scores = score_codes(Codes(SavedEncoder(saved["encoder"]), data), data, fast, seed)  # type: ignore[arg-type]
    return {"objective": objective, "seed": seed, "minutes": minutes, "steps": info["steps"],
            "train_seconds": info["train_seconds"], "neg_elbo": info["neg_elbo"], "active_units": None,
            "pythae": info, **scores}


def render(rows: dict[str, dict[str, Any]], commands: list[list[str]]) -> str:
    lines = ["dsprites-like (dSprites' factor grid drawn procedurally, not the original's pixels), one network, "
             "equal wall-clock budget per run (bench/disentanglement.py); disentanglement_lib's metric definitions "
             "(vaekit's implementation, evaluation/disentanglement.py) on the posterior means; medians over seeds.",
             "", "Commands (each adds its rows):", "", *[f"- `{c}` ({d})" for c, d in commands], "",
             "| objective | seeds | mode | steps | test -ELBO | " + " | ".join(METRICS) + " |",
             "|---" * (5 + len(METRICS)) + "|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows.values():
        groups.setdefault((r["objective"], r["mode"]), []).append(r)
    for (objective, mode), runs in sorted(groups.items()):
        med = {k: statistics.median(r[k] for r in runs) for k in (*METRICS, "steps")}
        elbo = statistics.median(r["neg_elbo"] for r in runs if r["neg_elbo"] is not None)
        lines.append(f"| {objective} | {len(runs)} | {mode} | {med['steps']:,.0f} | {elbo:.1f} | "
                     + " | ".join(f"{med[k]:.3f}" for k in METRICS) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="*", default=list(OBJECTIVES), choices=[*OBJECTIVES, *PYTHAE],
                        help="vaekit's objectives (default: all six) and pythae's models (pythae-...)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fast", action="store_true", help="the metrics' fast mode (a tenth of the points)")
    parser.add_argument("--rows", type=Path, default=ROWS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    saved = json.loads(args.rows.read_text()) if args.rows.exists() else {"rows": {}, "commands": []}
    for seed in args.seeds:
        for objective in args.objectives:
            key = f"{objective}/{seed}/{'fast' if args.fast else 'full'}"
            if key in saved["rows"]:
                continue
            saved["rows"][key] = one_run(objective, seed, args.minutes, args.fast)
            print(json.dumps(saved["rows"][key]), flush=True)
            args.rows.write_text(json.dumps(saved, indent=1) + "\n")
    command = (f".venv/bin/python bench/disentanglement.py --minutes {args.minutes:g} --seeds "
               f"{' '.join(map(str, args.seeds))} --objectives {' '.join(args.objectives)}"
               + (" --fast" if args.fast else ""))
    saved["commands"].append([command, time.strftime("%Y-%m-%d")])
    args.rows.write_text(json.dumps(saved, indent=1) + "\n")
    if args.rows == ROWS:
        update_section("disentanglement", render(saved["rows"], saved["commands"]))
    print(render(saved["rows"], saved["commands"]))


if __name__ == "__main__":
    main()

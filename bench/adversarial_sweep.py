"""The adversarial objective's stability sweep (issue 42): discriminator learning rate x autoencoder learning rate x
seeds, vaekit's stabilizers on (the `vaegan` preset as it is) and off, on MNIST.

    .venv/bin/python bench/adversarial_sweep.py --stabilizers on     # 18 runs, ~35 min
    .venv/bin/python bench/adversarial_sweep.py --stabilizers off    # 18 runs, ~35 min
    .venv/bin/python bench/adversarial_sweep.py --stabilizers pythae # pythae 0.1.2's VAEGAN on the same cells, ~20 min

Every run trains `vaegan` for --steps steps (the discriminator from --disc-start) at one cell's rates. Off means:
no clipping, no skip rule, no rollback, no loss watch, a fixed adversarial weight (no adaptive weight). A run
diverged when it stopped with a diagnosis, or its final -ELBO or samples are not finite. An outright win is read
from the logged accuracies independently of the detector (some window of `watch_window` steps of train rows with
mean real-and-fake accuracy >= `win_accuracy`), and "named" counts the runs whose detector said so. FD is the
prior samples' FD-lenet-mnist (5,000 samples against 5,000 test images; not Inception FID). pythae's VAEGAN
(bench/pythae_sweep_run.py: its MLP networks, its own equilibrium margin as its only stabilizer, the discriminator
from the first step) is judged by the same window rule, on its discriminator's accuracy on a fixed batch of real and
decoded prior images every 20 steps. Rows go to
bench/adversarial_sweep_rows.json, one per run, so the table fills over several invocations; the section
adversarial-sweep of bench/RESULTS.md is rewritten from all rows. A step budget: no number but each row's
seconds depends on what else runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaekit
from quality_budget import batches, real_features
from results import update_section
from throughput import ensure_pythae
from vaekit.apps.report import read_metrics
from vaekit.errors import VaekitError
from vaekit.evaluation.quality import quality
from vaekit.evaluation.quality.metrics import frechet_distance
from vaekit.evaluation.quality.score import embed

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "adversarial_sweep_rows.json"
DISC_LRS = (1e-4, 3e-4, 1e-3)
AE_LRS = (3e-4, 1e-3)
OFF = ["guard.clip_grad_norm=null", "guard.skip_outlier=null", "guard.skip_nonfinite=false", "guard.rollback_after=0",
       "guard.loss_rise=null", "adversarial.adaptive=false"]


def won_outright(rows: list[dict[str, Any]], window: int, accuracy: float, log_every: int) -> bool:
    """Whether some `window` steps of train rows (after the discriminator started) average >= `accuracy`."""
    accs = [0.5 * (r["acc_real"] + r["acc_fake"]) for r in rows if r.get("kind") == "train" and "acc_real" in r]
    span = max(1, window // log_every)
    return any(sum(accs[i : i + span]) / span >= accuracy for i in range(len(accs) - span + 1))


def one_run(disc_lr: float, ae_lr: float, seed: int, on: bool, steps: int, disc_start: int) -> dict[str, Any]:
    sets = [f"adversarial.lr={disc_lr}", f"optim.lr={ae_lr}", f"train.seed={seed}", f"train.steps={steps}",
            f"adversarial.disc_start={disc_start}", "train.log_every=20", "train.tensorboard=false",
            "adversarial.watch_window=100", *([] if on else OFF)]
    cfg = vaekit.load_config("vaegan", sets)
    row: dict[str, Any] = {"disc_lr": disc_lr, "ae_lr": ae_lr, "seed": seed, "stabilizers": "on" if on else "off"}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        elbo = fd = math.nan
        try:
            result = vaekit.train(cfg, f"{tmp}/r", quiet=True)
            elbo = result.test.neg_elbo if result.test else math.nan
            fd = quality(result.model, vaekit.load_dataset("mnist", "test"), n=5000).samples.fd
        except VaekitError as err:  # stopped with a diagnosis (no rollback left)
            row["stopped"] = str(err).splitlines()[0][:160]
        except (ValueError, RuntimeError) as err:  # non-finite samples: no distance to compute
            row["unscored"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        metrics = read_metrics(Path(f"{tmp}/r"))
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["neg_elbo"], row["fd"] = elbo, fd
    row["diverged"] = not (math.isfinite(elbo) and math.isfinite(fd))
    row["rollbacks"] = sum(r.get("kind") == "rollback" for r in metrics)
    row["won"] = won_outright(metrics, cfg.adversarial.watch_window, cfg.adversarial.win_accuracy, 20)
    row["named"] = [r["verdict"] for r in metrics if r.get("kind") == "discriminator"]
    return row


def pythae_run(disc_lr: float, ae_lr: float, seed: int, steps: int, folder: Path) -> dict[str, Any]:
    """pythae's VAEGAN on one cell (bench/pythae_sweep_run.py in its own venv): its own stabilizer (the equilibrium
    margin that skips a player's update) is all it has. Diverged: a non-finite loss or non-finite samples."""
    npz = folder / "mnist.npz"
    if not npz.exists():
        np.savez(npz, train=vaekit.load_dataset("mnist", "train").images.numpy())
    row: dict[str, Any] = {"disc_lr": disc_lr, "ae_lr": ae_lr, "seed": seed, "stabilizers": "pythae"}
    started = time.perf_counter()
    out = folder / "cell.npz"
    done = subprocess.run([str(ensure_pythae()), str(BENCH / "pythae_sweep_run.py"), str(npz), "--lr", str(ae_lr),
                           "--disc-lr", str(disc_lr), "--steps", str(steps), "--seed", str(seed), "--out", str(out)],
                          capture_output=True, text=True)
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["neg_elbo"], row["fd"], row["rollbacks"], row["named"] = math.nan, math.nan, 0, []
    if done.returncode != 0:  # pythae raises ArithmeticError on a NaN loss
        row["stopped"] = (done.stderr.strip().splitlines() or ["?"])[-1][:160]
        row["diverged"], row["won"] = True, False
        return row
    saved = np.load(out)
    samples = torch.from_numpy(saved["samples"]).float()
    watched = [{**r, "kind": "train"} for r in json.loads(str(saved["rows"]))]
    finite = bool(torch.isfinite(samples).all()) and all(r["finite"] for r in watched)
    if finite:
        net, real = real_features("mnist", 5000)
        row["fd"] = frechet_distance(real, embed(net, batches(samples))[0])
    row["diverged"] = not finite
    row["won"] = won_outright(watched, 100, vaekit.load_config("vaegan").adversarial.win_accuracy, 20)
    return row


def median(values: list[float], fmt: str) -> str:
    finite = sorted(v for v in values if math.isfinite(v))
    return format(finite[len(finite) // 2], fmt) if finite else "-"


def cell(runs: list[dict[str, Any]], stab: str) -> str:
    """A cell's columns after `diverged`: outright wins, how many the detector named, rollbacks, median FD and
    -ELBO over its finite runs (pythae has no detector, rollbacks or -ELBO: "-")."""
    won = [r for r in runs if r["won"]]
    named = "-" if stab == "pythae" else f'{sum("wins outright" in r["named"] for r in won)} of {len(won)}'
    rollbacks = "-" if stab == "pythae" else sum(r["rollbacks"] for r in runs)
    kept = [r for r in runs if not r["diverged"]]
    return (f"{len(won)} | {named} | {rollbacks} | {median([r['fd'] for r in kept], '.3f')} | "
            f"{median([r['neg_elbo'] for r in kept], '.2f')} |")


def render(rows: dict[str, dict[str, Any]], commands: list[list[str]]) -> str:
    lines = ["The `vaegan` preset on MNIST, one run per cell and seed (bench/adversarial_sweep.py). FD-lenet-mnist "
             "of 5,000 prior samples (not Inception FID), median over the cell's finite runs.", "",
             "Commands (each adds its rows):", "", *[f"- `{c}` ({d})" for c, d in commands], "",
             "| stabilizers | disc lr | autoencoder lr | runs | diverged | won outright | named by the detector | "
             "rollbacks | median FD | median test -ELBO |", "|---" * 10 + "|"]
    cells: dict[tuple[str, float, float], list[dict[str, Any]]] = {}
    for r in rows.values():
        cells.setdefault((r["stabilizers"], r["disc_lr"], r["ae_lr"]), []).append(r)
    for (stab, d, a), runs in sorted(cells.items()):
        diverged = sum(r["diverged"] for r in runs)
        lines.append(f"| {stab} | {d:g} | {a:g} | {len(runs)} | {diverged} | {cell(runs, stab)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stabilizers", choices=["on", "off", "pythae"], required=True,
                        help="vaekit's vaegan with its stabilizers on or off, or pythae 0.1.2's VAEGAN")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--disc-start", type=int, default=200)
    args = parser.parse_args()
    saved = json.loads(ROWS.read_text()) if ROWS.exists() else {"rows": {}, "commands": []}
    with tempfile.TemporaryDirectory() as tmp:  # pythae's cells share one copy of the training images
        for disc_lr, ae_lr, seed in itertools.product(DISC_LRS, AE_LRS, args.seeds):
            if args.stabilizers == "pythae":
                row = pythae_run(disc_lr, ae_lr, seed, args.steps, Path(tmp))
            else:
                row = one_run(disc_lr, ae_lr, seed, args.stabilizers == "on", args.steps, args.disc_start)
            saved["rows"][f"{args.stabilizers}/{disc_lr:g}/{ae_lr:g}/{seed}"] = row
            print(json.dumps(row), flush=True)
            ROWS.write_text(json.dumps(saved, indent=1) + "\n")
    command = (f".venv/bin/python bench/adversarial_sweep.py --stabilizers {args.stabilizers} --seeds "
               f"{' '.join(map(str, args.seeds))} --steps {args.steps} --disc-start {args.disc_start}")
    saved["commands"].append([command, time.strftime("%Y-%m-%d")])
    ROWS.write_text(json.dumps(saved, indent=1) + "\n")
    update_section("adversarial-sweep", render(saved["rows"], saved["commands"]))
    print(render(saved["rows"], saved["commands"]))


if __name__ == "__main__":
    main()

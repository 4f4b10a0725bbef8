"""Training throughput side by side: vaekit (default and fastest setting) against pythae.

The same network (784-400-20, Bernoulli, Adam 1e-3, batch 128), the same MNIST files, the same
number of epochs. pythae runs from its own venv (bench/.venv-pythae, made here with the torch
pin first). Runs are interleaved (vaekit default, balanced, fastest, fastest + compile, pythae) and repeated; the table
gives the median and the spread (min-max).

    .venv/bin/python bench/throughput.py                      # 3 repeats x 10 epochs, ~5 min
    .venv/bin/python bench/throughput.py --repeats 1 --epochs 2

Run it alone: two heavy processes on 2 cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import vaekit
from results import update_section

BENCH = Path(__file__).resolve().parent
PYTHAE_VENV = BENCH / ".venv-pythae"
FAST = ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.004"]  # see bench/RESULTS.md, "Throughput"
# the fastest setting whose 10-epoch -ELBO stays near the default's (bench/batch_sweep.py)
BALANCED = ["train.precision=bf16", "train.batch_size=256", "optim.lr=0.002"]
BF16_PEAK_EXAMPLES_PER_S = 950e9 / 3.28e6  # bf16 matmul ceiling / FLOP per example (forward + backward)


def ensure_pythae() -> Path:
    python = PYTHAE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYTHAE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)  # pin first
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pythae==0.1.2"], check=True)
    return python


def run_vaekit(extra: list[str], epochs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaekit", "train", "mlp", "--run-dir", f"{tmp}/run", "--epochs", str(epochs),
               "--json", *(arg for item in extra for arg in ("--set", item))]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    return {"examples_per_s": train_rows[-1]["examples_per_s"], "neg_elbo": out["test"]["neg_elbo"],
            "seconds": 60000 * epochs / train_rows[-1]["examples_per_s"]}


def run_pythae(python: Path, data: Path, epochs: int) -> dict[str, float]:
    out = subprocess.run([str(python), str(BENCH / "pythae_run.py"), str(data), str(epochs)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    python = ensure_pythae()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mnist.npz"
        np.savez(data, train=vaekit.load_dataset("mnist", "train").images.numpy(),
                 test=vaekit.load_dataset("mnist", "test").images.numpy())
        runs: dict[str, list[dict[str, float]]] = {"vaekit default": [], "vaekit balanced": [], "vaekit fastest": [],
                                                   "vaekit fastest + compile": [], "pythae": []}
        for r in range(args.repeats):
            runs["vaekit default"].append(run_vaekit([], args.epochs))
            runs["vaekit balanced"].append(run_vaekit(BALANCED, args.epochs))
            runs["vaekit fastest"].append(run_vaekit(FAST, args.epochs))
            runs["vaekit fastest + compile"].append(run_vaekit([*FAST, "train.compile=true"], args.epochs))
            runs["pythae"].append(run_pythae(python, data, args.epochs))
            print(f"repeat {r + 1}:", {k: round(v[-1]["examples_per_s"]) for k, v in runs.items()}, flush=True)
    report(runs, args)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    med = {k: statistics.median(r["examples_per_s"] for r in v) for k, v in runs.items()}
    lines = [f"Command: `.venv/bin/python bench/throughput.py --epochs {args.epochs} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}). 784-400-20, Bernoulli, Adam 1e-3, batch 128, {args.epochs} epochs of "
             "the 60,000 MNIST training images; examples/s counts training steps only (vaekit: from its logged "
             "rows, evaluation excluded, compilation included; pythae: `trainer.train()` with no eval set). "
             f"vaekit balanced = `{' '.join('--set ' + f for f in BALANCED)}`; "
             f"fastest = `{' '.join('--set ' + f for f in FAST)}`; + compile adds `--set train.compile=true`.",
             "",
             "| trainer | examples/s (median) | spread | seconds / epoch | test -ELBO (nats) | vs pythae |",
             "|---|---|---|---|---|---|"]
    for name, v in runs.items():
        eps = [r["examples_per_s"] for r in v]
        elbo = statistics.median(r["neg_elbo"] for r in v)
        lines.append(f"| {name} | {med[name]:,.0f} | {min(eps):,.0f}-{max(eps):,.0f} | {60000 / med[name]:.2f} | "
                     f"{elbo:.2f} | {med[name] / med['pythae']:.2f}x |")
    best = max((k for k in med if k != "pythae"), key=med.__getitem__)
    lines += ["", f"Share of the bf16 matmul ceiling (~{BF16_PEAK_EXAMPLES_PER_S:,.0f} examples/s for 3.28 MFLOP per "
              f"example): {med[best] / BF16_PEAK_EXAMPLES_PER_S:.1%} at the fastest ({best})."]
    update_section("throughput", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

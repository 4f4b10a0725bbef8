"""Training throughput on one CUDA GPU, side by side: vaekit's settings against pythae on the same card.

The network, data and optimizer of bench/throughput.py (784-400-20, Bernoulli, Adam 1e-3, MNIST), every
trainer on the GPU. Runs where CUDA and pythae import with the Python running this script (on the device
machine: its image's torch, pythae carried as wheels); writes the "gpu-throughput" section of RESULTS.md.

    python bench/gpu.py --epochs 5 --repeats 2
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
import torch

import vaekit
from results import update_section
from throughput import BALANCED, FAST, run_vaekit

BENCH = Path(__file__).resolve().parent
SETTINGS = {
    "vaekit default (fp32, batch 128)": [],
    "vaekit bf16, batch 128": ["train.precision=bf16"],
    "vaekit balanced": BALANCED,
    "vaekit fastest": FAST,
    "vaekit fastest + compile": [*FAST, "train.compile=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*SETTINGS, "pythae"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "mnist.npz"
        np.savez(data, train=vaekit.load_dataset("mnist", "train").images.numpy(),
                 test=vaekit.load_dataset("mnist", "test").images.numpy())
        for r in range(args.repeats):
            for name, extra in SETTINGS.items():
                try:
                    runs[name].append(run_vaekit([*extra, "train.device=cuda"], args.epochs))
                except subprocess.CalledProcessError as err:  # report the failure, measure the others
                    print(f"{name} failed:\n{err.stderr[-2000:]}", flush=True)
            out = subprocess.run([sys.executable, str(BENCH / "pythae_run.py"), str(data), str(args.epochs), "cuda"],
                                 capture_output=True, text=True, check=True)
            runs["pythae"].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1}:", {k: round(v[-1]["examples_per_s"]) for k, v in runs.items()}, flush=True)
    report(runs, args)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    med = {k: statistics.median(r["examples_per_s"] for r in v) for k, v in runs.items() if v}
    lines = [f"Command: `python bench/gpu.py --epochs {args.epochs} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}) on {torch.cuda.get_device_name()}, torch {torch.__version__}, the "
             "device tool's machine (16 CPU cores). Same network, data and counting as the CPU table; every trainer "
             "on the GPU; runs interleaved, median and spread (min-max).",
             "",
             "| trainer | examples/s (median) | spread | seconds / epoch | test -ELBO (nats) | vs pythae |",
             "|---|---|---|---|---|---|"]
    for name, v in runs.items():
        if not v:
            lines.append(f"| {name} | failed | | | | |")
            continue
        eps = [r["examples_per_s"] for r in v]
        elbo = statistics.median(r["neg_elbo"] for r in v)
        lines.append(f"| {name} | {med[name]:,.0f} | {min(eps):,.0f}-{max(eps):,.0f} | {60000 / med[name]:.2f} | "
                     f"{elbo:.2f} | {med[name] / med['pythae']:.2f}x |")
    update_section("gpu-throughput", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

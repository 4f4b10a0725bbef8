"""Training throughput on one CUDA GPU, side by side: vaekit's settings against pythae on the same card.

The network, data and optimizer of bench/throughput.py (784-400-20, Bernoulli, Adam 1e-3, MNIST), every
trainer on the GPU. Runs where CUDA and pythae import with the Python running this script (on the device
machine: its image's torch, pythae carried as wheels); writes the "gpu-throughput" section of RESULTS.md.

    python bench/gpu.py --epochs 5 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from results import update_section
from throughput import BALANCED, FAST, mnist_npz, run_vaekit, table

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
        data = mnist_npz(Path(tmp))
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
    rows, _ = table(runs)
    lines = [f"Command: `python bench/gpu.py --epochs {args.epochs} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}) on {torch.cuda.get_device_name()}, torch {torch.__version__}, the "
             "device tool's machine (16 CPU cores). Same network, data and counting as the CPU table; every trainer "
             "on the GPU; runs interleaved, median and spread (min-max).",
             "",
             *rows]
    update_section("gpu-throughput", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The GPU benchmarks on one CUDA device: throughput against pythae, the model family, time to quality.

Runs where CUDA and pythae import with the Python running this script (on the device machine: its image's
torch, pythae carried as wheels). Three parts, each writing its section of RESULTS.md:

- `throughput` ("gpu-throughput"): the network, data and optimizer of bench/throughput.py (784-400-20,
  Bernoulli, Adam, MNIST), vaekit's settings against pythae on the same card; examples/s are steady-state
  (from the second throughput row on: compiling and CUDA-graph capture are left out and reported apart).
- `models` ("gpu-models"): `hvae`, `lvae`, `cifar` and `cifar-hvae` on the GPU in fp32 and bf16 for a fixed
  number of steps: examples/s, peak memory, minutes per epoch (the colour presets on made 32x32 RGB data of
  CIFAR-10's size, 50,000 images: the speed does not depend on the pixels).
- `ttq` ("gpu-time-to-quality"): training seconds until the MNIST MLP's test -ELBO first reaches 105.5 nats,
  vaekit against pythae, as bench/time_to_quality.py measures it on the CPU.

    python bench/gpu.py --parts throughput models ttq --epochs 3 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from results import update_section
from throughput import BALANCED, FAST, mnist_npz
from time_to_quality import describe, pythae_curve, vaekit_curve
from vaekit.apps.report import read_metrics

BENCH = Path(__file__).resolve().parent
GPU_FAST = ["train.precision=bf16", "train.batch_size=4096", "optim.lr=0.008", "optim.lr_warmup_steps=50",
            "train.compile=true"]  # a batch that fills the card; CUDA graphs take the per-step launches away
SETTINGS = {
    "vaekit default (fp32, batch 128)": ["train.compile=false"],
    "vaekit default, compiled (CUDA graph)": ["train.compile=true"],
    "vaekit balanced": BALANCED,
    "vaekit fastest (CPU's)": [*FAST, "train.compile=true"],
    "vaekit GPU fastest (bf16, batch 4096, compiled)": GPU_FAST,
}
MIN_STEPS = 600  # per throughput run: a batch of 4,096 is 15 steps an epoch
MODELS = ["lvae", "cifar-hvae", "hvae", "cifar"]  # the two first: a time limit cuts the last
TTQ = {
    "vaekit best on the CPU (b256 bf16 lr 3e-3 cosine compiled)": (
        ["train.batch_size=256", "optim.lr=0.003", "train.precision=bf16", "optim.lr_schedule=cosine",
         "train.compile=true"], 12),
    "vaekit lr 3e-3 cosine, eager": (["optim.lr=0.003", "optim.lr_schedule=cosine", "train.compile=false"], 8),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["throughput", "models", "ttq"],
                        choices=["throughput", "models", "ttq"])
    parser.add_argument("--epochs", type=int, default=3, help="throughput: epochs per run")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model-steps", type=int, default=300, help="models: training steps per run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        data = mnist_npz(Path(tmp))
        for part in args.parts:
            t0 = time.perf_counter()
            {"throughput": throughput, "models": models, "ttq": ttq}[part](args, data, Path(tmp))
            print(f"{part}: {time.perf_counter() - t0:.0f} s", flush=True)


def _train_rows(extra: list[str], epochs: int, preset: str = "mlp") -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaekit", "train", preset, "--run-dir", f"{tmp}/run", "--epochs", str(epochs),
               "--json", "--set", "train.device=cuda", "--set", "train.tensorboard=false",
               "--set", "train.log_every=50",
               *(arg for item in extra for arg in ("--set", item))]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        rows = read_metrics(Path(f"{tmp}/run"))
    return rows, out


def steady_rate(rows: list[dict], batch: int) -> tuple[float, float]:
    """(examples/s from the second throughput row to the last, seconds before the second row).

    A row's examples_per_s is cumulative since the run's start, so row i's training seconds are
    step_i * batch / examples_per_s_i; the rate between two rows leaves the first row's compile and capture out.
    """
    train = [r for r in rows if r["kind"] == "train"]
    clock = [(r["step"], r["step"] * batch / r["examples_per_s"]) for r in train]
    if len(clock) < 3:
        return train[-1]["examples_per_s"], 0.0
    (s0, t0), (s1, t1) = clock[1], clock[-1]
    return (s1 - s0) * batch / max(t1 - t0, 1e-9), t0


def throughput(args: argparse.Namespace, data: Path, tmp: Path) -> None:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in [*SETTINGS, "pythae"]}
    for r in range(args.repeats):
        for name, extra in SETTINGS.items():
            batch = int(next((e.split("=")[1] for e in extra if e.startswith("train.batch_size=")), 128))
            epochs = max(args.epochs, math.ceil(MIN_STEPS * batch / 60000))  # enough log rows for a steady rate
            try:
                rows, out = _train_rows(extra, epochs)
            except subprocess.CalledProcessError as err:  # report the failure, measure the others
                print(f"{name} failed:\n{err.stderr[-2000:]}", flush=True)
                continue
            rate, start = steady_rate(rows, batch)
            runs[name].append({"examples_per_s": rate, "neg_elbo": out["test"]["neg_elbo"], "start_s": start})
        out = subprocess.run([sys.executable, str(BENCH / "pythae_run.py"), str(data), str(args.epochs), "cuda"],
                             capture_output=True, text=True, check=True)
        runs["pythae"].append({**json.loads(out.stdout.strip().splitlines()[-1]), "start_s": 0.0})
        print(f"repeat {r + 1}:", {k: round(v[-1]["examples_per_s"]) for k, v in runs.items() if v}, flush=True)
    med = {k: statistics.median(x["examples_per_s"] for x in v) for k, v in runs.items() if v}
    lines = [f"Command: `python bench/gpu.py --parts throughput --epochs {args.epochs} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}) on {torch.cuda.get_device_name()}, torch {torch.__version__}. "
             "Same network, data and counting as the CPU table, every trainer on the GPU, runs interleaved; "
             "vaekit's examples/s are steady-state (from its second throughput row), the seconds before it "
             "(start-up, compiling, CUDA-graph capture) in their own column.", "",
             "| trainer | examples/s (median) | start (s) | test -ELBO (nats) | vs pythae |", "|---|---|---|---|---|"]
    for name, v in runs.items():
        if not v:
            lines.append(f"| {name} | failed | | | |")
            continue
        elbo = statistics.median(x["neg_elbo"] for x in v)
        start = statistics.median(x["start_s"] for x in v)
        ratio = f"{med[name] / med['pythae']:.2f}x" if "pythae" in med else "n/a"
        lines.append(f"| {name} | {med[name]:,.0f} | {start:.1f} | {elbo:.2f} | {ratio} |")
    update_section("gpu-throughput", "\n".join(lines))
    print("\n".join(lines), flush=True)


def models(args: argparse.Namespace, data: Path, tmp: Path) -> None:
    import vaekit

    rgb = tmp / "rgb.npy"  # CIFAR-10's shape and size; a user file: 5% is held out as the validation split
    np.save(rgb, np.random.default_rng(0).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8))
    lines = [f"Command: `python bench/gpu.py --parts models --model-steps {args.model_steps}` "
             f"({time.strftime('%Y-%m-%d')}) on {torch.cuda.get_device_name()}, torch {torch.__version__}: each "
             "preset as shipped apart from the device and precision, steady-state examples/s (from the second "
             "throughput row), peak GPU memory, minutes per epoch of the preset's own data set (colour presets: "
             "made 32x32 RGB data of CIFAR-10's size).", "",
             "| preset | precision | batch | examples/s | peak memory (GiB) | minutes / epoch |",
             "|---|---|---|---|---|---|"]
    for preset in MODELS:
        for precision in ("fp32", "bf16"):
            extra = [f"train.precision={precision}", f"train.steps={args.model_steps}", "train.device=cuda",
                     "train.tensorboard=false", "train.log_every=50"]
            if preset.startswith("cifar"):
                extra.append(f"data.name={rgb}")
            cfg = vaekit.load_config(preset, extra)
            torch.cuda.reset_peak_memory_stats()
            try:
                with tempfile.TemporaryDirectory() as run:
                    vaekit.train(cfg, f"{run}/r", quiet=True)
                    rows = read_metrics(Path(f"{run}/r"))
            except Exception as err:  # report and go on: the other presets still measure
                failed = f"failed: {type(err).__name__}"
                lines.append(f"| `{preset}` | {precision} | {cfg.train.batch_size} | {failed} | | |")
                continue
            rate, _ = steady_rate(rows, cfg.train.batch_size)
            peak = torch.cuda.max_memory_allocated() / 2**30
            size = 47500 if preset.startswith("cifar") else 60000
            lines.append(f"| `{preset}` | {precision} | {cfg.train.batch_size} | {rate:,.0f} | {peak:.2f} | "
                         f"{size / rate / 60:.2f} |")
            print(lines[-1], flush=True)
            update_section("gpu-models", "\n".join(lines))  # row by row: a time limit keeps what was measured


def ttq(args: argparse.Namespace, data: Path, tmp: Path) -> None:
    lines = [f"Command: `python bench/gpu.py --parts ttq` ({time.strftime('%Y-%m-%d')}) on "
             f"{torch.cuda.get_device_name()}: training seconds (evaluation excluded) until the test -ELBO first "
             "reaches 105.5 nats, one run each (bench/time_to_quality.py's counting, on the GPU).", "",
             "| trainer | seconds to 105.5 | epoch reached | best -ELBO |", "|---|---|---|---|"]
    results = {}
    for name, (extra, epochs) in TTQ.items():
        results[name] = describe(vaekit_curve([*extra, "train.device=cuda"], epochs))
    pythae = pythae_curve(Path(sys.executable), data, 12, 1e-3, 128, "cuda")
    results["pythae (lr 1e-3, batch 128)"] = describe(pythae)
    for name, d in results.items():
        lines.append(f"| {name} | {d['seconds']:.1f} | {d['epoch']} | {d['best']:.2f} |")
    update_section("gpu-time-to-quality", "\n".join(lines))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

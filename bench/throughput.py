"""Training throughput side by side: vaekit (default and fastest setting) against pythae.

The same network (784-400-20, Bernoulli, Adam 1e-3, batch 128), the same MNIST files, the same
number of epochs. pythae runs from its own venv (bench/.venv-pythae, made here with the torch
pin first). Runs are interleaved (vaekit default, eager and compiled; balanced; fastest, eager and compiled; pythae) and
repeated; the table
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
from vaekit.apps.report import read_metrics

BENCH = Path(__file__).resolve().parent
PYTHAE_VENV = BENCH / ".venv-pythae"
FAST = ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.004"]  # see bench/RESULTS.md, "Throughput"
# the fastest setting whose 10-epoch -ELBO stays near the default's (bench/batch_sweep.py)
BALANCED = ["train.precision=bf16", "train.batch_size=256", "optim.lr=0.002"]
SETTINGS = {  # the table's vaekit rows (bench/ab_throughput.py runs the same ones)
    "default, eager": ["train.compile=false"],
    "default, compiled": ["train.compile=true"],
    "balanced": [*BALANCED, "train.compile=false"],
    "fastest": [*FAST, "train.compile=false"],
    "fastest, compiled": [*FAST, "train.compile=true"],
}
FLOP_PER_EXAMPLE = 3.28e6  # 784-400-(20,20) / 20-400-784: forward 1.30 MFLOP, backward 1.98 (no input gradient)


def matmul_gflops() -> dict[str, float]:
    """Measured matrix-multiply speed here, bf16 and fp32: a square 2048 product, and this network's big layers.

    The network's five large products per step (two forward, two weight gradients, one input gradient) are 512x784
    by 784x400 in some transposition; their mean speed caps what any trainer of this network can reach. Keys:
    `square` and `network` (bf16, as before), `fp32_square` and `fp32_network`.
    """
    import torch

    def speed(f: object, flop: float, reps: int) -> float:
        for _ in range(3):
            f()  # type: ignore[operator]
        t = time.perf_counter()
        for _ in range(reps):
            f()  # type: ignore[operator]
        return flop * reps / (time.perf_counter() - t) / 1e9

    out = {}
    for prefix, dtype in (("", torch.bfloat16), ("fp32_", torch.float32)):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        x, w = torch.randn(512, 784, dtype=dtype), torch.randn(400, 784, dtype=dtype)
        g = torch.randn(512, 400, dtype=dtype)
        shapes = [lambda: x @ w.t(), lambda: g.t() @ x, lambda: g @ w]  # noqa: B023 (used inside this iteration)
        out[prefix + "square"] = speed(lambda: a @ b, 2 * 2048**3, 10)  # noqa: B023
        out[prefix + "network"] = statistics.mean(speed(f, 2 * 512 * 784 * 400, 100) for f in shapes)
    return out


def ceilings_line(gflops: dict[str, float]) -> str:
    """The sentence every speed table ends with: this machine's matmul speeds, measured in the same run."""
    return (f"Matrix multiplies measured in the same run: fp32 {gflops['fp32_square']:.0f} GFLOP/s on a square 2048 "
            f"product, {gflops['fp32_network']:.0f} on the 784-400 MLP's shapes at batch 512; bf16 "
            f"{gflops['square']:.0f} and {gflops['network']:.0f}.")


def ensure_pythae() -> Path:
    python = PYTHAE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYTHAE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)  # pin first
        subprocess.run([str(python), "-m", "pip", "install", "-q", "pythae==0.1.2"], check=True)
    return python


def mnist_npz(folder: Path) -> Path:
    """MNIST's uint8 train and test images in one .npz for pythae_run.py, which cannot import vaekit."""
    path = folder / "mnist.npz"
    np.savez(path, train=vaekit.load_dataset("mnist", "train").images.numpy(),
             test=vaekit.load_dataset("mnist", "test").images.numpy())
    return path


def table(runs: dict[str, list[dict[str, float]]]) -> tuple[list[str], dict[str, float]]:
    """The markdown table of median examples/s, spread, seconds per epoch, -ELBO and ratio to pythae; and the medians.

    A trainer with no finished run is listed as failed.
    """
    med = {k: statistics.median(r["examples_per_s"] for r in v) for k, v in runs.items() if v}
    lines = ["| trainer | examples/s (median) | spread | seconds / epoch | test -ELBO (nats) | vs pythae |",
             "|---|---|---|---|---|---|"]
    for name, v in runs.items():
        if not v:
            lines.append(f"| {name} | failed | | | | |")
            continue
        eps = [r["examples_per_s"] for r in v]
        elbo = statistics.median(r["neg_elbo"] for r in v)
        lines.append(f"| {name} | {med[name]:,.0f} | {min(eps):,.0f}-{max(eps):,.0f} | {60000 / med[name]:.2f} | "
                     f"{elbo:.2f} | {med[name] / med['pythae']:.2f}x |")
    return lines, med


def run_vaekit(extra: list[str], epochs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaekit", "train", "mlp", "--run-dir", f"{tmp}/run", "--epochs", str(epochs),
               "--json", *(arg for item in extra for arg in ("--set", item))]
        out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
        rows = read_metrics(Path(f"{tmp}/run"))
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
        data = mnist_npz(Path(tmp))
        settings = {f"vaekit {name}": sets for name, sets in SETTINGS.items()}
        for extra in settings.values():  # the compile cache holds each graph, as on a second run (see RESULTS.md)
            if "train.compile=true" in extra:
                run_vaekit(extra, 1)
        runs: dict[str, list[dict[str, float]]] = {**{k: [] for k in settings}, "pythae": []}
        for r in range(args.repeats):
            for name, extra in settings.items():
                runs[name].append(run_vaekit(extra, args.epochs))
            runs["pythae"].append(run_pythae(python, data, args.epochs))
            print(f"repeat {r + 1}:", {k: round(v[-1]["examples_per_s"]) for k, v in runs.items()}, flush=True)
    report(runs, args, matmul_gflops())


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace, gflops: dict[str, float]) -> None:
    rows, med = table(runs)
    lines = [f"Command: `.venv/bin/python bench/throughput.py --epochs {args.epochs} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}). 784-400-20, Bernoulli, Adam 1e-3, batch 128, {args.epochs} epochs of "
             "the 60,000 MNIST training images; examples/s counts training steps only (vaekit: from its logged "
             "rows, evaluation excluded, compilation included; pythae: `trainer.train()` with no eval set). "
             f"vaekit balanced = `{' '.join('--set ' + f for f in BALANCED)}`; "
             f"fastest = `{' '.join('--set ' + f for f in FAST)}`; compiled rows add `--set train.compile=true` "
             "(the compile cache filled by a 1-epoch run of the same graph first: a second run on this machine), the "
             "others `--set train.compile=false`.",
             "",
             *rows]
    best = max((k for k in med if k != "pythae"), key=med.__getitem__)
    ceiling = gflops["network"] * 1e9 / FLOP_PER_EXAMPLE
    fp32_ceiling = gflops["fp32_network"] * 1e9 / FLOP_PER_EXAMPLE
    lines += ["", f"bf16 matrix multiplies measured in the same run: {gflops['square']:.0f} GFLOP/s on a square 2048 "
              f"product, {gflops['network']:.0f} GFLOP/s on this network's own shapes at batch 512, a ceiling of "
              f"{ceiling:,.0f} examples/s for 3.28 MFLOP per example with nothing but matrix multiplies; the fastest "
              f"({best}) reaches {med[best] / ceiling:.1%} of it.",
              f"fp32 matrix multiplies in the same run: {gflops['fp32_square']:.0f} GFLOP/s square, "
              f"{gflops['fp32_network']:.0f} on the network's shapes, a ceiling of {fp32_ceiling:,.0f} examples/s; "
              f"the default (fp32, eager) reaches {med['vaekit default, eager'] / fp32_ceiling:.1%} of it, compiled "
              f"{med['vaekit default, compiled'] / fp32_ceiling:.1%}."]
    update_section("throughput", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

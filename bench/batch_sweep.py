"""Ten-epoch test -ELBO and throughput of the `mlp` network across batch sizes, learning rates and precision.

The throughput issue asks for speed at an equal 10-epoch -ELBO. Larger batches run faster per example
but take fewer steps in 10 epochs; this table shows where the ELBO goes as the batch grows, and
whether a higher learning rate or a cosine schedule wins it back. One run per setting, in one
process, one after another (run it alone).

    .venv/bin/python bench/batch_sweep.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import vaekit
from results import update_section
from vaekit.apps.report import read_metrics

SETTINGS = [
    [],
    ["optim.lr_schedule=cosine"],
    ["train.precision=bf16"],
    ["train.precision=bf16", "train.batch_size=256", "optim.lr=0.002"],
    ["train.precision=bf16", "train.batch_size=256", "optim.lr=0.003"],
    ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.002"],
    ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.004"],
    ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.004", "optim.lr_schedule=cosine",
     "optim.lr_warmup_steps=100"],
    ["train.precision=bf16", "train.batch_size=1024", "optim.lr=0.004"],
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:  # warm-up: a process's first run is ~2x slower (allocator, threads)
        warm_up = vaekit.load_config("mlp", ["train.steps=300", "train.tensorboard=false"])
        vaekit.train(warm_up, f"{tmp}/run", quiet=True)
    rows = []
    for extra in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = vaekit.load_config("mlp", [*extra, "train.tensorboard=false"])
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
            logged = read_metrics(Path(f"{tmp}/run"))
        speed = [r for r in logged if r["kind"] == "train"][-1]["examples_per_s"]
        assert result.test is not None
        label = " ".join(f"`{e}`" for e in extra) or "default (fp32, batch 128, lr 1e-3, constant)"
        rows.append(f"| {label} | {result.steps} | {speed:,.0f} | {result.test.neg_elbo:.2f} |")
        print(rows[-1], flush=True)
    lines = [
        f"Command: `.venv/bin/python bench/batch_sweep.py` ({time.strftime('%Y-%m-%d')}). `mlp` preset "
        "(784-400-20, Bernoulli, MNIST grey levels), 10 epochs, seed 0, one run each; examples/s from the "
        "logged training rows (evaluation excluded).", "",
        "| setting (on top of `mlp`) | steps | examples/s | test -ELBO (nats) |", "|---|---|---|---|", *rows]
    update_section("batch-sweep", "\n".join(lines))


if __name__ == "__main__":
    main()

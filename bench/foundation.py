"""Foundation numbers: the `seed` demo (test -ELBO, wall time of `make demo`) and the `mlp` preset.

Run alone on an idle machine (two heavy processes on 2 cores slow each other many times over):

    .venv/bin/python bench/foundation.py

Writes the table between the `foundation` markers of bench/RESULTS.md and prints it.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from results import update_section
from vaekit.apps.report import read_metrics

REPO = Path(__file__).resolve().parents[1]


def time_make_demo() -> tuple[float, float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(["make", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    match = re.search(r"test -ELBO: ([\d.]+) nats \(([\d.]+) bits/dim\)", out.stdout)
    assert match, out.stdout
    return seconds, float(match.group(1)), match.group(0)


def run_mlp() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "vaekit", "train", "mlp", "--run-dir", f"{tmp}/run", "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        payload = json.loads(out.stdout)
        rows = read_metrics(Path(f"{tmp}/run"))
    train_rows = [r for r in rows if r["kind"] == "train"]
    return {
        "neg_elbo": payload["test"]["neg_elbo"],
        "bits_per_dim": payload["test"]["bits_per_dim"],
        "seconds": payload["seconds"],
        "examples_per_s_train": train_rows[-1]["examples_per_s"],
        "active_units": payload["test"]["active_units"],
    }


def main() -> None:
    demo_s, seed_elbo, seed_line = time_make_demo()
    mlp = run_mlp()
    table = "\n".join(
        [
            "<!-- foundation:start -->",
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            "with `.venv/bin/python bench/foundation.py`.",
            "",
            "| what | number | target |",
            "|---|---|---|",
            f"| `seed` preset, 10 epochs: test -ELBO (KL included) | {seed_elbo:.2f} nats | roughly 140-150 |",
            f"| wall time of `make demo` (venv already installed) | {demo_s:.1f} s | |",
            f"| `mlp` preset, 10 epochs, batch 128: test -ELBO | {mlp['neg_elbo']:.2f} nats "
            f"({mlp['bits_per_dim']:.4f} bits/dim) | <= 105.5 |",
            f"| `mlp` training throughput (train steps, last log row) | {mlp['examples_per_s_train']:,.0f} ex/s | |",
            f"| `mlp` whole `vaekit train` (steps, 10 test evaluations, export, report) | {mlp['seconds']:.1f} s | |",
            f"| `mlp` active units | {int(mlp['active_units'])}/20 | |",
            "",
            f"`make demo` printed: `{seed_line}`",
            "<!-- foundation:end -->",
        ]
    )
    update_section("foundation", "\n".join(table.splitlines()[1:-1]))
    print(table)


if __name__ == "__main__":
    main()

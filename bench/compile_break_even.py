"""The compiled whole step's break-even: compile cost (cold and cached) against the time it saves per step.

For each setting, fresh processes run `train_step` on real MNIST batches: eager; compiled with an empty
inductor cache (cold: every kernel built); compiled again on that now-filled cache (warm: what a second run
of the same network on this machine pays). Each reports the time of its first step (compilation included)
and the steady ms per step over the next steps. Break-even = the steps after which the compiled run has
caught up: (first compiled step - one eager step) / (eager ms - compiled ms).

    .venv/bin/python bench/compile_break_even.py                  # mlp default, mlp fastest, burda; ~10 min
    .venv/bin/python bench/compile_break_even.py --steps 300 --settings mlp

Run it alone: two heavy processes on 2 cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

from results import update_section
from throughput import ceilings_line, matmul_gflops

SETTINGS: dict[str, tuple[str, list[str]]] = {
    "mlp default (fp32, batch 128)": ("mlp", []),
    "mlp fastest (bf16, batch 512)": ("mlp", ["train.precision=bf16", "train.batch_size=512", "optim.lr=0.004"]),
    "burda, ELU (fp32, batch 100)": ("burda", ["model.activation=elu", "train.batch_size=100", "optim.lr=0.002"]),
    "hvae (fp32, batch 100)": ("hvae", []),
}


def child(preset: str, overrides: list[str], compiled: bool, steps: int) -> dict[str, float]:
    """In a fresh process: first-step seconds and steady ms per step of `train_step`."""
    import torch

    import vaekit
    from vaekit.training.step import build_state, train_step

    cfg = vaekit.load_config(preset, [*overrides, f"train.compile={str(compiled).lower()}"])
    data = vaekit.load_dataset(cfg.data.name, "train")
    cfg = replace(cfg, model=replace(cfg.model, input_shape=list(data.shape)))
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=10**6)
    gen = torch.Generator().manual_seed(0)
    batches = [data.batch(torch.randint(len(data), (cfg.train.batch_size,), generator=gen)) for _ in range(20)]
    t = time.perf_counter()
    train_step(state, batches[0], cfg, 10**6)
    state.grad_norm.item()
    first = time.perf_counter() - t
    for i in range(10):  # warm-up
        train_step(state, batches[i % 20], cfg, 10**6)
    state.grad_norm.item()
    t = time.perf_counter()
    for i in range(steps):
        train_step(state, batches[i % 20], cfg, 10**6)
    state.grad_norm.item()
    ms = (time.perf_counter() - t) / steps * 1000
    return {"first_s": first, "ms": ms, "compiled": state.compiled is not None}


def run_child(name: str, mode: str, cache: str, steps: int) -> dict[str, float]:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    cmd = [sys.executable, __file__, "--child", name, mode, "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def break_even(first_s: float, eager_ms: float, compiled_ms: float) -> str:
    """Steps after which a compiled run whose first step took `first_s` has caught up with eager."""
    saved = (eager_ms - compiled_ms) / 1000
    return f"{(first_s - eager_ms / 1000) / saved:,.0f}" if saved > 0 else "never"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--settings", nargs="*", help="substrings of the setting names to run (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("SETTING", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, overrides = SETTINGS[args.child[0]]
        print(json.dumps(child(preset, overrides, args.child[1] != "eager", args.steps)))
        return
    names = [n for n in SETTINGS if not args.settings or any(s in n for s in args.settings)]
    lines = ["| setting | eager ms/step | compiled ms/step | speed-up | first step, cold cache (s) | "
             "first step, warm cache (s) | break-even steps, cold | break-even steps, warm |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        runs: dict[str, list[dict[str, float]]] = {"eager": [], "cold": [], "warm": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as cache:
                runs["eager"].append(run_child(name, "eager", cache, args.steps))
                runs["cold"].append(run_child(name, "cold", cache, args.steps))
                runs["warm"].append(run_child(name, "warm", cache, args.steps))
            print(name, {k: v[-1] for k, v in runs.items()}, flush=True)
        med = {k: {f: statistics.median(r[f] for r in v) for f in ("first_s", "ms")} for k, v in runs.items()}
        eager, comp = med["eager"]["ms"], statistics.median([r["ms"] for r in runs["cold"] + runs["warm"]])
        cold, warm = (break_even(med[k]["first_s"], eager, comp) for k in ("cold", "warm"))
        lines.append(f"| {name} | {eager:.2f} | {comp:.2f} | {eager / comp:.2f}x | {med['cold']['first_s']:.1f} | "
                     f"{med['warm']['first_s']:.1f} | {cold} | {warm} |")
    body = [f"Command: `.venv/bin/python bench/compile_break_even.py --steps {args.steps} --repeats {args.repeats}` "
            f"({time.strftime('%Y-%m-%d')}). Fresh processes per cell, medians of {args.repeats}; `train_step` on "
            "real training batches; cold = an empty inductor cache, warm = the cache the cold process filled.", "",
            *lines, "", ceilings_line(matmul_gflops())]
    update_section("compile-break-even", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

"""Examples/s of every model kind on the CPU: vaekit's step against a plain eager PyTorch loop over the same nets.

For each preset, one process builds the model, then measures in interleaved rounds (so the process's own
speed affects every variant alike; bench/RESULTS.md, "Timing noise"):
- plain: the textbook loop over the same `VAE` module: forward, ELBO, backward, `torch.optim.Adam` (foreach);
- vaekit: `train_step` (guards, fused Adam, schedules), fp32; bf16 autocast; and, for convolutional models,
  channels_last memory format, with and without bf16.
Then a `torch.profiler` table of where vaekit's fp32 step goes (matrix products and convolutions, their
backward, element-wise kernels, the optimizer, the rest). Synthetic batches of the preset's shape: speed does
not depend on the pixel values.

    .venv/bin/python bench/model_speed.py                        # every kind, ~15 min
    .venv/bin/python bench/model_speed.py --models mlp lvae --rounds 2

Run it alone: two heavy processes on 2 cores slow each other many times over.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from results import update_section
from throughput import ceilings_line, matmul_gflops

SHAPES = {"mnist": [1, 28, 28], "binarized-mnist": [1, 28, 28], "cifar10": [3, 32, 32], "cifar10-jpeg": [3, 32, 32]}
MODELS = ["mlp", "conv", "hvae", "vamp", "iaf", "lvae", "cifar", "cifar-hvae"]
CONV = {"conv", "lvae", "cifar", "cifar-hvae"}


def measure(preset: str, rounds: int, seconds: float) -> dict[str, object]:
    import torch

    import vaekit
    from vaekit.config import override
    from vaekit.models.bounds import elbo_terms
    from vaekit.training.step import build_state, train_step

    base = vaekit.load_config(preset, ["train.compile=false", "train.channels_last=false"])  # NCHW unless asked
    base = replace(base, model=replace(base.model, input_shape=SHAPES[base.data.name]))
    batch = base.train.batch_size
    gen = torch.Generator().manual_seed(0)
    if base.model.likelihood == "bernoulli" and base.data.name.startswith("binarized"):
        x = torch.bernoulli(torch.rand(batch, *base.model.input_shape, generator=gen))
    else:
        x = torch.randint(0, 256, (batch, *base.model.input_shape), generator=gen).float() / 255

    def vaekit_variant(overrides: list[str]) -> Callable[[], None]:
        cfg = override(base, overrides) if overrides else base
        torch.manual_seed(0)
        state = build_state(cfg, total_steps=10**6)

        def step() -> None:
            train_step(state, x, cfg, 10**6)

        return step

    def plain_variant() -> Callable[[], None]:
        torch.manual_seed(0)
        model = vaekit.VAE(base.model)
        opt = torch.optim.Adam(model.parameters(), lr=base.optim.lr)

        def step() -> None:
            loss = elbo_terms(model(x), x).neg_elbo.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step

    variants: dict[str, Callable[[], None]] = {
        "plain eager PyTorch": plain_variant(),
        "vaekit fp32": vaekit_variant([]),
        "vaekit bf16": vaekit_variant(["train.precision=bf16"]),
    }
    if preset in CONV:
        variants["vaekit fp32 channels_last"] = vaekit_variant(["train.channels_last=true"])
        variants["vaekit bf16 channels_last"] = vaekit_variant(["train.precision=bf16", "train.channels_last=true"])
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # products and convolutions of one step, forward and backward
        variants["plain eager PyTorch"]()
    for step in variants.values():  # warm-up: first-call allocations, oneDNN primitive caches
        for _ in range(3):
            step()
    speeds: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, step in variants.items():
            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < seconds:
                step()
                n += 1
            speeds[name].append(n * batch / (time.perf_counter() - t))
    return {"batch": batch, "flops": counter.get_total_flops(),
            "speeds": {k: statistics.median(v) for k, v in speeds.items()},
            "profile": profile(variants["vaekit fp32"])}


def profile(step: Callable[[], None], steps: int = 10) -> dict[str, float]:
    """Share of the step's wall time per kind of work, from torch.profiler's self CPU times."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t) * 1e6
    buckets = {"matmul / conv": 0.0, "matmul / conv backward": 0.0, "element-wise and reductions": 0.0,
               "optimizer and clipping": 0.0}
    for e in prof.key_averages():
        name, us = e.key, e.self_cpu_time_total
        if any(k in name for k in ("adam", "foreach", "_fused", "clip")):
            buckets["optimizer and clipping"] += us
        elif any(k in name for k in ("mm", "conv", "linear", "bmm", "matmul")):
            key = "matmul / conv backward" if "backward" in name.lower() else "matmul / conv"
            buckets[key] += us
        elif name.startswith("aten::"):
            buckets["element-wise and reductions"] += us
    shares = {k: v / wall for k, v in buckets.items()}
    shares["Python, dispatch and the rest"] = max(0.0, 1 - sum(shares.values()))
    shares["ms per step"] = wall / steps / 1000
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per variant per round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rounds, args.seconds)))
        return
    results = {}
    for preset in args.models:  # a fresh process per model
        cmd = [sys.executable, __file__, "--child", preset, "--rounds", str(args.rounds), "--seconds",
               str(args.seconds)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"{preset}: failed: {out.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        results[preset] = json.loads(out.stdout.strip().splitlines()[-1])
        print(preset, results[preset]["speeds"], flush=True)
    gflops = matmul_gflops()
    speed_lines = ["| preset | batch | plain eager | vaekit fp32 | vaekit bf16 | fp32 channels_last | "
                   "bf16 channels_last | best vaekit / plain | fp32 / fp32 ceiling | best bf16 / bf16 ceiling |",
                   "|---|---|---|---|---|---|---|---|---|---|"]
    prof_lines = ["| preset | ms per step (fp32, profiled) | matmul / conv | their backward | element-wise | "
                  "optimizer and clipping | Python and the rest |", "|---|---|---|---|---|---|---|"]
    for preset, r in results.items():
        s = r["speeds"]
        cells = [s.get(k) for k in ("plain eager PyTorch", "vaekit fp32", "vaekit bf16", "vaekit fp32 channels_last",
                                    "vaekit bf16 channels_last")]
        best = max(v for k, v in s.items() if k.startswith("vaekit"))
        flop_rate = r["flops"] / r["batch"]  # FLOPs per example
        bf16 = max(v for k, v in s.items() if "bf16" in k)
        speed_lines.append(f"| `{preset}` | {r['batch']} | " + " | ".join(f"{c:,.0f}" if c else "" for c in cells)
                           + f" | {best / s['plain eager PyTorch']:.2f}x | "
                           f"{s['vaekit fp32'] * flop_rate / (gflops['fp32_square'] * 1e9):.1%} | "
                           f"{bf16 * flop_rate / (gflops['square'] * 1e9):.1%} |")
        p = r["profile"]
        prof_lines.append(f"| `{preset}` | {p['ms per step']:.1f} | {p['matmul / conv']:.0%} | "
                          f"{p['matmul / conv backward']:.0%} | {p['element-wise and reductions']:.0%} | "
                          f"{p['optimizer and clipping']:.0%} | {p['Python, dispatch and the rest']:.0%} |")
    body = [f"Command: `.venv/bin/python bench/model_speed.py --rounds {args.rounds} --seconds {args.seconds:g}` "
            f"({time.strftime('%Y-%m-%d')}). Examples/s, medians of {args.rounds} interleaved rounds in one process "
            "per preset, synthetic batches of the preset's shape and batch size; plain = forward, ELBO, backward, "
            "torch.optim.Adam over the same `VAE` module.", "", *speed_lines, "",
            "Where vaekit's fp32 step goes (`torch.profiler`, self CPU time over 10 steps, as shares of the wall "
            "time; backward kernels of products and convolutions are counted where the profiler names them):", "",
            *prof_lines, "", ceilings_line(gflops) + " Fractions of the ceiling: the step's matrix-product and "
            "convolution FLOPs (forward and backward, `torch.utils.flop_counter`) times steps per second, over the "
            "square-product speed of the same precision."]
    update_section("model-speed", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

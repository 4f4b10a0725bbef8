"""Where the throughput spread comes from: per-process speed of the `mlp` default (see RESULTS.md).

    .venv/bin/python bench/timing_noise.py runs     # 3 x 2-epoch `vaekit.training.loop` in one process
    .venv/bin/python bench/timing_noise.py steady   # 3,000 steps on one batch, speed per 250 steps
    .venv/bin/python bench/timing_noise.py builds   # 6 fresh training states, 500 steps each
    .venv/bin/python bench/timing_noise.py first    # 800 steps of the process's first training state
    .venv/bin/python bench/timing_noise.py second   # the same after a throwaway state ran 20 steps
    .venv/bin/python bench/timing_noise.py dummy    # the same after freeing one 8 MiB block
    .venv/bin/python bench/timing_noise.py mallopt  # the same with glibc's mmap threshold fixed at 32 MiB

Run each in several fresh processes (a loop in the shell) with nothing else running; prints only,
writes nothing to RESULTS.md (its numbers were copied there by hand).
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

import vaekit
from vaekit.apps.report import read_metrics
from vaekit.training.step import TrainState, build_state, train_step


def runs() -> None:
    for i in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = vaekit.load_config("mlp", ["train.epochs=2", "train.tensorboard=false"])
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            vaekit.train(cfg, f"{tmp}/r", quiet=True)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            rows = [r for r in read_metrics(Path(f"{tmp}/r")) if r["kind"] == "train"]
            print(f"run {i}: {rows[-1]['examples_per_s']:.0f} examples/s, {faults} minor page faults", flush=True)


def _speed(state: TrainState, x: torch.Tensor, cfg: vaekit.Config, steps: int) -> float:
    state.grad_norm.item()
    t = time.perf_counter()
    for _ in range(steps):
        train_step(state, x, cfg, 4690)
    state.grad_norm.item()  # wait for the last step
    return steps * x.shape[0] / (time.perf_counter() - t)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "runs"
    if mode == "runs":
        return runs()
    cfg = vaekit.load_config("mlp", [])
    cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 28, 28]))
    x = torch.rand(cfg.train.batch_size, 1, 28, 28)
    if mode == "steady":
        state = build_state(cfg)
        print(" ".join(f"{_speed(state, x, cfg, 250) / 1000:.1f}k" for _ in range(12)))
    elif mode == "builds":
        kept = []  # alive, so each new state is placed elsewhere in memory
        for _ in range(6):
            state = build_state(cfg)
            kept.append(state)
            _speed(state, x, cfg, 50)
            offsets = [p.data_ptr() % 4096 for p in state.model.parameters() if p.numel() > 10000]
            print(f"{_speed(state, x, cfg, 500) / 1000:.1f}k examples/s; large weights at page offsets {offsets}")
    elif mode in ("first", "second", "dummy", "mallopt"):
        if mode == "second":
            throwaway = build_state(cfg)
            _speed(throwaway, x, cfg, 20)
            del throwaway
        if mode == "mallopt":  # as MALLOC_MMAP_THRESHOLD_=33554432, set after start-up
            import ctypes

            ctypes.CDLL("libc.so.6").mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        if mode == "dummy":  # free one large block first: glibc's dynamic mmap threshold rises past it
            big = torch.empty(8 << 20, dtype=torch.uint8)
            del big
        state = build_state(cfg)
        _speed(state, x, cfg, 50)
        offsets = [p.data_ptr() % 4096 for p in state.model.parameters() if p.numel() > 10000]
        print(f"{mode}: {_speed(state, x, cfg, 800) / 1000:.1f}k examples/s; large weights at page offsets {offsets}")
    else:
        raise SystemExit(f"unknown mode {mode!r}: runs, steady, builds, first, second, dummy or mallopt")


if __name__ == "__main__":
    main()

"""What each of vaekit's speed choices gives: the training step with one choice undone at a time.

The throughput issue asks to write down what each change gave. This times `train_step` on the `mlp`
network (784-400-20, Bernoulli) in one process, the variants interleaved over several rounds (a
process's speed drifts; see RESULTS.md, "Timing noise"), and reports each variant's median step time
relative to vaekit as it ships. Data loading is timed on its own: vaekit's uint8 gather + convert
against a float32 copy and against a DataLoader over a TensorDataset (the pythae / pytorch-examples
pattern). Run it alone:

    .venv/bin/python bench/ablation.py            # ~3 min
    .venv/bin/python bench/ablation.py --rounds 1 --steps 50
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor

import vaekit
import vaekit.models.likelihoods
from results import update_section
from vaekit.training.step import TrainState, build_state, train_step


def _naive_bernoulli(logits: Tensor, x: Tensor) -> Tensor:  # sigmoid then BCE, as the seed article does
    return -F.binary_cross_entropy(torch.sigmoid(logits.float()), x, reduction="none")


@dataclass(frozen=True)
class Variant:
    make: Callable[[], tuple[TrainState, vaekit.Config]]  # a fresh training state and the config to step it with
    per_step: Callable[[Tensor], object] | None = None  # extra work after each step, given its -ELBO (B,)
    naive_bce: bool = False  # the Bernoulli likelihood as sigmoid + BCE instead of BCE with logits


def _variants(precision: str, batch: int) -> dict[str, Variant]:
    lr = {128: 1e-3, 512: 4e-3}[batch]
    cfg = vaekit.load_config("mlp", [f"train.precision={precision}", f"train.batch_size={batch}", f"optim.lr={lr}"])
    cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 28, 28]))

    def shipped() -> tuple[TrainState, vaekit.Config]:
        return build_state(cfg), cfg

    def with_adam(**kw: bool) -> Callable[[], tuple[TrainState, vaekit.Config]]:
        def make() -> tuple[TrainState, vaekit.Config]:
            state = build_state(cfg)
            # a non-fused Adam also takes the guards' fallback: one .item() per step to decide the skip
            state.optimizer = torch.optim.Adam(state.model.parameters(), lr=lr, **kw)
            return state, cfg

        return make

    return {
        "vaekit as shipped": Variant(shipped),
        "+ a host sync per step (`loss.item()`)": Variant(shipped, per_step=lambda neg_elbo: neg_elbo.sum().item()),
        "foreach Adam instead of fused (+ guard sync)": Variant(with_adam(foreach=True)),
        "for-loop Adam instead of fused (+ guard sync)": Variant(with_adam(foreach=False)),
        "sigmoid + BCE instead of BCE with logits": Variant(shipped, naive_bce=True),
        "no gradient clipping": Variant(lambda: (build_state(cfg), _no_clip(cfg))),
    }


def _no_clip(cfg: vaekit.Config) -> vaekit.Config:
    return replace(cfg, guard=replace(cfg.guard, clip_grad_norm=None))


def _time_steps(variant: Variant, x: Tensor, steps: int) -> float:
    state, cfg = variant.make()
    swap = mock.patch.object(vaekit.models.likelihoods, "bernoulli_log_prob", _naive_bernoulli)
    with swap if variant.naive_bce else contextlib.nullcontext():
        for _ in range(10):
            train_step(state, x, cfg, 10_000)
        state.grad_norm.item()
        t = time.perf_counter()
        for _ in range(steps):
            _, neg_elbo = train_step(state, x, cfg, 10_000)
            if variant.per_step is not None:
                variant.per_step(neg_elbo)
        state.grad_norm.item()
        return (time.perf_counter() - t) / steps


def step_table(precision: str, batch: int, rounds: int, steps: int) -> list[str]:
    x = (torch.rand(batch, 1, 28, 28) < 0.3).float()
    variants = _variants(precision, batch)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, variant in variants.items():
            times[name].append(_time_steps(variant, x, steps))
    base = statistics.median(times["vaekit as shipped"])
    rows = [f"| {precision}, batch {batch}: {name} | {statistics.median(t) * 1e3:.2f} | "
            f"{min(t) * 1e3:.2f}-{max(t) * 1e3:.2f} | {statistics.median(t) / base:.2f}x |"
            for name, t in times.items()]
    print("\n".join(rows), flush=True)
    return rows


def data_table(rounds: int) -> list[str]:
    train = vaekit.load_dataset("mnist", "train")
    as_float = train.images.float().div(255)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(as_float), batch_size=128, shuffle=True)
    order = torch.randperm(len(train))
    n_batches = len(train) // 128

    def uint8_gather() -> None:
        for b in range(n_batches):
            train.batch(order[b * 128 : (b + 1) * 128])

    def float_gather() -> None:
        for b in range(n_batches):
            as_float[order[b * 128 : (b + 1) * 128]]

    def data_loader() -> None:
        for _ in loader:
            pass

    results: dict[str, list[float]] = {"uint8 in memory, gathered and converted per batch (vaekit)": [],
                                       "float32 in memory, gathered per batch (4x the memory)": [],
                                       "DataLoader over a float32 TensorDataset (per-item fetch + collate)": []}
    for _ in range(rounds):
        for (_name, times), f in zip(results.items(), (uint8_gather, float_gather, data_loader), strict=True):
            t = time.perf_counter()
            f()
            times.append((time.perf_counter() - t) / n_batches)
    rows = [f"| {name} | {statistics.median(t) * 1e3:.3f} |" for name, t in results.items()]
    print("\n".join(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    rows = [*step_table("fp32", 128, args.rounds, args.steps), *step_table("bf16", 512, args.rounds, args.steps)]
    data_rows = data_table(args.rounds)
    lines = [f"Command: `.venv/bin/python bench/ablation.py --rounds {args.rounds} --steps {args.steps}` "
             f"({time.strftime('%Y-%m-%d')}). `train_step` on one fixed batch of the `mlp` network, {args.steps} "
             f"steps after 10 warm-up steps, each variant a fresh training state, variants interleaved over "
             f"{args.rounds} rounds in one process; median and spread of the step time, and its ratio to vaekit as "
             "shipped (above 1x: undoing that choice costs that much).",
             "",
             "| setting: variant | ms / step (median) | spread | vs shipped |",
             "|---|---|---|---|",
             *rows,
             "",
             "Data per batch of 128 (one pass over the 60,000 training images, median of the rounds):",
             "",
             "| data path | ms / batch |",
             "|---|---|",
             *data_rows]
    update_section("ablation", "\n".join(lines))


if __name__ == "__main__":
    main()

"""Posterior collapse: active units and I(x; z) with and without free bits and a cyclical KL schedule.

A collapse-prone setting: a 64-d latent under a strong decoder (784-400-64 encoder, 64-512-512-784
decoder) on MNIST, and the same with beta = 4. Each variant trains the same number of steps.

    .venv/bin/python bench/collapse.py               # ~5 min on 2 cores
    .venv/bin/python bench/collapse.py --hierarchy --steps 12000   # the hvae table, per group (~15 min)
    .venv/bin/python bench/collapse.py --hierarchy --preset lvae --steps 2000   # the lvae table (~50 min)

With `--hierarchy`: a hierarchical preset (`hvae`, two MLP groups, or `lvae`, four convolutional groups)
with and without the deep-model stabilizers (KL warm-up, free bits per group, NVAE's KL balancing, all of
them), KL and active units per group, and whether the upper-group collapse warning fired (a group under
0.05 nats). EMA off, so each table scores the weights its steps reached.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import vaekit
from results import update_section

BASE = ["model.hidden=[400]", "model.decoder_hidden=[512, 512]", "model.latent_dim=64"]
VARIANTS = {
    "beta=1": [],
    "beta=1, free bits 0.25": ["objective.free_bits=0.25"],
    "beta=1, cyclical": ["objective.kl_schedule=cyclical", "objective.kl_cycles=4"],
    "beta=4": ["objective.beta=4"],
    "beta=4, free bits 0.25": ["objective.beta=4", "objective.free_bits=0.25"],
    "beta=4, cyclical": ["objective.beta=4", "objective.kl_schedule=cyclical", "objective.kl_cycles=4"],
}


HIERARCHY = {
    "no stabilizer": ["objective.kl_schedule=constant", "objective.free_bits_group=0"],
    "KL warm-up": ["objective.free_bits_group=0"],
    "free bits per group (1 nat)": ["objective.kl_schedule=constant"],
    "KL balancing (with warm-up)": ["objective.free_bits_group=0", "objective.kl_balance=true"],
    "warm-up + free bits + balancing": ["objective.kl_balance=true"],
}


def hierarchy(steps: int, preset: str) -> None:
    rows = []
    t0 = time.perf_counter()
    for name, extra in HIERARCHY.items():
        cfg = vaekit.load_config(preset, [*extra, f"train.steps={steps}", f"objective.kl_warmup_steps={steps // 3}",
                                          "train.log_every=1000", "train.tensorboard=false", "guard.ema_decay=0"])
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        t = result.test
        assert t is not None
        warned = any("collapsed onto its prior" in str(w.message) for w in caught)
        kl = ", ".join(f"{v:.2f}" for v in t.kl_per_group)
        active = ", ".join(f"{a}/{d}" for a, d in zip(t.active_per_group, t.group_dims, strict=True))
        rows.append(f"| {name} | {t.neg_elbo:.2f} | {kl} | {active} | {'yes' if warned else 'no'} |")
        print(rows[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    groups = ", ".join(map(str, t.group_dims))
    suffix = "" if preset == "hvae" else f"-{preset}"  # the hvae table keeps its section name and command
    flag = f" --preset {preset}" if suffix else ""
    body = "\n".join([
        f"Command: `.venv/bin/python bench/collapse.py --hierarchy{flag} --steps {steps}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). `{preset}` (latent dimensions "
        f"per group, top first: {groups}), dynamically binarized MNIST, batch {cfg.train.batch_size}, {steps} steps, "
        "KL warm-up over a third of them where on, no EMA; test split.", "",
        "| variant | test -ELBO (nats) | KL per group (top first) | active units per group | group collapse warning |",
        "|---|---|---|---|---|", *rows])
    update_section(f"collapse-hierarchy{suffix}", body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--hierarchy", action="store_true", help="a hierarchy's table instead of the one-group one")
    parser.add_argument("--preset", default="hvae", choices=["hvae", "lvae"], help="with --hierarchy (default hvae)")
    args = parser.parse_args()
    if args.hierarchy:
        hierarchy(args.steps, args.preset)
        return
    rows = []
    t0 = time.perf_counter()
    for name, extra in VARIANTS.items():
        cfg = vaekit.load_config("mlp", [*BASE, *extra, f"train.steps={args.steps}", "train.log_every=1000"])
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        assert result.test is not None
        t = result.test
        warned = any("collapse" in str(w.message) for w in caught)
        rows.append(f"| {name} | {t.neg_elbo:.2f} | {t.kl:.2f} | {t.active_units}/64 | {t.mutual_info:.2f} | "
                    f"{'yes' if warned else 'no'} |")
        print(rows[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/collapse.py --steps {args.steps}` ({(time.perf_counter() - t0) / 60:.1f} "
        f"min, {time.strftime('%Y-%m-%d')}). 784-400-64 encoder, 64-512-512-784 decoder, Bernoulli on MNIST grey "
        f"levels, batch 128, {args.steps} steps; test split. The mutual information estimate uses 2,000 test "
        "posteriors (its bias is at most log 2000 = 7.6 nats).", "",
        "| variant | test -ELBO (nats) | KL (nats) | active units | I(x; z) (nats) | collapse warning |",
        "|---|---|---|---|---|---|", *rows])
    update_section("collapse", body)
    print(body)


if __name__ == "__main__":
    main()

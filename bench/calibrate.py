"""Model family, calibration: 2 epochs of each preset (and its activation swapped), same optimizer.

Batch 100, lr 2e-3 constant, no KL warm-up or free bits (the hardest setting for collapse), on
dynamically binarized MNIST; test -ELBO (single sample), KL and active units per group. It is how
the model presets' activation was chosen; it measures early training only, not a final NLL.

    .venv/bin/python bench/calibrate.py
"""

from __future__ import annotations

import tempfile
import time

import vaekit
from results import update_section

CASES = [
    ("burda", []), ("burda", ["model.activation=elu"]),
    ("hvae", ["model.activation=tanh"]), ("hvae", []),
    ("vamp", ["model.activation=tanh"]), ("vamp", []),
    ("iaf", ["model.activation=tanh"]), ("iaf", []),
]
COMMON = ["train.epochs=2", "train.batch_size=100", "optim.lr=0.002", "optim.lr_schedule=constant",
          "objective.kl_schedule=constant", "objective.free_bits_group=0", "train.tensorboard=false"]


def main() -> None:
    rows = ["| preset | activation | test -ELBO (nats) | KL per group (nats) | active units per group | examples/s |",
            "|---|---|---|---|---|---|"]
    for preset, extra in CASES:
        cfg = vaekit.load_config(preset, [*COMMON, *extra])
        with tempfile.TemporaryDirectory() as tmp:
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        t = result.test
        assert t is not None
        active = ", ".join(f"{a}/{d}" for a, d in zip(t.active_per_group, t.group_dims, strict=True))
        rows.append(f"| `{preset}` | {cfg.model.activation} | {t.neg_elbo:.2f} | "
                    f"{', '.join(f'{k:.2f}' for k in t.kl_per_group)} | {active} | {result.examples_per_s:,.0f} |")
        print(rows[-1], flush=True)
    body = "\n".join([f"Command: `.venv/bin/python bench/calibrate.py` ({time.strftime('%Y-%m-%d')}): 2 epochs, "
                      "batch 100, lr 2e-3 constant, no KL warm-up, no free bits, binarized MNIST.", "", *rows])
    update_section("family-calibration", body)


if __name__ == "__main__":
    main()

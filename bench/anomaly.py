"""Anomaly scores: a VAE trained on one set scores its test split against another's.

The `mlp` preset (784-400-20, Bernoulli on grey levels, 10 epochs) is trained on MNIST and on
Fashion-MNIST; each scores both test sets (10,000 images each) by -ELBO and by the
importance-sampled NLL, and the AUROC of "higher score = out of distribution" is reported in both
directions. The reverse direction (Fashion-MNIST model, MNIST as OOD) is the known hard case:
likelihood models often give simpler out-of-distribution images *higher* likelihood (Nalisnick et
al. 2019).

    .venv/bin/python bench/anomaly.py           # ~5 min on 2 cores; needs ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import vaekit
from results import update_section
from vaekit.apps.score import auroc, score

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    t0 = time.perf_counter()
    tests = {name: vaekit.load_dataset(name, "test") for name in ("mnist", "fashion-mnist")}
    rows = []
    for train_name, ood_name in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        cfg = vaekit.load_config("mlp", [f"data.name={train_name}", f"train.epochs={args.epochs}"])
        with tempfile.TemporaryDirectory() as tmp:
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        model = result.model
        cells = []
        for k in (None, args.iw_samples):
            s_in, s_out = score(model, tests[train_name], iw_samples=k), score(model, tests[ood_name], iw_samples=k)
            cells += [f"{s_in.mean():.1f} / {s_out.mean():.1f}", f"{auroc(s_in, s_out):.4f}"]
        rows.append(f"| {train_name} | {ood_name} | " + " | ".join(cells) + " |")
        print(rows[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/anomaly.py --iw-samples {args.iw_samples} --epochs {args.epochs}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). `mlp` preset trained on the "
        "first column's training split; scores are nats per image on the 10,000-image test splits; AUROC of "
        "\"score higher on the OOD set\" (0.5 = chance, below 0.5 = the OOD set looks *more* likely).", "",
        f"| trained on | OOD set | -ELBO in / OOD | AUROC (-ELBO) | NLL k={args.iw_samples} in / OOD "
        f"| AUROC (NLL) |", "|---|---|---|---|---|---|", *rows])
    update_section("anomaly", body)
    print(body)


if __name__ == "__main__":
    main()

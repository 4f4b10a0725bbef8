"""Anomaly scores: a VAE trained on one set scores its test split against another's, by every method.

The `mlp` preset (784-400-20, Bernoulli on grey levels, 10 epochs) is trained on MNIST and on
Fashion-MNIST, and a background model for each (the same preset with 20% of training pixels
replaced by noise, Ren et al. 2019); each scores both test sets (10,000 images each) by -ELBO,
by the importance-sampled NLL, and by the three corrections of `vaekit.apps.score` (complexity with
PNG, likelihood ratio, typicality with batches of 1 and of 10), and the AUROC of "higher score =
out of distribution" is reported in both directions. The reverse direction (Fashion-MNIST model,
MNIST as OOD) is the known hard case: likelihood models give simpler out-of-distribution images a
*higher* likelihood (Nalisnick et al. 2019).

    .venv/bin/python bench/anomaly.py           # ~15 min on 2 cores; needs ../shared/data
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import vaekit
from results import update_section
from vaekit.apps.score import auroc, code_length_nats, score, typical_entropy, typicality

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
    rows, methods = [], []
    for train_name, ood_name in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        cfg = vaekit.load_config("mlp", [f"data.name={train_name}", f"train.epochs={args.epochs}"])
        bg_cfg = cfg.override(["data.noise=0.2"])
        with tempfile.TemporaryDirectory() as tmp:
            model = vaekit.train(cfg, f"{tmp}/run", quiet=True).model
            background = vaekit.train(bg_cfg, f"{tmp}/bg", quiet=True).model
        cells = []
        for k in (None, args.iw_samples):
            s_in, s_out = score(model, tests[train_name], iw_samples=k), score(model, tests[ood_name], iw_samples=k)
            cells += [f"{s_in.mean():.1f} / {s_out.mean():.1f}", f"{auroc(s_in, s_out):.4f}"]
        rows.append(f"| {train_name} | {ood_name} | " + " | ".join(cells) + " |")
        k = args.iw_samples
        nll = {name: score(model, tests[name], iw_samples=k) for name in (train_name, ood_name)}
        png = {name: code_length_nats(tests[name]) for name in nll}
        bg = {name: score(background, tests[name], iw_samples=k) for name in nll}
        train_set = vaekit.load_dataset(train_name, "train")
        entropy = typical_entropy(model, train_set, k)
        by_method = {
            f"NLL (k = {k})": {n: v for n, v in nll.items()},
            "complexity (NLL - PNG)": {n: nll[n] - png[n] for n in nll},
            "likelihood ratio": {n: nll[n] - bg[n] for n in nll},
            "typicality, batch 1": {n: typicality(nll[n], entropy) for n in nll},
            "typicality, batch 10": {n: typicality(nll[n], entropy, batch=10) for n in nll},
        }
        methods.append(f"| {train_name} | {ood_name} | " + " | ".join(
            f"{auroc(v[train_name], v[ood_name]):.4f}" for v in by_method.values()) + " |")
        print(rows[-1], methods[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    names = list(by_method)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/anomaly.py --iw-samples {args.iw_samples} --epochs {args.epochs}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). `mlp` preset trained on the "
        "first column's training split; scores are nats per image on the 10,000-image test splits; AUROC of "
        "\"score higher on the OOD set\" (0.5 = chance, below 0.5 = the OOD set looks *more* likely).", "",
        f"| trained on | OOD set | -ELBO in / OOD | AUROC (-ELBO) | NLL k={args.iw_samples} in / OOD "
        f"| AUROC (NLL) |", "|---|---|---|---|---|---|", *rows, "",
        "AUROC by method (background model: the same preset trained with `--set data.noise=0.2`; typicality "
        "against the mean NLL of 5,000 training images; batch 10 = 1,000 random batches of 10 test images):", "",
        "| trained on | OOD set | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names), *methods])
    update_section("anomaly", body)
    print(body)


if __name__ == "__main__":
    main()

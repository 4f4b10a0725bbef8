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
    .venv/bin/python bench/anomaly.py --colour-minutes 10   # and the colour pair (cifar10-jpeg against coloured
                                                            # MNIST digits at 32x32): ~40 min
    .venv/bin/python bench/anomaly.py --colour-only --colour-minutes 10   # the colour pair alone, its own section
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import vaekit
from results import plan_epochs, update_section
from vaekit.apps.score import auroc, code_length_nats, score, typical_entropy, typicality
from vaekit.config import override

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


COLOUR_MODEL = ["model.encoder=conv", "model.decoder=conv", "model.hidden=[32, 64]", "model.latent_dim=32",
                "model.likelihood=logistic-mixture", "model.mixture_components=5", "train.channels_last=true",
                "train.batch_size=64", "optim.lr_schedule=cosine"]  # a small RGB model: minutes, not hours


def methods_row(model: vaekit.VAE, background: vaekit.VAE, train_set: vaekit.Dataset, inside: vaekit.Dataset,
                ood: vaekit.Dataset, k: int) -> tuple[list[str], dict[str, float]]:
    """The -ELBO / NLL cells and every method's AUROC for one (in-distribution, OOD) pair."""
    cells = []
    nll = {}
    for iw in (None, k):
        s_in, s_out = score(model, inside, iw_samples=iw), score(model, ood, iw_samples=iw)
        cells += [f"{s_in.mean():.1f} / {s_out.mean():.1f}", f"{auroc(s_in, s_out):.4f}"]
        nll = {"in": s_in, "ood": s_out}  # the last pass is the NLL at k, reused by the methods below
    png = {"in": code_length_nats(inside), "ood": code_length_nats(ood)}
    bg = {"in": score(background, inside, iw_samples=k), "ood": score(background, ood, iw_samples=k)}
    entropy = typical_entropy(model, train_set, k)
    by_method = {
        "NLL": nll,
        "complexity (NLL - PNG)": {n: nll[n] - png[n] for n in nll},
        "likelihood ratio": {n: nll[n] - bg[n] for n in nll},
        "typicality, batch 1": {n: typicality(nll[n], entropy) for n in nll},
        "typicality, batch 10": {n: typicality(nll[n], entropy, batch=10) for n in nll},
    }
    return cells, {name: auroc(v["in"], v["ood"]) for name, v in by_method.items()}


def coloured_digits(n: int = 10000) -> vaekit.Dataset:
    """MNIST test digits drawn in colour at 32x32: padded by 2 pixels, each digit in one random bright colour."""
    import torch

    grey = vaekit.load_dataset("mnist", "test").images[:n].float() / 255  # (N, 1, 28, 28)
    colour = 0.3 + 0.7 * torch.rand(len(grey), 3, 1, 1, generator=torch.Generator().manual_seed(0))
    rgb = torch.nn.functional.pad(grey * colour, (2, 2, 2, 2))  # (N, 3, 32, 32)
    return vaekit.Dataset("mnist-colour", "test", (rgb * 255).round().to(torch.uint8))


def colour_pair(minutes: float, k: int) -> tuple[str, str, str, list[str]]:
    """A small RGB model on cifar10-jpeg (and its background model), scored against coloured digits."""
    base = ["data.name=cifar10-jpeg", *COLOUR_MODEL, "train.tensorboard=false"]
    epochs = plan_epochs(None, base, minutes)
    cfg = vaekit.load_config(None, [*base, f"train.epochs={epochs}"])
    with tempfile.TemporaryDirectory() as tmp:
        model = vaekit.train(cfg, f"{tmp}/run", quiet=True).model
        background = vaekit.train(override(cfg, ["data.noise=0.2"]), f"{tmp}/bg", quiet=True).model
    train_set = vaekit.load_dataset("cifar10-jpeg", "train")
    cells, aurocs = methods_row(model, background, train_set, vaekit.load_dataset("cifar10-jpeg", "test"),
                                coloured_digits(), k)
    row = "| cifar10-jpeg | MNIST digits in colour, 32x32 | " + " | ".join(cells) + " |"
    pair = "| cifar10-jpeg | MNIST digits in colour, 32x32 | "
    methods = pair + " | ".join(f"{a:.4f}" for a in aurocs.values()) + " |"
    note = (f"Colour pair: {epochs} epochs of a small convolutional RGB model (`{' '.join(COLOUR_MODEL)}`) on "
            f"cifar10-jpeg (NLL at k = {k}). cifar10-jpeg is CIFAR-10 re-encoded as JPEG by a third party: its "
            "likelihoods are not comparable with published CIFAR-10 numbers.")
    return row, methods, note, list(aurocs)


def colour_only(minutes: float, k: int) -> None:
    """The colour pair alone, written to its own RESULTS section beside the grey table."""
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    t0 = time.perf_counter()
    row, method, note, names = colour_pair(minutes, k)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/anomaly.py --colour-only --colour-minutes {minutes:g} --colour-k {k}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). Scores are nats per image on "
        "the 10,000 cifar10-jpeg test images and 10,000 MNIST test digits drawn in colour; AUROC as above.", "",
        "| trained on | OOD set | -ELBO in / OOD | AUROC (-ELBO) | NLL in / OOD | AUROC (NLL) |",
        "|---|---|---|---|---|---|", row, "",
        "| trained on | OOD set | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names), method, "", note])
    update_section("anomaly-colour", body)
    print(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--colour-minutes", type=float, default=0, help="also the colour pair, its model trained "
                        "this long (and as long again for its background model); needs cifar10-jpeg")
    parser.add_argument("--colour-k", type=int, default=20, help="importance samples for the colour pair's NLL")
    parser.add_argument("--colour-only", action="store_true", help="only the colour pair, in a section of its own "
                        "(the grey table stays as it is)")
    args = parser.parse_args()
    if args.colour_only:
        colour_only(args.colour_minutes or 10, args.colour_k)
        return
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    t0 = time.perf_counter()
    tests = {name: vaekit.load_dataset(name, "test") for name in ("mnist", "fashion-mnist")}
    rows, methods, names = [], [], []
    for train_name, ood_name in (("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")):
        cfg = vaekit.load_config("mlp", [f"data.name={train_name}", f"train.epochs={args.epochs}"])
        bg_cfg = override(cfg, ["data.noise=0.2"])
        with tempfile.TemporaryDirectory() as tmp:
            model = vaekit.train(cfg, f"{tmp}/run", quiet=True).model
            background = vaekit.train(bg_cfg, f"{tmp}/bg", quiet=True).model
        cells, aurocs = methods_row(model, background, vaekit.load_dataset(train_name, "train"), tests[train_name],
                                    tests[ood_name], args.iw_samples)
        names = list(aurocs)
        rows.append(f"| {train_name} | {ood_name} | " + " | ".join(cells) + " |")
        methods.append(f"| {train_name} | {ood_name} | " + " | ".join(f"{a:.4f}" for a in aurocs.values()) + " |")
        print(rows[-1], methods[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    notes = []
    if args.colour_minutes:
        row, method, note, _ = colour_pair(args.colour_minutes, args.colour_k)
        rows.append(row)
        methods.append(method)
        notes.append(note)
    flags = f"--iw-samples {args.iw_samples} --epochs {args.epochs}"
    flags += f" --colour-minutes {args.colour_minutes:g} --colour-k {args.colour_k}" if args.colour_minutes else ""
    body = "\n".join([
        f"Command: `.venv/bin/python bench/anomaly.py {flags}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). `mlp` preset trained on the "
        "first column's training split; scores are nats per image on the 10,000-image test splits; AUROC of "
        "\"score higher on the OOD set\" (0.5 = chance, below 0.5 = the OOD set looks *more* likely).", "",
        "| trained on | OOD set | -ELBO in / OOD | AUROC (-ELBO) | NLL in / OOD | AUROC (NLL) |",
        "|---|---|---|---|---|---|", *rows, "",
        f"AUROC by method (NLL at k = {args.iw_samples}; background model: the same preset trained with "
        "`--set data.noise=0.2`; typicality against the mean NLL of 5,000 training images; batch 10 = 1,000 random "
        "batches of 10 test images):", "",
        "| trained on | OOD set | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names), *methods,
        *(["", *notes] if notes else [])])
    update_section("anomaly", body)
    print(body)


if __name__ == "__main__":
    main()

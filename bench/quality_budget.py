"""Sample quality side by side with pythae: every model trained for the same wall-clock minutes on this machine.

    VAEKIT_DATA=../shared/data .venv/bin/python bench/quality_budget.py --data mnist --minutes 5 \\
        --pythae vae rae-l2 wae-mmd vaegan          # ~35 min
    VAEKIT_DATA=../shared/data .venv/bin/python bench/quality_budget.py --data mnist --minutes 5 \\
        --vaekit mlp burda hvae                     # ~30 min

pythae's models run in their own venv (bench/pythae_quality.py: its networks, samplers and settings); vaekit's presets
train for the whole epochs nearest to what a 400-step probe's steady rate says fills the budget (their schedules end
with it; results.plan_epochs) and `train.max_minutes` stops them at the budget regardless, then fit the gmm and
two-stage samplers on the training split's latents. Both score 10,000 samples per sampler and the reconstructions of
10,000 test images against those test images in the data set's shipped feature network (evaluation/quality): FD, KID,
precision, recall, density, coverage, the rarest class's share among the samples. Each run adds its rows to
bench/quality_rows.json, so a table can be filled over several runs (each under an hour), and rewrites the data set's
section of bench/RESULTS.md from all rows. Run it alone: the budget is wall-clock.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaekit
from results import budget_table, plan_epochs, update_section
from throughput import ensure_pythae
from vaekit.apps.samplers import fit_sampler, latent_draws, sampler_latents
from vaekit.evaluation.quality import quality
from vaekit.evaluation.quality.nets import FeatureNet, feature_net_for, load_feature_net
from vaekit.evaluation.quality.score import BATCH, SetScores, compare, embed

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "quality_rows.json"


def scores(s: SetScores) -> dict[str, float]:
    return {"fd": s.fd, "kid": s.kid, "kid_std": s.kid_std, "precision": s.precision, "recall": s.recall,
            "density": s.density, "coverage": s.coverage, "rarest": s.rarest_class_share}


def batches(images: torch.Tensor) -> Iterator[torch.Tensor]:
    for start in range(0, len(images), BATCH):
        yield images[start : start + BATCH].float()


@functools.cache
def real_features(data: str, n: int) -> tuple[FeatureNet, torch.Tensor]:
    """The data set's feature network and its first `n` test images' features, embedded once per run."""
    net = load_feature_net(feature_net_for(data))
    return net, embed(net, batches(vaekit.load_dataset(data, "test").images[:n].float() / 255))[0]


def pythae_rows(data: str, model: str, minutes: float, n: int, folder: Path) -> list[dict[str, Any]]:
    """Train pythae's `model` for `minutes` (its own venv), then score what it wrote."""
    test = vaekit.load_dataset(data, "test")
    npz = folder / f"{data}.npz"
    if not npz.exists():
        np.savez(npz, train=vaekit.load_dataset(data, "train").images.numpy(), test=test.images.numpy())
    out = folder / f"pythae-{model}.npz"
    with open(folder / f"pythae-{model}.log", "w") as log:
        latent = "128" if data == "cifar10-jpeg" else "20"  # vaekit `cifar`'s width; the MLP's is 20
        done = subprocess.run([str(ensure_pythae()), str(BENCH / "pythae_quality.py"), str(npz), model, "--minutes",
                               str(minutes), "--out", str(out), "--samples", str(n), "--latent", latent],
                              stdout=subprocess.PIPE,
                              stderr=log, text=True, check=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    net, real = real_features(data, n)
    arrays = np.load(out)
    rec, rec_logits = embed(net, batches(torch.from_numpy(arrays["reconstructions"])))
    recon_fd = compare(real, rec, rec_logits, 1000).fd
    rows = []
    for key in [k for k in arrays.files if k.startswith("samples_")]:
        fake, logits = embed(net, batches(torch.from_numpy(arrays[key])))
        rows.append({"trainer": "pythae", "model": model, "sampler": key.removeprefix("samples_"),
                     "epochs": info["epochs"], "steps": info.get("steps", "-"), "train_seconds": info["train_seconds"],
                     **scores(compare(real, fake, logits, 1000)), "recon_fd": recon_fd})
    return rows


def vaekit_rows(data: str, preset: str, minutes: float, n: int, folder: Path) -> list[dict[str, Any]]:
    """Train vaekit's `preset` on `data` for `minutes`, fit its samplers, score each sampler."""
    own = vaekit.load_config(preset).data.name
    sets = [] if own.removeprefix("binarized-") == data else [f"data.name={data}"]
    epochs = plan_epochs(preset, sets, minutes)
    cfg = vaekit.load_config(preset, [*sets, f"train.epochs={epochs}", f"train.max_minutes={minutes}",
                                      "train.tensorboard=false"])
    started = time.perf_counter()
    result = vaekit.train(cfg, folder / preset, quiet=True)
    seconds = time.perf_counter() - started
    train, test = vaekit.load_dataset(data, "train"), vaekit.load_dataset(data, "test")
    model = result.model
    latents = sampler_latents(model, train)
    rows = []
    for sampler in ("prior", "gmm", "two-stage"):
        fitted = None if sampler == "prior" else fit_sampler(model, train, sampler, latents)
        r = quality(model, test, None, n=n, latents=latent_draws(model, fitted) if fitted else None, sampler=sampler)
        rows.append({"trainer": "vaekit", "model": preset, "sampler": sampler,
                     "epochs": round(result.steps * cfg.train.batch_size / len(train), 1),
                     "train_seconds": round(seconds, 1), **scores(r.samples), "recon_fd": r.reconstructions.fd})
    return rows


def floor(data: str, n: int) -> dict[str, Any]:
    net, real = real_features(data, n)
    train = vaekit.load_dataset(data, "train")
    other, logits = embed(net, batches(train.images[:n].float() / 255))
    return scores(compare(real, other, logits, 1000))


def render(data: str, table: dict[str, Any]) -> str:
    net, rows = feature_net_for(data), table["rows"]
    lines = [f"Feature network `{net}`; floor (the training split's first {table['n']:,} images against the test "
             f"split): FD-{net} {table['floor']['fd']:.3f}, precision {table['floor']['precision']:.3f}, recall "
             f"{table['floor']['recall']:.3f}. Budget {table['minutes']:g} minutes of training per model.", "",
             "Commands (each adds its rows):", "", *[f"- `{c}` ({d})" for c, d in table["commands"]], "",
             f"| trainer | model | sampler | epochs in budget | FD-{net} | KID x 1e3 | precision | recall | density | "
             f"coverage | rarest class | reconstructions' FD-{net} |", "|---" * 12 + "|"]
    for key in sorted(rows, key=lambda k: rows[k]["fd"]):
        r = rows[key]
        lines.append(f"| {r['trainer']} | {r['model']} | {r['sampler']} | {r['epochs']} | {r['fd']:.3f} | "
                     f"{1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['density']:.3f} | {r['coverage']:.3f} | {100 * r['rarest']:.1f}% | {r['recon_fd']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, choices=["mnist", "fashion-mnist", "cifar10-jpeg"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model (wall clock)")
    parser.add_argument("--pythae", nargs="*", default=[], help="vae rae-l2 wae-mmd vaegan")
    parser.add_argument("--vaekit", nargs="*", default=[], help="presets")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    every, table = budget_table(ROWS, args.data, args.minutes, args.samples, lambda: floor(args.data, args.samples))
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(pythae_rows, m) for m in args.pythae] + [(vaekit_rows, p) for p in args.vaekit]
        for job, name in jobs:
            for row in job(args.data, name, args.minutes, args.samples, Path(tmp)):
                table["rows"][f"{row['trainer']}/{row['model']}/{row['sampler']}"] = row
                print(json.dumps(row), flush=True)
            ROWS.write_text(json.dumps(every, indent=1) + "\n")
    command = ("VAEKIT_DATA=../shared/data .venv/bin/python bench/quality_budget.py --data "
               f"{args.data} --minutes {args.minutes:g}" + (f" --pythae {' '.join(args.pythae)}" if args.pythae else "")
               + (f" --vaekit {' '.join(args.vaekit)}" if args.vaekit else ""))
    table["commands"].append([command, time.strftime("%Y-%m-%d")])
    ROWS.write_text(json.dumps(every, indent=1) + "\n")
    update_section(f"quality-budget-{args.data}", render(args.data, table))
    print(render(args.data, table))


if __name__ == "__main__":
    main()

"""The same VAE with and without the adversarial terms at an equal wall-clock budget, beside pythae's VAEGAN (issue 42).

    VAEKIT_DATA=../shared/data .venv/bin/python bench/adversarial.py --data mnist --minutes 5 \\
        --vaekit conv vaegan --pythae vaegan                       # ~30 min
    VAEKIT_DATA=../shared/data .venv/bin/python bench/adversarial.py --data fashion-mnist --minutes 5 \\
        --vaekit conv vaegan --pythae vaegan                       # ~30 min

Each model trains for the same minutes on this machine (vaekit's presets stop at `train.max_minutes`; pythae's
VAEGAN in its own venv, bench/pythae_quality.py). Scored with the data set's shipped feature network
(evaluation/quality; not Inception FID): 10,000 samples from the prior (and from a GMM fitted to the training
codes), the reconstructions of 10,000 test images (FD and PSNR), and vaekit's test -ELBO. `--set` overrides apply
to the adversarial presets only (e.g. adversarial.disc_start for a budget shorter than the preset's schedule).
Rows go to bench/adversarial_rows.json (a table fills over several runs, each under an hour); the data set's
section of bench/RESULTS.md is rewritten from all rows, and docs/figures/adversarial-DATA.png shows the presets'
samples and reconstructions side by side. Run it alone: the budget is wall-clock.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import vaekit
from quality_budget import batches, pythae_rows, real_features, scores
from results import plan_epochs, update_section
from vaekit.apps.images import grid, side_by_side
from vaekit.apps.samplers import draw_images, fit_sampler, latent_draws, sampler_latents
from vaekit.evaluation.quality import quality

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "adversarial_rows.json"


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), pixels in [0, 1]."""
    mse = (images.float() - reference.float()).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def test_images(data: str, n: int) -> torch.Tensor:
    return vaekit.load_dataset(data, "test").images[:n].float() / 255


def vaekit_rows(data: str, preset: str, minutes: float, n: int, folder: Path, sets: list[str],
                pictures: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    own = vaekit.load_config(preset)
    overrides = ([] if own.data.name.removeprefix("binarized-") == data else [f"data.name={data}"])
    overrides += sets if own.objective.name == "adversarial" else []
    epochs = plan_epochs(preset, overrides, minutes)
    cfg = vaekit.load_config(preset, [*overrides, f"train.epochs={epochs}", f"train.max_minutes={minutes}",
                                      "train.tensorboard=false"])
    started = time.perf_counter()
    result = vaekit.train(cfg, folder / preset, quiet=True)
    seconds = time.perf_counter() - started
    train, test = vaekit.load_dataset(data, "train"), vaekit.load_dataset(data, "test")
    model = result.model
    x = test_images(data, n)
    rec = torch.cat([model.reconstruct(b) for b in batches(x)])
    shown = [grid(model.sample(32, generator=torch.Generator().manual_seed(0)), nrow=8)]
    rows = []
    for sampler in ("prior", "gmm"):
        fitted = None if sampler == "prior" else fit_sampler(model, train, sampler, sampler_latents(model, train))
        if fitted is not None:
            shown.append(grid(draw_images(model, 32, fitted, torch.Generator().manual_seed(0)), nrow=8))
        r = quality(model, test, None, n=n, latents=latent_draws(model, fitted) if fitted else None, sampler=sampler)
        rows.append({"trainer": "vaekit", "model": preset, "sampler": sampler, "steps": result.steps,
                     "epochs": round(result.steps * cfg.train.batch_size / len(train), 1),
                     "train_seconds": round(seconds, 1), **scores(r.samples), "recon_fd": r.reconstructions.fd,
                     "psnr": psnr(rec, x), "neg_elbo": result.test.neg_elbo if result.test else None,
                     "overrides": overrides})
    pictures[preset] = np.concatenate([*shown, grid(side_by_side(x[:16], rec[:16]), nrow=8)], axis=0)
    return rows


def figure(data: str, pictures: dict[str, np.ndarray]) -> Path:
    """docs/figures/adversarial-DATA.png: each preset's prior samples (top), samples of the GMM fitted to its codes
    (middle) and test reconstructions (bottom: inputs on odd rows), presets left to right in the order run."""
    parts = list(pictures.values())
    gap = np.full((parts[0].shape[0], 12, *parts[0].shape[2:]), 255, dtype=parts[0].dtype)
    joined = [parts[0]]
    for part in parts[1:]:
        joined += [gap, part]
    path = BENCH.parent / "docs" / "figures" / f"adversarial-{data}.png"
    Image.fromarray(np.concatenate(joined, axis=1).squeeze()).save(path)
    return path


def pythae_with_psnr(data: str, model: str, minutes: float, n: int, folder: Path) -> list[dict[str, Any]]:
    rows = pythae_rows(data, model, minutes, n, folder)
    rec = torch.from_numpy(np.load(folder / f"pythae-{model}.npz")["reconstructions"]).float()
    value = psnr(rec, test_images(data, n)[: len(rec)])
    return [{**row, "psnr": value, "neg_elbo": None} for row in rows]


def render(data: str, table: dict[str, Any]) -> str:
    net = table["features"]
    lines = [f"Feature network `{net}` (not Inception FID). Budget {table['minutes']:g} minutes of training per "
             "model on this machine; 10,000 samples and the reconstructions of 10,000 test images.", "",
             "Commands (each adds its rows):", "", *[f"- `{c}` ({d})" for c, d in table["commands"]], "",
             f"| trainer | model | sampler | steps | FD-{net} | KID x 1e3 | precision | recall | coverage | "
             f"reconstructions' FD | PSNR (dB) | test -ELBO (nats) |", "|---" * 12 + "|"]
    for key in sorted(table["rows"], key=lambda k: table["rows"][k]["fd"]):
        r = table["rows"][key]
        elbo = f"{r['neg_elbo']:.2f}" if r.get("neg_elbo") is not None else "-"
        lines.append(f"| {r['trainer']} | {r['model']} | {r['sampler']} | {r.get('steps', '-')} | {r['fd']:.3f} | "
                     f"{1000 * r['kid']:.2f} ± {1000 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} "
                     f"| {r['coverage']:.3f} | {r['recon_fd']:.3f} | {r['psnr']:.2f} | {elbo} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, choices=["mnist", "fashion-mnist", "cifar10-jpeg"])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model (wall clock)")
    parser.add_argument("--vaekit", nargs="*", default=[], help="presets, e.g. conv vaegan, or cifar cifar-gan")
    parser.add_argument("--pythae", nargs="*", default=[], help="pythae models, e.g. vaegan")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override for adversarial presets")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    every = json.loads(ROWS.read_text()) if ROWS.exists() else {}
    table = every.setdefault(args.data, {"rows": {}, "commands": []})
    if table.get("minutes", args.minutes) != args.minutes:
        raise SystemExit(f"{ROWS.name} holds {args.data} rows at another budget")
    table.update(minutes=args.minutes, n=args.samples, features=real_features(args.data, args.samples)[0].name)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.pythae:
            for row in pythae_with_psnr(args.data, name, args.minutes, args.samples, Path(tmp)):
                table["rows"][f"pythae/{name}/{row['sampler']}"] = row
        pictures: dict[str, np.ndarray] = {}
        for preset in args.vaekit:
            for row in vaekit_rows(args.data, preset, args.minutes, args.samples, Path(tmp), args.sets, pictures):
                table["rows"][f"vaekit/{preset}/{row['sampler']}"] = row
                print(json.dumps(row), flush=True)
            ROWS.write_text(json.dumps(every, indent=1) + "\n")
    command = (f"VAEKIT_DATA=../shared/data .venv/bin/python bench/adversarial.py --data {args.data} --minutes "
               f"{args.minutes:g}" + (f" --vaekit {' '.join(args.vaekit)}" if args.vaekit else "")
               + (f" --pythae {' '.join(args.pythae)}" if args.pythae else "")
               + "".join(f" --set {s}" for s in args.sets))
    table["commands"].append([command, time.strftime("%Y-%m-%d")])
    ROWS.write_text(json.dumps(every, indent=1) + "\n")
    if len(pictures) > 1:
        print(f"wrote {figure(args.data, pictures)}: {' | '.join(pictures)}")
    update_section(f"adversarial-{args.data}", render(args.data, table))
    print(render(args.data, table))


if __name__ == "__main__":
    main()

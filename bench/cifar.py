"""Colour images: `cifar` and `cifar-hvae` on the `cifar10-jpeg` copy, bits/dim and real `vaekit compress` files
beside classical lossless codecs on the same decoded pixels.

`cifar10-jpeg` is CIFAR-10 as a third party re-encoded it to JPEG: its bits/dim are NOT comparable
with published CIFAR-10 numbers (JPEG removed fine detail); every number here is on that copy.
Each model trains for a wall-clock budget (steps planned from a timing run), then: the test -ELBO
in bits/dim on all 10,000 test images, and the test set coded with `vaekit compress` (uint8 array
(10000, 32, 32, 3) in, the same out, verified). Classical codecs on the same pixels: PNG (one tiled
image, optimize), WebP lossless (tiled, method 6), JPEG XL lossless (`cjxl -d 0 -e 9`, when
Debian's libjxl-tools is installed) and xz -9e on the raw bytes. The full run (both models, all test
images) also writes the README's grids: docs/figures/<preset>-samples-t1.png and -t0.8.png (64 samples at
temperature 1 and 0.8) and <preset>-reconstructions.png (the first 32 test images above their reconstructions).

    .venv/bin/python bench/cifar.py --minutes 45            # both models: ~100 min, needs ../shared/data
    .venv/bin/python bench/cifar.py --minutes 1 --test-images 200 --only cifar   # a smoke run
"""

from __future__ import annotations

import argparse
import io
import lzma
import math
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vaekit
from results import update_section
from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.apps.images import save_grid, save_reconstructions
from vaekit.evaluation.evaluate import evaluate

OUT = Path(__file__).resolve().parent / "out"
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NOTE = "cifar10-jpeg: CIFAR-10 re-encoded as JPEG by a third party; not comparable with published CIFAR-10 bits/dim"


def tiled(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> one (side * 32, side * 32, 3) mosaic, zero-padded."""
    n, h, w, c = images.shape
    side = math.ceil(math.sqrt(n))
    canvas = np.zeros((side * h, side * w, c), dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, side)
        canvas[r * h : (r + 1) * h, col * w : (col + 1) * w] = im
    return canvas


def classical(images: np.ndarray) -> dict[str, float]:
    """bits/dim of classical lossless codecs on (N, 32, 32, 3) uint8 images."""
    dims = images.size
    canvas = Image.fromarray(tiled(images))
    out = {"xz -9e (raw bytes)": 8 * len(lzma.compress(images.tobytes(), preset=9 | lzma.PRESET_EXTREME)) / dims}
    for name, kwargs in (("PNG (tiled, optimize)", {"format": "PNG", "optimize": True}),
                         ("WebP lossless (tiled, method 6)",
                          {"format": "WEBP", "lossless": True, "quality": 100, "method": 6})):
        buffer = io.BytesIO()
        canvas.save(buffer, **kwargs)
        out[name] = 8 * len(buffer.getvalue()) / dims
    if shutil.which("cjxl"):
        with tempfile.TemporaryDirectory() as tmp:
            canvas.save(f"{tmp}/a.png")
            subprocess.run(["cjxl", f"{tmp}/a.png", f"{tmp}/a.jxl", "-d", "0", "-e", "9", "--quiet"], check=True,
                           capture_output=True)
            out["JPEG XL lossless (tiled, cjxl -d 0 -e 9)"] = 8 * os.path.getsize(f"{tmp}/a.jxl") / dims
    return out


def steps_for(preset: str, minutes: float, overrides: list[str]) -> int:
    """Steps that fit `minutes` of training, from a 30-step timing run (per-epoch evaluation is off)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = vaekit.load_config(preset, [*overrides, "train.steps=30", "train.tensorboard=false"])
        t0 = time.perf_counter()
        vaekit.train(cfg, f"{tmp}/r", quiet=True)
        per_step = (time.perf_counter() - t0) / 30  # includes the start-up and final export: a safe margin
    return max(30, int(minutes * 60 / per_step))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45, help="training budget per model")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--only", choices=["cifar", "cifar-hvae"], help="one model instead of both")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for both models (e.g. train.precision=bf16)")
    args = parser.parse_args()
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    t0 = time.perf_counter()
    test = vaekit.load_dataset("cifar10-jpeg", "test").subset(torch.arange(args.test_images))
    pixels = np.ascontiguousarray(test.images.permute(0, 2, 3, 1).numpy())  # (N, 32, 32, 3) uint8
    rows = []
    for preset in [args.only] if args.only else ["cifar", "cifar-hvae"]:
        overrides = ["data.name=cifar10-jpeg", "train.tensorboard=false", "train.eval_batch_size=250", *args.set]
        steps = steps_for(preset, args.minutes, overrides)
        run = OUT / f"{preset}-jpeg"
        if run.exists():
            shutil.rmtree(run)
        cfg = vaekit.load_config(preset, [*overrides, f"train.steps={steps}", "train.checkpoint_every=2000"])
        start = time.perf_counter()
        result = vaekit.train(cfg, run, quiet=True)
        minutes = (time.perf_counter() - start) / 60
        scored = evaluate(result.model, test, batch_size=250)
        if args.test_images == 10000 and not args.only:  # the README's grids come from the full run only
            for temperature in (1.0, 0.8):
                images = result.model.sample(64, temperature=temperature, generator=torch.Generator().manual_seed(0))
                save_grid(images, FIGURES / f"{preset}-samples-t{temperature:g}.png", nrow=8)
            save_reconstructions(result.model, test, 32, FIGURES / f"{preset}-reconstructions.png")
        with tempfile.TemporaryDirectory() as tmp:
            np.save(f"{tmp}/test.npy", pixels)
            t1 = time.perf_counter()
            stats = compress_file(run, f"{tmp}/test.npy", f"{tmp}/test.vkz")
            coded = time.perf_counter() - t1
            decompress_file(f"{tmp}/test.vkz", f"{tmp}/back.npy", run)
            back = np.load(f"{tmp}/back.npy")
            exact = back.shape == pixels.shape and back.dtype == np.uint8 and np.array_equal(back, pixels)
        rows.append(
            f"| `{preset}` ({steps} steps of batch {cfg.train.batch_size}, {minutes:.1f} min, "
            f"{result.examples_per_s:,.0f} examples/s) | {scored.bits_per_dim:.3f} | {stats['bits_per_dim']:.3f} "
            f"({'round trip exact' if exact else 'ROUND TRIP FAILED'}, {args.test_images / coded:.0f} images/s) |"
        )
        print(rows[-1], flush=True)
    for name, bpd in classical(pixels).items():
        rows.append(f"| {name} | | {bpd:.3f} |")
    body = "\n".join([
        f"Command: `.venv/bin/python bench/cifar.py --minutes {args.minutes:g} --test-images {args.test_images}"
        f"{f' --only {args.only}' if args.only else ''}{''.join(f' --set {s}' for s in args.set)}` "
        f"({(time.perf_counter() - t0) / 60:.1f} min, "
        f"{time.strftime('%Y-%m-%d')}). {NOTE}. Test split: the first {args.test_images} test images.", "",
        "| model / codec | test -ELBO (bits/dim) | file (bits/dim) |", "|---|---|---|", *rows])
    update_section("cifar-jpeg" if args.test_images == 10000 and not args.only else "cifar-jpeg-smoke", body)
    print(body)


if __name__ == "__main__":
    main()

"""Colour images: `cifar` and `cifar-hvae` on the `cifar10-jpeg` copy, bits/dim and real `vaekit compress` files
beside classical lossless codecs on the same decoded pixels.

`cifar10-jpeg` is CIFAR-10 as a third party re-encoded it to JPEG: its bits/dim are NOT comparable
with published CIFAR-10 numbers (JPEG removed fine detail); every number here is on that copy.
Each model trains for a wall-clock budget (steps planned from a timing run), then: the test -ELBO
in bits/dim on all 10,000 test images, and the test set coded with `vaekit compress` (uint8 array
(10000, 32, 32, 3) in, the same out, verified on the whole file, or with --verify-images N on a separate
file of the first N images: the codec runs one image at a time, ~10 images/s for these networks). Classical
codecs on the same pixels: PNG (one tiled image, optimize), WebP lossless (tiled, method 6), JPEG XL lossless
(`cjxl -d 0 -e 9`, when Debian's libjxl-tools is installed) and xz -9e on the raw bytes. A full run (all test
images) keeps each model's row in bench/cifar_rows.json, so `--only cifar` and `--only cifar-hvae` can run in
different sessions and still make one table, and writes that model's README grids:
docs/figures/<preset>-samples-t1.png and -t0.8.png (64 samples at temperature 1 and 0.8) and
<preset>-reconstructions.png (the first 32 test images above their reconstructions).

    .venv/bin/python bench/cifar.py --minutes 45 --only cifar-hvae --set train.precision=bf16   # one model
    .venv/bin/python bench/cifar.py --minutes 45            # both models in one go: ~2.5 hours with the codec
    .venv/bin/python bench/cifar.py --minutes 1 --test-images 200 --only cifar   # a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
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
from results import steps_per_second, update_section
from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.apps.images import save_grid, save_reconstructions
from vaekit.evaluation.evaluate import evaluate

OUT = Path(__file__).resolve().parent / "out"
ROWS = Path(__file__).resolve().parent / "cifar_rows.json"  # each model's row, kept across sessions
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
    """Training steps that fit `minutes`, from the second half of a 400-step timing run on the same data and
    settings (no evaluation counted: each epoch's evaluation of the test split adds wall time on top). The
    earlier planner timed 10 steps after 3 warm-ups and planned 45 minutes as 22.6 of steps."""
    rate = steps_per_second(preset, [*overrides, "train.compile=false"], steps=400)
    return max(30, int(minutes * 60 * rate))


def code(run: Path, pixels: np.ndarray, verify_images: int) -> dict[str, object]:
    """`vaekit compress` of all of `pixels`; the round trip decoded for the whole file, or for a separate file of
    the first `verify_images` images when that is fewer (the codec runs one image at a time: ~10 images/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/test.npy", pixels)
        t1 = time.perf_counter()
        stats = compress_file(run, f"{tmp}/test.npy", f"{tmp}/test.vkz")
        coded = time.perf_counter() - t1
        checked, file = pixels, f"{tmp}/test.vkz"
        if verify_images < len(pixels):
            checked, file = pixels[:verify_images], f"{tmp}/head.vkz"
            np.save(f"{tmp}/head.npy", checked)
            compress_file(run, f"{tmp}/head.npy", file)
        t2 = time.perf_counter()
        decompress_file(file, f"{tmp}/back.npy", run)
        decoded = time.perf_counter() - t2
        back = np.load(f"{tmp}/back.npy")
        exact = back.shape == checked.shape and back.dtype == np.uint8 and np.array_equal(back, checked)
    return {"file_bpd": stats["bits_per_dim"], "exact": bool(exact), "verified": len(checked),
            "encode_images_per_s": len(pixels) / coded, "decode_images_per_s": len(checked) / decoded}


def figures(model: vaekit.VAE, test: vaekit.Dataset, preset: str) -> None:
    """The README's grids: 64 samples at temperature 1 and 0.8, and 32 test images of every class (the split is
    sorted by class) above their reconstructions."""
    for temperature in (1.0, 0.8):
        images = model.sample(64, temperature=temperature, generator=torch.Generator().manual_seed(0))
        save_grid(images, FIGURES / f"{preset}-samples-t{temperature:g}.png", nrow=8)
    spread = test.subset(torch.arange(0, len(test), len(test) // 32)[:32])
    save_reconstructions(model, spread, 32, FIGURES / f"{preset}-reconstructions.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=45, help="training budget per model")
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--only", choices=["cifar", "cifar-hvae"], help="one model instead of both")
    parser.add_argument("--verify-images", type=int, help="decode a file of this many images instead of the "
                        "whole test file (default: the whole file)")
    parser.add_argument("--figures-only", action="store_true", help="with --reuse: write the README's grids "
                        "from the kept model and stop")
    parser.add_argument("--reuse", action="store_true", help="score and code the model a finished run of this "
                        "script left in bench/out/<preset>-jpeg instead of training again")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for both models (e.g. train.precision=bf16)")
    args = parser.parse_args()
    if args.figures_only and not args.reuse:
        parser.error("--figures-only draws from a kept model: add --reuse")
    if SHARED.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(SHARED))
    full = args.test_images == 10000
    test = vaekit.load_dataset("cifar10-jpeg", "test").subset(torch.arange(args.test_images))
    pixels = np.ascontiguousarray(test.images.permute(0, 2, 3, 1).numpy())  # (N, 32, 32, 3) uint8
    table = json.loads(ROWS.read_text()) if full and ROWS.exists() else {}
    for preset in [args.only] if args.only else ["cifar", "cifar-hvae"]:
        t0 = time.perf_counter()
        overrides = ["data.name=cifar10-jpeg", "train.tensorboard=false", "train.eval_batch_size=250", *args.set]
        run = OUT / f"{preset}-jpeg"
        if args.reuse:  # the model a finished run of this script left, and its training record
            trained = json.loads((run / "bench_train.json").read_text())
            model, scored = vaekit.VAE.from_pretrained(str(run)), None
        else:
            steps = steps_for(preset, args.minutes, overrides)
            if run.exists():
                shutil.rmtree(run)
            cfg = vaekit.load_config(preset, [*overrides, f"train.steps={steps}", "train.checkpoint_every=2000"])
            start = time.perf_counter()
            result = vaekit.train(cfg, run, quiet=True)
            model = result.model
            scored = result.test if full else None  # training ends by scoring the whole test split
            trained = {"steps": steps, "batch": cfg.train.batch_size,
                       "wall_train_minutes": (time.perf_counter() - start) / 60,
                       "minutes": steps * cfg.train.batch_size / result.examples_per_s / 60,
                       "examples_per_s": result.examples_per_s,
                       "train_command": f"bench/cifar.py --minutes {args.minutes:g} --only {preset}"
                                        + "".join(f" --set {s}" for s in args.set)}
            (run / "bench_train.json").write_text(json.dumps(trained))
        if full or args.figures_only:
            figures(model, test, preset)
        if args.figures_only:
            continue
        scored = scored or evaluate(model, test, batch_size=250)
        row = {**trained, "elbo_bpd": scored.bits_per_dim, **code(run, pixels, args.verify_images or len(pixels)),
               "command": trained["train_command"] + (" --reuse" if args.reuse else "")
                          + (f" --verify-images {args.verify_images}" if args.verify_images else ""),
               "wall_minutes": (time.perf_counter() - t0) / 60, "date": time.strftime("%Y-%m-%d")}
        table[preset] = row
        print(preset, row, flush=True)
        if full:
            ROWS.write_text(json.dumps(table, indent=1) + "\n")
    if args.figures_only:
        return
    table["classical"] = {"codecs": classical(pixels), "date": time.strftime("%Y-%m-%d")}
    if full:
        ROWS.write_text(json.dumps(table, indent=1) + "\n")
    update_section("cifar-jpeg" if full else "cifar-jpeg-smoke", render(table, args.test_images))
    print(render(table, args.test_images))


def render(table: dict[str, dict[str, object]], n: int) -> str:
    """One table: each model's row as its own run left it (bench/cifar_rows.json), then the classical codecs."""
    lines = [f"{NOTE}. Test split: the first {n:,} test images. Each model's row comes from its own run "
             "(command and date in the row; rows are kept in bench/cifar_rows.json, so the two models can be "
             "trained in different sessions); the classical codecs are from the newest run.", "",
             "| model / codec | test -ELBO (bits/dim) | file (bits/dim) | run |", "|---|---|---|---|"]
    for preset in ("cifar", "cifar-hvae"):
        r = table.get(preset)
        if r is None:
            lines.append(f"| `{preset}` | not run yet | | |")
            continue
        where = "the whole file" if r["verified"] == n else f"a file of the first {r['verified']:,}"
        check = f"round trip exact on {where}" if r["exact"] else "ROUND TRIP FAILED"
        lines.append(
            f"| `{preset}` ({r['steps']:,} steps of batch {r['batch']}, {r['minutes']:.1f} min of steps, "
            f"{r['wall_train_minutes']:.1f} with evaluations, "
            f"{r['examples_per_s']:,.0f} examples/s) | {r['elbo_bpd']:.3f} | {r['file_bpd']:.3f} ({check}; "
            f"{r['encode_images_per_s']:.1f} / {r['decode_images_per_s']:.1f} images/s) | "
            f"`.venv/bin/python {r['command']}` ({r['date']}) |")
    codecs = table.get("classical", {}).get("codecs", {})
    assert isinstance(codecs, dict)
    lines += [f"| {name} | | {bpd:.3f} | |" for name, bpd in codecs.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

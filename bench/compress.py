"""Lossless compression of the MNIST test set: vaekit (bits-back ANS) against classical codecs.

Two settings: binarized MNIST (the fixed-seed binarized test split) with a Bernoulli model (the
`burda` network; reuses bench/out/burda from bench/nll.py when present), and 8-bit MNIST with a
mixture-of-3-discretized-logistics model trained here. Each is compared with the model's own -ELBO in bits/dim
and with gzip, bz2, xz (stdlib) and PNG and WebP lossless (Pillow) on the same images.

    .venv/bin/python bench/compress.py --minutes 10
    .venv/bin/python bench/compress.py --minutes 40 --binarized-run bench/out/hvae --preset hvae   # hierarchical
    .venv/bin/python bench/compress.py --minutes 30 --binarized-run hvae-mnist --preset hvae       # a zoo model
    .venv/bin/python bench/compress.py --binarized-run bench/out/vamp-c90 --binarized-only       # one run's rows
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import math
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import vaekit
from results import update_section
from vaekit import zoo
from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.evaluation.evaluate import evaluate

OUT = Path(__file__).resolve().parent / "out"


def classical(images: np.ndarray, binary: bool) -> dict[str, float]:
    """bits/dim of stdlib and Pillow codecs on the same (N, 28, 28) uint8 images."""
    dims = images.size
    raw = (images > 0).astype(np.uint8) if binary else images
    packed = np.packbits(raw.reshape(-1)).tobytes() if binary else raw.tobytes()
    out = {}
    for name, fn in (("gzip -9", lambda b: gzip.compress(b, 9)), ("bz2 -9", lambda b: bz2.compress(b, 9)),
                     ("xz -9e", lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME))):
        out[name] = 8 * len(fn(packed)) / dims
    side = math.ceil(math.sqrt(len(images)))
    canvas = np.zeros((side * 28, side * 28), dtype=np.uint8)  # one big tiled image: fairest to PNG/WebP
    for i, im in enumerate(images):
        r, c = divmod(i, side)
        canvas[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] = im
    pil = Image.fromarray(canvas).convert("1") if binary else Image.fromarray(canvas)
    for name, kwargs in (("PNG (tiled, optimize)", {"format": "PNG", "optimize": True}),
                         ("WebP lossless (tiled)", {"format": "WEBP", "lossless": True, "quality": 100, "method": 6})):
        buffer = io.BytesIO()
        (pil.convert("L") if name.startswith("WebP") else pil).save(buffer, **kwargs)
        out[name] = 8 * len(buffer.getvalue()) / dims
    return out


EIGHT_BIT = {  # the 8-bit model per --preset: a mixture of 3 discretized logistics per pixel on MNIST grey levels
    "mlp": ["model.likelihood=logistic-mixture", "model.mixture_components=3", "model.hidden=[500, 500]",
            "model.latent_dim=32", "train.batch_size=128", "optim.lr_schedule=cosine", "optim.min_lr_ratio=0.02",
            "train.tensorboard=false"],
    "hvae": ["data.name=mnist", "model.likelihood=logistic-mixture", "model.mixture_components=3",
             "train.tensorboard=false"],
}


def train_8bit(minutes: float, preset: str) -> Path:
    run = OUT / ("logmix" if preset == "mlp" else f"logmix-{preset}")
    overrides = EIGHT_BIT[preset]
    probe = vaekit.load_config(preset, [*overrides, "train.steps=300", "train.log_every=300"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        vaekit.train(probe, f"{tmp}/r", quiet=True)
        per_step = (time.perf_counter() - t0) / 300
    steps_per_epoch = math.ceil(60000 / probe.train.batch_size)
    epochs = max(1, int(0.85 * minutes * 60 / per_step / steps_per_epoch))
    if run.exists():
        import shutil

        shutil.rmtree(run)
    vaekit.train(vaekit.load_config(preset, [*overrides, f"train.epochs={epochs}"]), run, quiet=True)
    return run


def measure(run: Path, images: np.ndarray, data: vaekit.Dataset, label: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", images)
        t0 = time.perf_counter()
        stats = compress_file(run, f"{tmp}/x.npy", f"{tmp}/x.vkz")
        t_enc = time.perf_counter() - t0
        t0 = time.perf_counter()
        decompress_file(f"{tmp}/x.vkz", f"{tmp}/y.npy", run)
        t_dec = time.perf_counter() - t0
        assert np.array_equal(np.load(f"{tmp}/y.npy"), images), "round trip failed"
    model = vaekit.VAE.from_pretrained(str(run))
    elbo = evaluate(model, data, batch_size=500)
    codecs = classical(images[:, 0], binary=label.startswith("binarized"))
    best = min(codecs.values())
    gap = stats["bits_per_dim"] / elbo.bits_per_dim - 1
    rows = [f"| {label} | **vaekit (bits-back ANS)** | **{stats['bits_per_dim']:.4f}** | "
            f"{len(images) / t_enc:.0f} / {len(images) / t_dec:.0f} |",
            f"| {label} | model -ELBO (what the code should reach) | {elbo.bits_per_dim:.4f} | |"]
    rows += [f"| {label} | {name} | {bpd:.4f} | |" for name, bpd in codecs.items()]
    note = (f"{label}: code length {gap:+.2%} against the -ELBO (file header and ANS seed included); "
            f"{'better' if stats['bits_per_dim'] < best else 'not better'} than every classical codec "
            f"(best: {best:.4f}).")
    return [*rows, "NOTE " + note]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="training budget of each model trained here")
    parser.add_argument("--binarized-run", type=Path, default=OUT / "burda",
                        help="the run (or zoo name) that codes binarized MNIST (default: bench/nll.py's burda run, "
                        "or 20 epochs)")
    parser.add_argument("--preset", choices=list(EIGHT_BIT), default="mlp",
                        help="the 8-bit model's preset (hvae: the hierarchical rows, section compress-hvae)")
    parser.add_argument("--eight-bit-run", type=Path, help="code with this finished 8-bit run instead of training "
                        "one (e.g. the bench/out/logmix-hvae an earlier run of this script left)")
    parser.add_argument("--binarized-only", action="store_true", help="code binarized MNIST with --binarized-run "
                        "and stop (section compress-RUN, no 8-bit model)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    binarized = vaekit.load_dataset("binarized-mnist", "test")
    run = args.binarized_run
    if not (run / "model" / "config.json").is_file() and str(run) not in zoo.names():
        if run != OUT / "burda":
            raise SystemExit(f"{run} holds no trained model (model/config.json) and is no zoo name")
        cfg = vaekit.load_config("burda", ["train.epochs=20", "train.tensorboard=false"])
        vaekit.train(cfg, run, quiet=True)
    rows = measure(run, binarized.images.numpy(), binarized, "binarized")

    def minutes() -> str:
        return f"{(time.perf_counter() - t0) / 60:.0f} min, {time.strftime('%Y-%m-%d')}"

    if args.binarized_only:
        write(f"compress-{run.name}", rows, f"`.venv/bin/python bench/compress.py --binarized-run {run} "
              f"--binarized-only` ({minutes()}). The fixed-seed binarized test split (10,000 images), bits/dim over "
              f"784 pixels per image, whole files. Model: `{run.name}`. Target: binarized <= 0.160.")
        return
    mnist = vaekit.load_dataset("mnist", "test")
    eight_bit = args.eight_bit_run or train_8bit(args.minutes, args.preset)
    rows += measure(eight_bit, mnist.images.numpy(), mnist, "8-bit")
    flags = f"--minutes {args.minutes:g}"
    flags += f" --binarized-run {run}" if run != OUT / "burda" else ""
    flags += f" --preset {args.preset}" if args.preset != "mlp" else ""
    flags += f" --eight-bit-run {args.eight_bit_run}" if args.eight_bit_run else ""
    targets = ("Targets: binarized <= 0.17, 8-bit <= 1.35 (published BB-ANS: 0.19 and 1.41)." if args.preset == "mlp"
               else "Targets: binarized <= 0.160, 8-bit <= 1.27 (Bit-Swap's published 8-bit figure).")
    write("compress" if args.preset == "mlp" else f"compress-{args.preset}", rows,
          f"`.venv/bin/python bench/compress.py {flags}` ({minutes()}). All 10,000 MNIST test images; "
          "binarized = the fixed-seed binarized test split. bits/dim over 784 pixels per image, whole files. "
          f"Binarized model: `{run.name}`; 8-bit model: `{args.preset}` with a mixture of 3 discretized logistics. "
          + targets)


def write(section: str, rows: list[str], command: str) -> None:
    """The section's command line, its table of `measure` rows and their notes, in RESULTS.md and on stdout."""
    notes = [r[5:] for r in rows if r.startswith("NOTE ")]
    table = [r for r in rows if not r.startswith("NOTE ")]
    body = "\n".join([f"Command: {command}", "", "| data | method | bits/dim | compress / decompress images/s |",
                      "|---|---|---|---|", *table, "", *[f"- {n}" for n in notes]])
    update_section(section, body)
    print(body)


if __name__ == "__main__":
    main()

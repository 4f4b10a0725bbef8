"""Bits-back latent codes: container version 1 (equal prior mass, a (D, 4096) table per image) against version 2
(equal-width buckets, q and p as constriction's QuantizedGaussian), same images, same models, one process.

Rows: the zoo's `burda-mnist` (one group, 50 latents) and `hvae-mnist` (two groups, 150 latents) on the
fixed-seed binarized MNIST test split, bits/dim of what images 101..N add to the stream (the first 100 pay
BB-ANS's initial bits), encode and decode images/s on one thread (the codec's setting); then the colour
presets' networks at their initial weights (`cifar`: 128 latents; `cifar-hvae`: 5,376 latents over six
groups) on random 32x32 RGB images, for speed only (an untrained model's rate means nothing).

    .venv/bin/python bench/latent_codes.py --images 1000      # ~3 min
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import vaekit
from results import update_section
from vaekit.apps.compress import bbans


def timed(model: vaekit.VAE, images: np.ndarray, kind: int, version: int) -> tuple[np.ndarray, float, float]:
    t0 = time.perf_counter()
    words = bbans.encode_images(model, images, kind, version=version)
    t1 = time.perf_counter()
    back = bbans.decode_images(model, words, kind, images.shape, version)
    t2 = time.perf_counter()
    assert np.array_equal(back, images), "round trip failed"
    return words, len(images) / (t1 - t0), len(images) / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="binarized test images per zoo model")
    parser.add_argument("--colour-images", type=int, default=16)
    args = parser.parse_args()
    t0 = time.perf_counter()
    test = vaekit.load_dataset("binarized-mnist", "test")
    images = (test.batch(torch.arange(args.images)).numpy() > 0.5).astype(np.uint8)
    lines = ["| model | latents | version | bits/dim (images 101..N) | encode images/s | decode images/s |",
             "|---|---|---|---|---|---|"]
    for name in ("burda-mnist", "hvae-mnist"):
        model = vaekit.VAE.from_pretrained(name)
        for version in (1, 2):
            words, enc, dec = timed(model, images, bbans.KIND_BINARY, version)
            head = bbans.encode_images(model, images[:100], bbans.KIND_BINARY, version=version)
            bpd = (words.size - head.size) * 32 / ((args.images - 100) * 784)
            lines.append(f"| `{name}` | {model.latent_dim} | {version} | {bpd:.4f} | {enc:,.0f} | {dec:,.0f} |")
            print(lines[-1], flush=True)
    colour = np.random.default_rng(0).integers(0, 256, (args.colour_images, 3, 32, 32), dtype=np.uint8)
    for preset in ("cifar", "cifar-hvae"):
        torch.manual_seed(0)
        model = vaekit.VAE(vaekit.load_config(preset, ["model.input_shape=[3,32,32]"]).model).eval()
        for version in (1, 2):
            _, enc, dec = timed(model, colour, bbans.KIND_8BIT, version)
            lines.append(f"| `{preset}` (initial weights, random images) | {model.latent_dim} | {version} | | "
                         f"{enc:.1f} | {dec:.1f} |")
            print(lines[-1], flush=True)
    body = "\n".join([
        f"Command: `.venv/bin/python bench/latent_codes.py --images {args.images} --colour-images "
        f"{args.colour_images}` ({(time.perf_counter() - t0) / 60:.1f} min, {time.strftime('%Y-%m-%d')}). "
        "Round trips checked; one thread, one image at a time, as `vaekit compress` runs.", "", *lines])
    update_section("latent-codes", body)
    print(body)


if __name__ == "__main__":
    main()

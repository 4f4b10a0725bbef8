"""The README's sampler figure: one zoo model's samples from its prior and from its fitted GMM, side by side.

    .venv/bin/python bench/sampler_figure.py --model mlp-mnist -o docs/figures/samplers-mlp-mnist.png

Both grids use the same noise seed; the GMM is the one shipped with the zoo model (bench/zoo_samplers.py), else
one fitted here on the model's training split.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from vaekit.apps.images import grid
from vaekit.apps.samplers import draw_images, load_sampler
from vaekit.models.vae import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp-mnist")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--sampler", default="gmm")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    model = load_model(args.model).eval()
    sampler = load_sampler(args.model, args.sampler)
    assert sampler is not None
    prior = model.sample(args.n, generator=torch.Generator().manual_seed(0))
    fitted = draw_images(model, args.n, sampler, torch.Generator().manual_seed(0))
    left, right = grid(prior), grid(fitted)
    gap = np.full((left.shape[0], 12, *left.shape[2:]), 255, dtype=left.dtype)
    Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(args.output)
    print(f"wrote {args.output}: left {args.model} prior, right its {args.sampler} sampler")


if __name__ == "__main__":
    main()

"""Fit the ex-post samplers (gmm, two-stage) of every unconditional zoo model and ship them beside its weights.

Each sampler is fitted on the posterior means of the model's own training split (`vaekit fit-sampler`'s function;
encoded once per model, so fit_seconds excludes the encoding) and written into
src/vaekit/pretrained/NAME/sampler-SAMPLER.safetensors; the card gains a `samplers` entry with the sampler's
settings and fit summary. Conditional models are skipped (they sample per class from their prior), and so
are models with more than MAX_DIMS latent dimensions.

    VAEKIT_DATA=../shared/data .venv/bin/python bench/zoo_samplers.py                  # every model, both samplers
    VAEKIT_DATA=../shared/data .venv/bin/python bench/zoo_samplers.py --only mlp-mnist --samplers gmm
"""

from __future__ import annotations

import argparse
import json
import time

from torch import Tensor

from vaekit import zoo
from vaekit.apps.samplers import fit_sampler, sampler_latents, save_sampler
from vaekit.config import load_config
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.models.base import BaseVAE
from vaekit.models.vae import load_model
from vaekit.storage import atomic_write_bytes

MAX_DIMS = 200  # larger flat latents (the conv hierarchies') would ship megabytes of covariance; see docs/quality.md


def training_split(name: str) -> Dataset:
    data = load_config(str(zoo.folder(name) / "config.yaml")).data
    return load_dataset(data.name, "train", data.data_dir, data.val_size, data.val_seed, channels=data.channels,
                        image_size=data.image_size)


def fit_one(name: str, model: BaseVAE, train: Dataset, latents: tuple[Tensor, str], sampler: str) -> dict[str, object]:
    """Fit `sampler` on the model's encoded training split, ship it, and record it in the card."""
    folder = zoo.folder(name)
    started = time.perf_counter()
    fitted = fit_sampler(model, train, sampler, latents)
    path = save_sampler(fitted, name)
    info = {**fitted.info, "fit_seconds": round(time.perf_counter() - started, 1),
            "command": f"vaekit fit-sampler {name} --sampler {sampler}", "bytes": path.stat().st_size}
    card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    card.setdefault("samplers", {})[sampler] = info
    atomic_write_bytes(folder / "card.json", (json.dumps(card, indent=2) + "\n").encode())
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="zoo names (default: every unconditional model)")
    parser.add_argument("--samplers", nargs="+", default=["gmm", "two-stage"])
    args = parser.parse_args()
    for name in args.only or zoo.names():
        model = load_model(name)
        if model.num_classes or model.latent_dim > MAX_DIMS:
            print(f"{name}: skipped ({'conditional' if model.num_classes else f'{model.latent_dim} latent dims'})")
            continue
        train = training_split(name)
        latents = sampler_latents(model, train)  # encoded once for every sampler
        for sampler in args.samplers:
            info = fit_one(name, model, train, latents, sampler)
            print(f"{name} {sampler}: {info['fits']}, {info['fit_seconds']} s, {info['bytes']:,} bytes", flush=True)


if __name__ == "__main__":
    main()

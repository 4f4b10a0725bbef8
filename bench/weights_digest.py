"""Weights after N training steps of every shipped preset, eager and compiled, as sha256 digests.

A refactor of the training step must leave these unchanged (issue 40: "the presets' weights after N steps are
bit-identical before and after"). Run it before and after the change, on the same machine, and compare:

    .venv/bin/python bench/weights_digest.py --out bench/out/digests-before.json
    .venv/bin/python bench/weights_digest.py --out bench/out/digests-after.json --compare bench/out/digests-before.json

Each preset trains on a small array of its own shape (the first 512 MNIST training images, or 512 seeded colour
images 32x32 for the colour presets) so the digest depends on the code, not on the data files at hand. The digest is
that of the run's exported weights (the EMA's where the preset keeps one) and of its last checkpoint's live weights.
Digests are machine-specific (kernels differ between CPUs): compare two runs of one machine only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit.checkpoint import load_latest_checkpoint
from vaekit.config import preset_names
from vaekit.storage import read_safetensors, tensors_digest
from vaekit.training.players import players_state


def _data(folder: Path, colour: bool) -> str:
    path = folder / ("colour.npy" if colour else "grey.npy")
    if not path.exists():
        if colour:
            rng = np.random.default_rng(0)
            images = rng.integers(0, 256, size=(512, 3, 32, 32), dtype=np.uint8)
        else:
            images = vaekit.load_dataset("mnist", "train").images[:512].numpy()
        np.save(path, images)
    return str(path)


def digest(preset: str, steps: int, compiled: bool, folder: Path) -> dict[str, str]:
    cfg = vaekit.load_config(preset)
    colour = cfg.data.name.startswith("cifar")
    sets = [f"data.name={_data(folder, colour)}", f"train.steps={steps}", "train.epochs=1", "train.log_every=10",
            f"train.compile={'true' if compiled else 'false'}", "train.samples=4", "train.tensorboard=false"]
    if cfg.train.batch_size > 128:
        sets.append("train.batch_size=128")
    cfg = vaekit.load_config(preset, sets)
    run = folder / f"{preset}-{'compiled' if compiled else 'eager'}"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vaekit.train(cfg, run, quiet=True)
    exported, _ = read_safetensors(run / "model" / "model.safetensors")
    saved = load_latest_checkpoint(run / "checkpoints")
    assert saved is not None
    live = players_state(saved)["model"]["weights"]
    return {"exported": tensors_digest(exported), "live": tensors_digest(dict(live))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--presets", nargs="*", default=None, help="default: every shipped preset")
    parser.add_argument("--no-compiled", action="store_true", help="eager runs only")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, default=None, help="an earlier --out file to compare against")
    args = parser.parse_args()
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets or preset_names():
            for compiled in (False,) if args.no_compiled else (False, True):
                key = f"{preset}/{'compiled' if compiled else 'eager'}"
                results[key] = digest(preset, args.steps, compiled, Path(tmp))
                print(key, results[key]["live"][:16], results[key]["exported"][:16], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.compare is not None:
        before = json.loads(args.compare.read_text())
        same = [k for k in results if before.get(k) == results[k]]
        differ = [k for k in results if k in before and before[k] != results[k]]
        print(f"identical: {len(same)} of {len(results)}; differ: {', '.join(differ) or 'none'}")


if __name__ == "__main__":
    main()

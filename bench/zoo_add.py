"""Add a finished run to the model zoo (src/vaekit/pretrained/NAME/): fp16 weights, config, and a measured card.

The card's test numbers are measured here on the fp16 weights as shipped (loaded back into fp32), on the
test split of the data set the run trained on, so `tests/test_zoo.py` can reproduce them.

    .venv/bin/python bench/zoo_add.py bench/out/burda-elu60 burda-mnist --minutes 47.0 --nll-k 1000 \
        --command "bench/nll.py --preset burda --minutes 57 --tag elu60 --set model.activation=elu ..."
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import vaekit
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.base import save_model
from vaekit.zoo import PRETRAINED


def cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown processor"


def latent_fields(result: Any) -> dict[str, Any]:
    """The card's latent numbers: KL and active units per group, or for a VQ model the code part of its code
    length (-log p(codes) under the code prior) and the codebook's use (active units of code vectors mean nothing)."""
    if result.code_usage is None:
        return {"kl_per_group": result.kl_per_group, "active_per_group": result.active_per_group}
    return {"code_nats": round(result.kl, 4), "code_usage": round(result.code_usage, 5),
            "code_perplexity": round(result.code_perplexity or 0, 2),
            "two_part_code": "the -ELBO is the two-part code length -log p(codes) - log p(x | codes)"}


def add(run: Path, name: str, command: str, minutes: float, nll_k: int = 0, notes: str = "",
        test_images: int = 0) -> dict:
    """Put finished run `run` into the zoo as `name`, measuring its card on the shipped fp16 weights.

    `test_images` > 0 measures the card on the first that many test images (for a model whose full test split
    takes minutes to score, as the colour models do on this CPU); the card's `n` says so, and the zoo test
    scores the same images."""
    cfg = vaekit.load_config(run / "config.yaml")
    model = vaekit.VAE.from_pretrained(str(run))
    folder = PRETRAINED / name
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model.half(), tmp)
    shutil.copyfile(run / "config.yaml", tmp / "config.yaml")
    shipped = vaekit.VAE.from_pretrained(str(tmp))  # fp16 weights back in fp32 parameters, as users get them
    test = vaekit.load_dataset(cfg.data.name, "test")
    if 0 < test_images < len(test):
        test = test.subset(torch.arange(test_images))
    result = evaluate(shipped, test, batch_size=500, iw_samples=nll_k or None)
    card = {
        "name": name,
        "data": cfg.data.name,
        "split": result.split,
        "preset_command": command,
        "training_minutes": minutes,
        "machine": f"{os.cpu_count()}-core CPU ({cpu_name()}), torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "weights": "fp16 safetensors; the numbers below are measured on these weights",
        "test": {
            "n": result.n,
            "neg_elbo": round(result.neg_elbo, 4),
            "neg_elbo_se": round(result.neg_elbo_se, 4),
            "bits_per_dim": round(result.bits_per_dim, 5),
            "nll": round(result.nll, 4) if result.nll is not None else None,
            "nll_se": round(result.nll_se, 4) if result.nll_se is not None else None,
            "iw_samples": result.iw_samples,
            **latent_fields(result),
        },
        "notes": notes,
    }
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run directory")
    parser.add_argument("name", help="the zoo name, e.g. burda-mnist")
    parser.add_argument("--command", required=True, help="the command that trained it, for the card")
    parser.add_argument("--minutes", type=float, required=True, help="its training time, for the card")
    parser.add_argument("--nll-k", type=int, default=0, help="also measure the test NLL at this many samples")
    parser.add_argument("--notes", default="", help="anything a user should know (deviations from the preset)")
    parser.add_argument("--test-images", type=int, default=0, help="measure on the first N test images only")
    args = parser.parse_args()
    card = add(args.run, args.name, args.command, args.minutes, args.nll_k, args.notes, args.test_images)
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()

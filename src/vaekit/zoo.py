"""The model zoo: trained weights of the presets, shipped inside the package, each with a model card.

A zoo entry is a folder under `vaekit/pretrained/NAME/` holding what `VAE.from_pretrained` reads
(`config.json`, `model.safetensors` with the weights in fp16: half the size, and the card's numbers are
measured on exactly these weights), the run's resolved `config.yaml` (so commands know the data set it was
trained on) and `card.json`: data, command, training time, measured test numbers, date. Every command and
function that takes a run directory also takes a zoo name: `VAE.from_pretrained("burda-mnist")`,
`vaekit sample burda-mnist`. `vaekit zoo` lists them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError

PRETRAINED = Path(__file__).resolve().parent / "pretrained"


def names() -> list[str]:
    """The zoo's model names, sorted."""
    if not PRETRAINED.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED.iterdir() if (p / "card.json").is_file())


def folder(name: str) -> Path:
    """The folder of zoo model `name` (one-line error naming the zoo's models if there is none)."""
    if name not in names():
        raise VaekitError(f"no zoo model {name!r}; the zoo has: {', '.join(names()) or 'none'} (see `vaekit zoo`)")
    return PRETRAINED / name


def card(name: str) -> dict[str, Any]:
    """Zoo model `name`'s card, with its weights' size in bytes added (`bytes`)."""
    path = folder(name)
    entry: dict[str, Any] = json.loads((path / "card.json").read_text(encoding="utf-8"))
    entry["bytes"] = (path / "model.safetensors").stat().st_size
    return entry


def resolve(run: str | Path) -> Path:
    """A zoo name becomes its folder; anything else (a path, even one that does not exist) stays as given."""
    path = Path(run)
    if not path.exists() and str(run) in names():
        return PRETRAINED / str(run)
    return path

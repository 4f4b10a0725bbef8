"""Training checkpoints: atomic, pickle-free, verified (exported models are models/vae.py's).

Everything is safetensors (tensors) + JSON (structure), written through `vaekit.storage`. A
checkpoint is one safetensors file whose metadata holds the JSON skeleton of the training state and
a SHA-256 of the tensor payload, so a corrupt or truncated file is detected and the previous one is
used instead.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from vaekit.errors import CheckpointError
from vaekit.storage import read_safetensors, write_safetensors

CHECKPOINT_FORMAT = "vaekit-checkpoint/1"


# --- training checkpoints ------------------------------------------------------------------


def flatten_state(obj: Any, tensors: dict[str, Tensor], prefix: str = "") -> Any:
    """Replace tensors in a nested structure with references, collecting them in `tensors`.

    Dicts become [[key, value], ...] so integer keys (optimizer state) survive JSON.
    """
    if isinstance(obj, Tensor):
        key = prefix or "t"
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, tensors, f"{prefix}/{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, tensors, f"{prefix}/{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten_state(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def save_checkpoint(folder: str | Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `folder/step-XXXXXXXX.safetensors` atomically and drop all but the newest `keep`."""
    folder = Path(folder)
    tensors: dict[str, Tensor] = {}
    skeleton = flatten_state(state, tensors)
    path = folder / f"step-{step:08d}.safetensors"
    write_safetensors(path, tensors, {"format": CHECKPOINT_FORMAT, "state": json.dumps(skeleton)})
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    return sorted(folder.glob("step-*.safetensors")) if folder.is_dir() else []


def load_latest_checkpoint(
    folder: str | Path, accept: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any] | None:
    """The newest readable checkpoint's state; corrupt newer ones are skipped with a warning.

    `accept`: the newest one it accepts, else the oldest readable one (a loss rollback wants the last good state)."""
    oldest = None
    for path in reversed(list_checkpoints(folder)):
        try:
            tensors, metadata = read_safetensors(path)
            if metadata.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{str(path)!r} is not a vaekit training checkpoint")
            state = dict(unflatten_state(json.loads(metadata["state"]), tensors))
        except (CheckpointError, KeyError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping checkpoint {path.name}: {exc}; falling back to the previous one", stacklevel=2)
            continue
        if accept is None or accept(state):
            return state
        oldest = state
    return oldest

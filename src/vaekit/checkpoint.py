"""Atomic, pickle-free persistence: exported models and training checkpoints.

Everything is safetensors (tensors) + JSON (structure). A checkpoint is one safetensors file whose
metadata holds the JSON skeleton of the training state and a SHA-256 of the tensor payload, so a
corrupt or truncated file is detected and the previous one is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from vaekit.errors import CheckpointError, VaekitError

MODEL_FORMAT = "vaekit-model/1"
CHECKPOINT_FORMAT = "vaekit-checkpoint/1"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder, fsync, then rename over it.

    A crash or a full disk leaves either the old file or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise VaekitError(
            f"could not write {str(path)!r} ({exc.strerror or exc}); free disk space or choose another "
            "folder; the previous file is intact"
        ) from None
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_safetensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    meta = {**metadata, "sha256": tensors_digest(tensors)}
    atomic_write_bytes(path, safetensors.torch.save(tensors, metadata=meta))


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a file written by `write_safetensors`, its digest verified."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {str(path)!r} ({exc.strerror or exc})") from None
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        metadata = dict(header.get("__metadata__", {}))
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error types for every malformation
        raise CheckpointError(f"{str(path)!r} is truncated or not a safetensors file ({type(exc).__name__})") from None
    if metadata.get("sha256") != tensors_digest(tensors):
        raise CheckpointError(f"{str(path)!r} is corrupt: its tensors do not match the SHA-256 in its metadata")
    return tensors, metadata


# --- exported models -------------------------------------------------------------------------


def save_model(model: Any, folder: str | Path) -> None:
    """`folder/config.json` + `folder/model.safetensors`; the weights' hash ties the two together."""
    folder = Path(folder)
    state = {k: v for k, v in model.state_dict().items()}
    digest = tensors_digest({k: v.detach().contiguous().cpu() for k, v in state.items()})
    config = {"format": MODEL_FORMAT, "weights_sha256": digest, "model": _model_config_dict(model)}
    write_safetensors(folder / "model.safetensors", state, {"format": MODEL_FORMAT})
    atomic_write_bytes(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def _model_config_dict(model: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(model.cfg)


def load_model(folder: str | Path, map_location: str = "cpu") -> Any:
    from vaekit.config import Config
    from vaekit.models.vae import VAE

    folder = Path(folder)
    if (folder / "model").is_dir() and not (folder / "config.json").is_file():
        folder = folder / "model"  # a run directory
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"no model at {str(folder)!r}: config.json is missing; give a run directory or its model/ folder"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(config_path)!r} is not valid JSON ({exc}); re-export the model") from None
    if (
        not isinstance(config, dict)
        or config.get("format") != MODEL_FORMAT
        or not isinstance(config.get("model"), dict)
    ):
        raise CheckpointError(f"{str(config_path)!r} is not a vaekit model config (format {MODEL_FORMAT})")
    cfg = Config.from_dict({"model": config["model"]})
    tensors, _ = read_safetensors(folder / "model.safetensors")
    if config.get("weights_sha256") != tensors_digest(tensors):
        raise CheckpointError(
            f"{str(folder)!r}: model.safetensors does not belong to this config.json (weights hash differs)"
        )
    model = VAE(cfg.model)
    load_state(model, tensors, str(folder))
    return model.to(map_location)


def load_state(module: torch.nn.Module, tensors: dict[str, Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"shape of {wrong[0]} is {tuple(tensors[wrong[0]].shape)}, expected {tuple(expected[wrong[0]].shape)}"
        )
        raise CheckpointError(
            f"{source!r} holds weights of another architecture ({detail}); use the config it was trained with"
        )
    module.load_state_dict(tensors)


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


def load_latest_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint's state; corrupt newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(folder)):
        try:
            tensors, metadata = read_safetensors(path)
            if metadata.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{str(path)!r} is not a vaekit training checkpoint")
            return dict(unflatten_state(json.loads(metadata["state"]), tensors))
        except (CheckpointError, KeyError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping checkpoint {path.name}: {exc}; falling back to the previous one", stacklevel=2)
    return None


def replace_folder(src: Path, dst: Path) -> None:
    """Swap a finished temp folder into place, keeping the old one until the new one is there."""
    old = dst.with_name(dst.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old)

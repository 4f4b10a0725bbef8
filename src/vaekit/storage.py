"""Atomic, pickle-free files: temp file + fsync + rename, and safetensors with a SHA-256 of the payload.

The lowest layer of persistence: exported models (models/vae.py) and training checkpoints
(checkpoint.py) are both built on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from torch import Tensor

from vaekit.errors import CheckpointError, VaekitError


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
    atomic_write_bytes(path, canonical_header(safetensors.torch.save(tensors, metadata=meta)))


def canonical_header(data: bytes) -> bytes:
    """A safetensors file with its JSON header in one fixed order (metadata keys sorted, tensors by offset), so the
    same weights always give the same bytes: safetensors writes its metadata map in a per-process hash order."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    metadata = header.pop("__metadata__", None)
    ordered = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    ordered |= dict(sorted(header.items(), key=lambda item: (item[1]["data_offsets"], item[0])))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    if len(text) > size:  # never: the compact form is what safetensors writes; keep its bytes if it ever is not
        return data
    return data[:8] + text.ljust(size) + data[8 + size :]


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

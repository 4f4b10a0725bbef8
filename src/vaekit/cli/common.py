"""Helpers both command files use: loading a model, checking shapes, writing arrays."""

from __future__ import annotations

from typing import Any

from vaekit.errors import VaekitError


def load_model(run: str) -> Any:
    from vaekit.models.vae import VAE

    return VAE.from_pretrained(run)


def check_shape(model: Any, shape: tuple[int, int, int], name: str) -> None:
    if tuple(model.shape) != tuple(shape):
        raise VaekitError(f"data {name!r} has images of shape {shape} but the model expects {tuple(model.shape)}")


def save_npy(array: Any, path: str) -> None:
    import io

    import numpy as np

    from vaekit.storage import atomic_write_bytes

    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())

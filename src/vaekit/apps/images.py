"""Image grids as PNG (Pillow), written atomically."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from vaekit.storage import atomic_write_bytes

if TYPE_CHECKING:
    from vaekit.data.datasets import Dataset
    from vaekit.models.base import BaseVAE


def grid(images: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 image (rows*H, cols*W[, C]) with `pad` px gutters."""
    n, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    pixels = (images.detach().cpu().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    for i in range(n):
        r, col = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        out[top : top + h, left : left + w] = pixels[i]
    return out[..., 0] if c == 1 else out


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(grid(images, nrow)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def side_by_side(x: Tensor, x_hat: Tensor, per_row: int = 8) -> Tensor:
    """Interleave rows of inputs and reconstructions (B, C, H, W), B a multiple of `per_row`.

    Row 2i of the grid holds inputs, row 2i+1 their reconstructions.
    """
    if x.shape[0] % per_row:
        raise ValueError(f"{x.shape[0]} images do not fill rows of {per_row}")
    rows = x.view(-1, per_row, *x.shape[1:])  # (R, per_row, C, H, W)
    rows_hat = x_hat.view(-1, per_row, *x.shape[1:])
    return torch.stack([rows, rows_hat], dim=1).flatten(0, 2)  # (R, 2, per_row, ...) -> (2*B, ...)


def save_reconstructions(model: BaseVAE, data: Dataset, n: int, path: str | Path) -> tuple[Path, int]:
    """The first `n` images of `data` (rounded down to full rows of 8) above their reconstructions."""
    n = min(n, len(data))
    per_row = min(8, n)
    index = torch.arange(n - n % per_row)
    x = data.batch(index)
    y = data.labels[index] if model.num_classes and data.labels is not None else None
    return save_grid(side_by_side(x, model.reconstruct(x, y), per_row), path, nrow=per_row), int(x.shape[0])

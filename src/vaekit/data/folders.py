"""Folders of PNG/JPEG images: read all at once, or lazily by index in background threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder {str(folder)!r} holds no PNG or JPEG images")
    return files


def read_image(file: Path) -> np.ndarray:
    """One 8-bit image as (H, W) grey or (H, W, 3) colour uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            if img.mode not in ("1", "L", "P", "RGB", "RGBA", "LA"):
                raise DataError(f"{str(file)!r}: image mode {img.mode!r} is not 8-bit; convert it to 8-bit L or RGB")
            return np.asarray(img.convert("L" if img.mode in ("1", "L", "LA") else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{str(file)!r} is not a readable image ({exc}); remove or replace it") from None


def to_chw(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


class LazyImageFolder:
    """uint8 images (N, C, H, W) of a folder, read when indexed, by a pool of worker threads.

    Quacks like the in-memory tensor where `Dataset` needs it: `shape`, `dtype`, `dim()`, and
    `source[index]` -> a uint8 tensor (B, C, H, W). Only the first image is read up front.
    """

    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.files = image_files(folder)
        first = to_chw(read_image(self.files[0]))
        self.shape = torch.Size((len(self.files), *first.shape))
        self.dtype = torch.uint8
        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaekit-images")

    def dim(self) -> int:
        return 4

    def _read(self, i: int) -> np.ndarray:
        image = to_chw(read_image(self.files[i]))
        if image.shape != tuple(self.shape[1:]):
            raise DataError(
                f"{str(self.files[i])!r} is {image.shape}, unlike the folder's first image "
                f"{tuple(self.shape[1:])}; resize the images to one size"
            )
        return image

    def __getitem__(self, index: Tensor | int) -> Tensor:
        indices = [int(index)] if isinstance(index, int) or index.dim() == 0 else index.tolist()
        return torch.from_numpy(np.stack(list(self._pool.map(self._read, indices))))

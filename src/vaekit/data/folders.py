"""Folders of PNG/JPEG images: flat, or one subfolder per class; read all at once, or lazily by index.

Layouts (what torchvision's ImageFolder and most Kaggle sets use):
- flat: `folder/*.png`, no labels;
- class subfolders: `folder/<class>/**/*.jpg`, labels from the sorted class names;
- splits: `folder/train/...` and `folder/test/...` (and `val/`), each flat or by class; the folder
  then has a test split of its own.

Policy for mixed images: `size` (`data.image_size`) resizes each image's shorter side to S
(bicubic) and crops the centre S x S; without it, images of different sizes are refused naming
two of them. `channels` (`data.channels`) converts every image to grey (1) or RGB (3); without it a
folder with any colour image is read as RGB (grey images are converted: colour wins) and an
all-grey folder as grey. Alpha is dropped. A file that is not a readable 8-bit image names itself.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = ("train", "val", "test")


@dataclass(frozen=True)
class FolderListing:
    files: list[Path]
    labels: list[int] | None  # class index per file, None for a flat folder
    classes: list[str]


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def split_folders(folder: Path) -> dict[str, Path]:
    """{"train": ..., "test": ...} when `folder` is laid out by split, else {}."""
    subs = {p.name: p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else {}
    if "train" in subs and set(subs) <= set(SPLIT_FOLDERS) and not _images_in(folder, recursive=False):
        return {name: subs[name] for name in SPLIT_FOLDERS if name in subs}
    return {}


def list_images(folder: Path) -> FolderListing:
    """The image files of a flat folder or of a folder with one subfolder per class."""
    flat = _images_in(folder, recursive=False)
    if flat:
        return FolderListing(flat, None, [])
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        found = _images_in(folder / name, recursive=True)
        files += found
        labels += [index] * len(found)
    if not files:
        raise DataError(f"folder {str(folder)!r} holds no PNG or JPEG images, neither directly nor in class subfolders")
    return FolderListing(files, labels, classes)


def read_image(file: Path, channels: int | None = None, size: int | None = None) -> np.ndarray:
    """One 8-bit image as (H, W) grey or (H, W, 3) colour uint8, converted and resized as asked."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            if img.mode not in ("1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr"):
                raise DataError(f"{str(file)!r}: image mode {img.mode!r} is not 8-bit; convert it to 8-bit L or RGB")
            mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if img.mode in ("1", "L", "LA") else "RGB")
            out = img.convert(mode)
            return np.asarray(_resize_crop(out, size) if size is not None else out)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{str(file)!r} is not a readable image ({exc}); remove or replace it") from None


def _resize_crop(img: Any, size: int) -> Any:
    """A PIL image's shorter side to `size` (bicubic), then its centre size x size."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    img = img.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_chw(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def folder_channels(files: list[Path], channels: int | None) -> int:
    """The channel count the folder is read with: as asked, else 3 if any image is colour (colour wins)."""
    if channels is not None:
        return channels
    from PIL import Image, UnidentifiedImageError

    for file in files:
        try:
            with Image.open(file) as img:
                if img.mode not in ("1", "L", "LA"):
                    return 3
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{str(file)!r} is not a readable image ({exc}); remove or replace it") from None
    return 1


def load_folder(folder: Path, channels: int | None = None, size: int | None = None) -> tuple[np.ndarray, Tensor | None]:
    """All images of a folder as uint8 (N, C, H, W) and labels (N,) when it has class subfolders."""
    listing = list_images(folder)
    c = folder_channels(listing.files, channels)
    arrays = [to_chw(read_image(f, c, size)) for f in listing.files]
    first = arrays[0].shape
    for file, array in zip(listing.files, arrays, strict=True):
        if array.shape != first:
            raise DataError(
                f"images in {str(folder)!r} differ in size ({str(listing.files[0])!r} is {first[1]}x{first[2]}, "
                f"{str(file)!r} is {array.shape[1]}x{array.shape[2]}); set data.image_size to resize and crop them"
            )
    labels = torch.tensor(listing.labels, dtype=torch.long) if listing.labels is not None else None
    return np.stack(arrays), labels


class LazyImageFolder:
    """uint8 images (N, C, H, W) of a folder, read when indexed, by a pool of worker threads.

    Quacks like the in-memory tensor where `Dataset` needs it: `shape`, `dtype`, `dim()`, and
    `source[index]` -> a uint8 tensor (B, C, H, W). Only the first image is read up front.
    """

    def __init__(self, folder: Path, workers: int = 2, channels: int | None = None, size: int | None = None) -> None:
        listing = list_images(folder)
        self.files = listing.files
        self.labels = torch.tensor(listing.labels, dtype=torch.long) if listing.labels is not None else None
        c = channels if channels is not None else folder_channels(self.files[:50], None)
        self._reader: Callable[[Path], np.ndarray] = lambda f: to_chw(read_image(f, c, size))
        first = self._reader(self.files[0])
        self.shape = torch.Size((len(self.files), *first.shape))
        self.dtype = torch.uint8
        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vaekit-images")

    def dim(self) -> int:
        return 4

    def _read(self, i: int) -> np.ndarray:
        image = self._reader(self.files[i])
        if image.shape != tuple(self.shape[1:]):
            raise DataError(
                f"{str(self.files[i])!r} is {image.shape}, unlike the folder's first image "
                f"{tuple(self.shape[1:])}; set data.image_size to resize and crop the images to one size"
            )
        return image

    def __getitem__(self, index: Tensor | int) -> Tensor:
        indices = [int(index)] if isinstance(index, int) or index.dim() == 0 else index.tolist()
        return torch.from_numpy(np.stack(list(self._pool.map(self._read, indices))))

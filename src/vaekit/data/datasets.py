"""Data sets held in memory as one uint8 tensor (N, C, H, W); batches are drawn by index.

Built-in: `mnist`, `fashion-mnist` and their `binarized-` forms (dynamic binarization for
training, one fixed-seed draw for the test split). User data: a `.npy`/`.npz` array or a folder
of PNG/JPEG images. No per-sample Python and no PIL in the training loop.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.data import idx
from vaekit.data.folders import LazyImageFolder, image_files, read_image
from vaekit.errors import DataError

BINARIZED_TEST_SEED = 20160101  # the one fixed draw of a binarized test split; recorded in results

BUILTIN = {
    "mnist": idx.MNIST,
    "fashion-mnist": idx.FASHION_MNIST,
}
SPLITS = ("train", "test", "val")


@dataclass(frozen=True)
class Dataset:
    """An in-memory image set.

    images: (N, C, H, W) uint8 in [0, 255]; labels: (N,) int64 or None.
    binarize: "none" (pixels / 255), or "dynamic" (a fresh Bernoulli draw per batch).
    """

    name: str
    split: str
    images: Tensor
    labels: Tensor | None = None
    binarize: str = "none"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def dims(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images at `index` as float32 (B, C, H, W) in [0, 1] (binary if dynamically binarized)."""
        return self.convert(self.images[index], generator)

    def convert(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (B, C, H, W) as read from `images` -> the float32 batch the model sees."""
        x = raw.to(torch.float32).div_(255.0)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Tensor]:
        """Iterate over the whole set in batches; `generator` drives the order and binarization."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], generator)

    def subset(self, index: Tensor, split: str | None = None) -> Dataset:
        labels = self.labels[index] if self.labels is not None else None
        return replace(self, images=self.images[index], labels=labels, split=split or self.split)


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    val_size: int = 0,
    val_seed: int = 0,
    mmap: bool = False,
    lazy: bool = False,
) -> Dataset:
    """Load a data set by name (`mnist`, `binarized-mnist`, ...) or path (`.npy`, `.npz`, image folder).

    `split` is "train", "test" or "val". With `val_size > 0`, "train" and "val" are a fixed-seed
    partition of the training images; user arrays and folders have no test split. With `mmap`, a
    uint8 `.npy` is memory-mapped instead of read: batches page in only the images they index; with
    `lazy`, a folder of images is read by index, by background threads, instead of all at once.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    base, binarized = _parse_name(name)
    file_split = "test" if split == "test" else "train"
    labels: Tensor | None
    if base in BUILTIN:
        images, labels = idx.load_builtin(BUILTIN[base], file_split, data_dir)
    else:
        if split == "test":
            raise DataError(f"{name!r} is user data and has no test split; pass the test set as its own file")
        images, labels = load_user_data(Path(base), mmap, lazy)
    _check_images(images, name)
    data = Dataset(name=name, split=split, images=images, labels=labels)
    if split != "test" and val_size > 0:
        data = _carve_validation(data, split, val_size, val_seed)
    elif split == "val":
        raise DataError("split 'val' needs val_size > 0 (config key data.val_size)")
    if binarized:
        data = _binarize(data)
    return data


def list_datasets() -> list[dict[str, object]]:
    """Built-in data sets and where their files were found (None when they are not on disk)."""
    rows = []
    for name, spec in BUILTIN.items():
        folder = idx.find_folder(spec, None)
        for prefix in ("", "binarized-"):
            rows.append(
                {
                    "name": prefix + name,
                    "shape": [1, 28, 28],
                    "train": 60000,
                    "test": 10000,
                    "found": str(folder) if folder else None,
                }
            )
    return rows


def _parse_name(name: str) -> tuple[str, bool]:
    if name.startswith("binarized-"):
        base = name[len("binarized-") :]
        return base, True
    if name in BUILTIN or os.path.exists(name) or name.endswith((".npy", ".npz", ".gz", ".idx")) or os.sep in name:
        return name, False
    valid = ", ".join([*BUILTIN, *(f"binarized-{b}" for b in BUILTIN)])
    raise DataError(f"unknown data set {name!r}; valid: {valid}, a .npy/.npz file or a folder of images")


def _carve_validation(data: Dataset, split: str, val_size: int, val_seed: int) -> Dataset:
    if val_size >= len(data):
        raise DataError(f"data.val_size={val_size} leaves no training images (the set has {len(data)})")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(val_seed))
    index = order[:val_size] if split == "val" else order[val_size:]
    return data.subset(index.sort().values, split)


def _binarize(data: Dataset) -> Dataset:
    if data.split == "train":
        return replace(data, binarize="dynamic")
    # Held-out splits: one fixed-seed draw, so every evaluation scores the same binary images.
    gen = torch.Generator().manual_seed(BINARIZED_TEST_SEED)
    probs = data.images.to(torch.float32).div_(255.0)
    images = torch.bernoulli(probs, generator=gen).to(torch.uint8).mul_(255)
    return replace(data, images=images)


def _check_images(images: Tensor, name: str) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DataError(f"{name!r}: expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise DataError(f"{name!r} holds no images")


def load_user_data(path: Path, mmap: bool = False, lazy: bool = False) -> tuple[Tensor, Tensor | None]:
    """A `.npy`/`.npz` array, an IDX images file or a folder of images as uint8 (N, C, H, W), labels if any."""
    if not path.exists():
        raise DataError(f"data file or folder {str(path)!r} not found; check the path")
    if path.is_dir() and lazy:
        return LazyImageFolder(path), None  # type: ignore[return-value]  # indexes like a uint8 tensor
    if path.is_dir():
        return _load_image_folder(path), None
    if path.suffix == ".npy" and mmap:
        return _memory_map(path), None
    if path.suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{str(path)!r} is not a readable .npy array ({exc}); re-save it with numpy.save") from None
        return array_to_images(array, str(path)), None
    if path.suffix == ".npz":
        return _load_npz(path)
    if path.suffix in (".gz", ".idx") or "-idx" in path.name:
        array = idx.read_idx(path)  # an images file, e.g. t10k-images-idx3-ubyte.gz
        if array.ndim != 3:
            raise DataError(f"{str(path)!r} holds an IDX array of shape {array.shape}, not images (N, H, W)")
        return array_to_images(array, str(path)), None
    raise DataError(f"{str(path)!r}: unsupported data file; use .npy, .npz, an IDX file or a folder of PNG/JPEG images")


def _load_npz(path: Path) -> tuple[Tensor, Tensor | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{str(path)!r} is not a readable .npz archive ({exc}); re-save it with numpy.savez") from None
    key = next((k for k in ("x", "images", "arr_0") if k in arrays), None)
    if key is None:
        raise DataError(
            f"{str(path)!r} has no array named 'x', 'images' or 'arr_0' (found: {', '.join(arrays) or 'none'})"
        )
    images = array_to_images(arrays[key], str(path))
    labels_np = arrays.get("y", arrays.get("labels"))
    labels = None
    if labels_np is not None:
        if labels_np.shape != (images.shape[0],):
            raise DataError(
                f"{str(path)!r}: labels have shape {labels_np.shape} but there are {images.shape[0]} images"
            )
        labels = torch.from_numpy(labels_np.astype(np.int64))
    return images, labels


def array_to_images(array: np.ndarray, name: str) -> Tensor:
    """Accept (N, H, W), (N, H, W, C) with C in 1/3/4 or (N, C, H, W); uint8, or floats in [0, 1]."""
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{name!r}: array of dtype {array.dtype} is not numeric image data")
    if array.ndim == 3:
        array = array[:, None]
    elif (
        array.ndim == 4
        and array.shape[-1] in (1, 3, 4)
        and (array.shape[1] not in (1, 3, 4) or array.shape[-1] < array.shape[1])
    ):  # channels last (N, H, W, C)
        array = np.moveaxis(array, -1, 1)
    elif array.ndim != 4:
        raise DataError(
            f"{name!r}: array of shape {array.shape} is not images; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    if array.shape[0] == 0:
        raise DataError(f"{name!r} holds no images")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{name!r} contains NaN or infinite values; clean the array before training")
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{name!r}: values span [{values.min():g}, {values.max():g}]; use uint8 or floats in [0, 1]")
    if values.max() <= 1.0 and not np.issubdtype(array.dtype, np.integer):
        values = values * 255.0
    return torch.from_numpy(np.rint(values).astype(np.uint8))


def _load_image_folder(folder: Path) -> Tensor:
    arrays = [read_image(f) for f in image_files(folder)]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images in {str(folder)!r} differ in size ({sorted(shapes)[:3]}); resize them to one size")
    return array_to_images(np.stack(arrays), str(folder))


def _memory_map(path: Path) -> Tensor:
    """A uint8 (N, H, W) or (N, C, H, W) `.npy` as a tensor over a copy-on-write memory map (no read)."""
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{str(path)!r} is not a readable .npy array ({exc}); re-save it with numpy.save") from None
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[0] == 0:
        raise DataError(
            f"{str(path)!r}: memory-mapped data must be non-empty uint8 (N, H, W) or (N, C, H, W), "
            f"got {array.dtype} {array.shape}; convert it, or set data.mmap=false"
        )
    return torch.from_numpy(array if array.ndim == 4 else array[:, None])

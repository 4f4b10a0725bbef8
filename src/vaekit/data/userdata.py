"""User data read from files: a `.npy` / `.npz` array (its labels and generative factors), an IDX images file (and its
labels file beside it), or a folder of images, as uint8 (N, C, H, W) tensors with one-line errors for bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.data import idx
from vaekit.data.folders import LazyImageFolder, load_folder
from vaekit.errors import DataError


def load_user_data(
    path: Path, mmap: bool = False, lazy: bool = False, channels: int | None = None, image_size: int | None = None
) -> tuple[Tensor, Tensor | None]:
    """A `.npy`/`.npz` array, an IDX images file or a folder of images as uint8 (N, C, H, W), labels if any."""
    if not path.exists():
        raise DataError(f"data file or folder {str(path)!r} not found; check the path")
    if path.is_dir() and lazy:
        lazy_folder = LazyImageFolder(path, channels=channels, size=image_size)
        return lazy_folder, lazy_folder.labels  # type: ignore[return-value]  # indexes like a uint8 tensor
    if path.is_dir():
        array, labels = load_folder(path, channels, image_size)
        return array_to_images(array, str(path)), labels
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
        return array_to_images(array, str(path)), _idx_labels(path, array.shape[0])
    raise DataError(f"{str(path)!r}: unsupported data file; use .npy, .npz, an IDX file or a folder of PNG/JPEG images")


def _idx_labels(images: Path, n: int) -> Tensor | None:
    """The labels beside an IDX images file (`X-images-idx3-ubyte[.gz]` -> `X-labels-idx1-ubyte[.gz]`), if any."""
    path = images.with_name(images.name.replace("images-idx3", "labels-idx1"))
    if path == images or not path.exists():
        return None
    labels = idx.read_idx(path)
    if labels.shape != (n,):
        raise DataError(f"{str(path)!r} holds labels of shape {labels.shape} for {n} images in {str(images)!r}")
    return torch.from_numpy(labels.astype(np.int64))


def npz_factors(path: Path, n: int) -> Tensor | None:
    """An .npz's generative factors' classes (N, K), from a 'factors' or 'latents_classes' array, if it has one."""
    with np.load(path, allow_pickle=False) as archive:
        key = next((k for k in ("factors", "latents_classes") if k in archive.files), None)
        if key is None:
            return None
        factors = archive[key]
    if factors.ndim != 2 or factors.shape[0] != n or not np.issubdtype(factors.dtype, np.integer):
        raise DataError(f"{str(path)!r}: {key!r} must be integer classes (N, K) for its {n} images, got "
                        f"{factors.dtype} {factors.shape}")
    return torch.from_numpy(factors.astype(np.int64))


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
        array = np.ascontiguousarray(array)
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{name!r} contains NaN or infinite values; clean the array before training")
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{name!r}: values span [{values.min():g}, {values.max():g}]; use uint8 or floats in [0, 1]")
    if values.max() <= 1.0 and not np.issubdtype(array.dtype, np.integer):
        values = values * 255.0
    return torch.from_numpy(np.rint(values).astype(np.uint8))


def load_image_folder(folder: Path, channels: int | None = None, image_size: int | None = None) -> Tensor:
    """All images of a folder as uint8 (N, C, H, W) (data/folders.py's policy for sizes and modes)."""
    array, _ = load_folder(folder, channels, image_size)
    return array_to_images(array, str(folder))


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

"""CIFAR-10 (Krizhevsky 2009): the original python-version tarball, and the `cifar10-jpeg` copy.

`cifar10` reads `cifar-10-python.tar.gz` (MD5 c58f30108f718f92721af3b95e74349a: `data_batch_1..5`
and `test_batch` in `cifar-10-batches-py/`) from the usual look-up folders, or downloads it. Each
batch is a pickled dict of a uint8 array (10000, 3072: R, G, B planes of 32 x 32) and a list of
labels. Pickle can run code, so batches are read by an unpickler that admits nothing but
numpy's array reconstruction (the same idea as torch.load(weights_only=True)); anything else in
the file is refused.

`cifar10-jpeg` reads `cifar10-jpeg.tar.gz` (MD5 163cd5da1dd51a584b3b25feb328d988: CIFAR-10 as a
third party re-encoded it to JPEG, `train/<class>/NNNN.jpg`, `test/<class>/...`), decodes it once
with Pillow and keeps the uint8 arrays in the cache folder (`$XDG_CACHE_HOME/vaekit/cifar10-jpeg`),
keyed by the tarball's MD5. Its bits/dim are NOT comparable with published CIFAR-10 numbers (JPEG
removed fine detail): every number measured on it says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle  # restricted: _ArraysOnly admits numpy array reconstruction only
import tarfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from vaekit.data import idx
from vaekit.errors import DataError
from vaekit.storage import atomic_write_bytes

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_FILE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
JPEG_FILE = "cifar10-jpeg.tar.gz"
JPEG_MD5 = "163cd5da1dd51a584b3b25feb328d988"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays; refuses every other global (no code runs)."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how a protocol-2 pickle written by Python 3 carries bytes: str -> bytes, no code
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never does")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def find(name: str, filename: str, data_dir: str | Path | None) -> Path | None:
    for folder in idx.search_folders_for(name, data_dir):
        if (folder / filename).is_file():
            return folder / filename
    return None


def _locate(name: str, filename: str, data_dir: str | Path | None, url: str | None, md5: str) -> Path:
    path = find(name, filename, data_dir)
    if path is not None:
        return path
    where = " or ".join(str(p) for p in idx.search_folders_for(name, data_dir))
    if url is None or data_dir is not None or os.environ.get("VAEKIT_OFFLINE"):
        raise DataError(f"{name} not found; put {filename} in {where}")
    target = idx.cache_folder_for(name)
    target.mkdir(parents=True, exist_ok=True)
    try:
        idx.fetch(url, target / filename, md5)
    except (OSError, DataError) as exc:
        raise DataError(f"{name} not found locally and download failed ({exc}); put {filename} in {where}") from None
    return target / filename


def _check_md5(path: Path, md5: str) -> None:
    actual = _md5(path)
    if actual != md5:
        raise DataError(
            f"{str(path)!r} fails its checksum (MD5 {actual}, should be {md5}); delete it and fetch it again"
        )


def load_cifar10(split: str, data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of the original CIFAR-10 `split`."""
    path = _locate("cifar10", CIFAR10_FILE, data_dir, CIFAR10_URL, CIFAR10_MD5)
    _check_md5(path, CIFAR10_MD5)
    images, labels = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for batch in BATCHES[split]:
                if batch not in members:
                    raise DataError(f"{str(path)!r} has no {batch}; it is not the CIFAR-10 python tarball")
                f = tar.extractfile(members[batch])
                assert f is not None
                entry = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
                data, batch_labels = entry[b"data"], entry[b"labels"]
                if (
                    not isinstance(data, np.ndarray)
                    or data.dtype != np.uint8
                    or data.ndim != 2
                    or data.shape[1] != 3072
                ):
                    raise DataError(f"{str(path)!r}: {batch} holds no uint8 (N, 3072) image array")
                if len(batch_labels) != data.shape[0]:
                    raise DataError(f"{str(path)!r}: {batch} has {data.shape[0]} images but {len(batch_labels)} labels")
                images.append(data.reshape(-1, 3, 32, 32))  # rows: 1024 R, 1024 G, 1024 B values, row-major
                labels.append(np.asarray(batch_labels, dtype=np.int64))
    except (tarfile.TarError, EOFError, OSError, zlib.error, pickle.UnpicklingError, KeyError, TypeError) as exc:
        raise DataError(f"{str(path)!r} is truncated or not the CIFAR-10 python tarball ({exc})") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar10_jpeg(split: str, data_dir: str | Path | None = None) -> tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) of the JPEG copy's `split`, decoded once and cached."""
    path = _locate("cifar10-jpeg", JPEG_FILE, data_dir, None, JPEG_MD5)
    _check_md5(path, JPEG_MD5)  # 20 MB: a tenth of a second
    cache = idx.cache_folder_for("cifar10-jpeg") / f"decoded-{split}-{JPEG_MD5[:12]}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as archive:
                return torch.from_numpy(archive["images"]), torch.from_numpy(archive["labels"])
        except (OSError, ValueError, KeyError, zlib.error):
            pass  # a damaged cache is decoded again
    images, labels = _decode_jpeg_tar(path, split)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, labels=labels)
    with contextlib.suppress(Exception):  # an unwritable cache only costs the decoding next time
        atomic_write_bytes(cache, buffer.getvalue())
    return torch.from_numpy(images), torch.from_numpy(labels)


def _decode_jpeg_tar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    found: list[tuple[int, str, tarfile.TarInfo]] = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 3 and parts[-3] == split and parts[-2] in CLASSES:
                found.append((CLASSES.index(parts[-2]), parts[-1], m))
        found.sort(key=lambda t: (t[0], t[1]))  # classes in CIFAR-10's order, files by name
        images = np.empty((len(found), 32, 32, 3), dtype=np.uint8)
        for i, (_, _name, member) in enumerate(found):
            f = tar.extractfile(member)
            assert f is not None
            try:
                with Image.open(io.BytesIO(f.read())) as img:
                    images[i] = np.asarray(img.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"{str(path)!r}: {member.name} is not a readable 32x32 image ({exc})") from None
    if not found:
        raise DataError(f"{str(path)!r} holds no {split}/<class>/*.jpg images; it is not the cifar10-jpeg tarball")
    labels = np.asarray([t[0] for t in found], dtype=np.int64)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), labels

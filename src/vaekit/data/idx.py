"""Gzip IDX files (MNIST, Fashion-MNIST): look-up, content checksums, download for users."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import DataError

REPO_DATA = Path(__file__).resolve().parents[3] / "data"  # the repo's own copy (editable install)
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class IdxFile:
    name: str  # file name on disk, e.g. train-images-idx3-ubyte.gz
    content_md5: str  # MD5 of the uncompressed bytes (re-gzipped copies keep this one)
    gz_md5: str  # MD5 of the upstream .gz, checked after a download


@dataclass(frozen=True)
class IdxSpec:
    name: str
    mirrors: tuple[str, ...]
    files: dict[str, tuple[IdxFile, IdxFile]]  # split -> (images, labels)


MNIST = IdxSpec(
    name="mnist",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://yann.lecun.com/exdb/mnist/"),
    files={
        "train": (
            IdxFile(
                "train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"
            ),
            IdxFile(
                "train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"
            ),
        ),
        "test": (
            IdxFile(
                "t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"
            ),
        ),
    },
)
FASHION_MNIST = IdxSpec(
    name="fashion-mnist",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    files={
        "train": (
            IdxFile(
                "train-images-idx3-ubyte.gz", "f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
            ),
            IdxFile(
                "train-labels-idx1-ubyte.gz", "9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"
            ),
        ),
        "test": (
            IdxFile(
                "t10k-images-idx3-ubyte.gz", "8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"
            ),
            IdxFile(
                "t10k-labels-idx1-ubyte.gz", "15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"
            ),
        ),
    },
)


def search_folders(spec: IdxSpec, data_dir: str | Path | None) -> list[Path]:
    """Where a built-in set's files are looked for, in order (DESIGN.md, "Data")."""
    return search_folders_for(spec.name, data_dir)


def search_folders_for(name: str, data_dir: str | Path | None) -> list[Path]:
    """--data-dir alone when given; else $VAEKIT_DATA/<name>, the repo's data/<name>, the cache, /usr/share/datasets."""
    if data_dir is not None:
        return [Path(data_dir)]
    folders = []
    if os.environ.get("VAEKIT_DATA"):
        folders.append(Path(os.environ["VAEKIT_DATA"]) / name)
    folders += [REPO_DATA / name, cache_folder_for(name), Path("/usr/share/datasets") / name]
    return folders


def cache_folder(spec: IdxSpec) -> Path:
    return cache_folder_for(spec.name)


def cache_folder_for(name: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vaekit" / name


def find_folder(spec: IdxSpec, data_dir: str | Path | None) -> Path | None:
    names = [f.name for pair in spec.files.values() for f in pair]
    for folder in search_folders(spec, data_dir):
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def load_builtin(spec: IdxSpec, split: str, data_dir: str | Path | None) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) uint8 and labels (N,) int64 of one split, checksums verified."""
    folder = find_folder(spec, data_dir)
    if folder is None:
        folder = _download_or_explain(spec, data_dir)
    image_file, label_file = spec.files[split]
    images = read_idx(folder / image_file.name, image_file.content_md5)
    labels = read_idx(folder / label_file.name, label_file.content_md5)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{spec.name} {split}: {images.shape[0]} images but {labels.shape[0]} labels; re-fetch the files"
        )
    return torch.from_numpy(images.astype(np.uint8)[:, None]), torch.from_numpy(labels.astype(np.int64))


def read_idx(path: Path, content_md5: str | None = None) -> np.ndarray:
    """Parse a (gzipped) IDX file; check the MD5 of its uncompressed bytes when given."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{str(path)!r} is truncated or not gzip ({exc}); delete it and fetch it again") from None
    if content_md5 is not None and hashlib.md5(raw).hexdigest() != content_md5:
        raise DataError(
            f"{str(path)!r} fails its checksum (content MD5 should be {content_md5}); delete it and fetch it again"
        )
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{name!r} is not an IDX file (bad magic number); check the file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{name!r}: IDX header is truncated; fetch the file again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{name!r}: header says {shape} ({expected} bytes) but the file holds {len(raw) - header}; fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _download_or_explain(spec: IdxSpec, data_dir: str | Path | None) -> Path:
    names = ", ".join(f.name for pair in spec.files.values() for f in pair)
    where = " or ".join(str(p) for p in search_folders(spec, data_dir))
    if data_dir is not None or os.environ.get("VAEKIT_OFFLINE"):
        raise DataError(f"{spec.name} not found; put {names} in {where}")
    target = cache_folder(spec)
    try:
        download(spec, target)
    except (OSError, DataError) as exc:
        raise DataError(f"{spec.name} not found locally and download failed ({exc}); put {names} in {where}") from None
    return target


def download(spec: IdxSpec, target: Path) -> None:
    """Fetch the four files from the first mirror that answers, checking the upstream MD5s."""
    target.mkdir(parents=True, exist_ok=True)
    for pair in spec.files.values():
        for file in pair:
            if (target / file.name).is_file():
                continue
            last_error: Exception | None = None
            for mirror in spec.mirrors:
                try:
                    fetch(mirror + file.name, target / file.name, file.gz_md5)
                    break
                except (OSError, DataError) as exc:
                    last_error = exc
            else:
                raise DataError(f"could not fetch {file.name}: {last_error}")


def fetch(url: str, dest: Path, md5: str) -> None:
    """Download `url` to `dest` through a temp file, checking its MD5; nothing is left on failure."""
    digest = hashlib.md5()
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
            if digest.hexdigest() != md5:
                raise DataError(f"{url} has MD5 {digest.hexdigest()}, expected {md5}")
            tmp.flush()
            os.fsync(tmp.fileno())
            shutil.move(tmp.name, dest)
        finally:
            if os.path.exists(tmp.name):
                os.unlink(tmp.name)

"""Data sets held in memory as one uint8 tensor (N, C, H, W); batches are drawn by index.

Built-in: `mnist`, `fashion-mnist`, `cifar10`, `cifar10-jpeg` and their `binarized-` forms
(dynamic binarization for training, one fixed-seed draw for held-out splits). User data: a
`.npy`/`.npz` array or a folder of PNG/JPEG images (flat, by class, or by split; data/folders.py).
User data without a test split is held out from by default: `data.val_size` unset carves a fixed-seed
validation split of 5% (at most 5,000 images) from it. No per-sample Python and no PIL in the
training loop; random horizontal flips (`data.hflip`) are drawn per batch, for training only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from vaekit.data import cifar, dsprites, idx
from vaekit.data.folders import split_folders
from vaekit.data.userdata import array_to_images, load_image_folder, load_user_data, npz_factors

__all__ = ["BUILTIN", "Dataset", "array_to_images", "has_split", "list_datasets", "load_dataset", "load_image_folder",
           "load_user_data"]
from vaekit.errors import DataError

BINARIZED_TEST_SEED = 20160101  # the one fixed draw of a binarized test split; recorded in results
Loaded = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Builtin:
    name: str
    shape: tuple[int, int, int]
    sizes: tuple[int, int]  # train, test
    load: Callable[[str, str | Path | None], Loaded]  # (split, data_dir) -> images, labels
    find: Callable[[str | Path | None], Path | None]  # where its files are, or None
    note: str = ""
    factors: Callable[[str, str | Path | None], Tensor] | None = None  # (split, data_dir) -> (N, K) factor classes


BUILTIN = {
    "mnist": Builtin(
        "mnist",
        (1, 28, 28),
        (60000, 10000),
        lambda split, d: idx.load_builtin(idx.MNIST, split, d),
        lambda d: idx.find_folder(idx.MNIST, d),
    ),
    "fashion-mnist": Builtin(
        "fashion-mnist",
        (1, 28, 28),
        (60000, 10000),
        lambda split, d: idx.load_builtin(idx.FASHION_MNIST, split, d),
        lambda d: idx.find_folder(idx.FASHION_MNIST, d),
    ),
    "cifar10": Builtin(
        "cifar10",
        (3, 32, 32),
        (50000, 10000),
        cifar.load_cifar10,
        lambda d: cifar.find("cifar10", cifar.CIFAR10_FILE, d),
    ),
    "cifar10-jpeg": Builtin(
        "cifar10-jpeg",
        (3, 32, 32),
        (50000, 10000),
        cifar.load_cifar10_jpeg,
        lambda d: cifar.find("cifar10-jpeg", cifar.JPEG_FILE, d),
        "CIFAR-10 re-encoded as JPEG by a third party: bits/dim not comparable with published CIFAR-10 numbers",
    ),
    "dsprites-like": Builtin(
        "dsprites-like",
        (1, 64, 64),
        (dsprites.N_IMAGES, dsprites.TEST_SIZE),
        lambda split, d: dsprites.load_like(split, d)[:2],  # type: ignore[arg-type,return-value]
        lambda d: Path("generated"),
        "dSprites' factor grid drawn procedurally (data/dsprites.py): not the original's pixels",
        lambda split, d: dsprites.load_like(split, d)[2],
    ),
    "dsprites": Builtin(
        "dsprites",
        (1, 64, 64),
        (dsprites.N_IMAGES, dsprites.TEST_SIZE),
        lambda split, d: _original_sprites(split, d)[:2],
        lambda d: cifar.find("dsprites", dsprites.FILE, d),
        "the original dsprites_ndarray_*.npz, when you have it (it is not downloaded)",
        lambda split, d: _original_sprites(split, d)[2],
    ),
}
SPLITS = ("train", "test", "val", "all")
AUTO_VAL_FRACTION, AUTO_VAL_MAX = 0.05, 5000


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
    hflip: bool = False  # random horizontal flips, drawn per batch (training only)
    noise: float = 0.0  # fraction of pixels replaced by uniform noise per batch (training a background model)
    val_size: int = 0  # images carved off for the validation split (train and val splits record it)
    factors: Tensor | None = None  # (N, K) int64 classes of the generative factors (dSprites), or None

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
        """uint8 (B, C, H, W) as read from `images` -> the float32 batch the model sees, on `raw`'s device
        (the random draws too: from `generator`, or that device's default generator)."""
        x = raw.to(torch.float32).div_(255.0)
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        if self.hflip:  # drawn after the binarization, from the same stream: a pure function of the RNG state
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.noise > 0:  # Ren et al. 2019: each pixel is replaced with probability `noise` by a uniform level
            hit = torch.rand(x.shape, generator=generator, device=x.device) < self.noise
            level = torch.randint(0, 256, x.shape, generator=generator, device=x.device).float().div_(255.0)
            x = torch.where(hit, level.round() if self.binarize == "dynamic" else level, x)
        return x

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[Tensor]:
        """Iterate over the whole set in batches; `generator` drives the order and binarization."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], generator)

    def labelled_batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """(x, labels or None) over the whole set in order: `batches` with the labels beside (same RNG use)."""
        n = len(self)
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            yield self.batch(index, generator), (self.labels[index] if self.labels is not None else None)

    def subset(self, index: Tensor, split: str | None = None) -> Dataset:
        labels = self.labels[index] if self.labels is not None else None
        factors = self.factors[index] if self.factors is not None else None
        lazy = isinstance(self.images, dsprites.SpriteGrid)
        images = self.images.take(index) if lazy else self.images[index]  # a drawn grid stays lazy
        return replace(self, images=images, labels=labels, factors=factors, split=split or self.split)


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    val_size: int | None = 0,
    val_seed: int = 0,
    mmap: bool = False,
    lazy: bool = False,
    channels: int | None = None,
    image_size: int | None = None,
) -> Dataset:
    """Load a data set by name (`mnist`, `cifar10`, `binarized-mnist`, ...) or path (`.npy`, `.npz`, image folder).

    `split` is "train", "test", "val" or "all" (a user file or folder, whole). With `val_size > 0`,
    "train" and "val" are a fixed-seed partition of the training images; `val_size=None` means 0 for
    a built-in set and 5% (at most 5,000) for user data without a test split. A folder laid out as
    `train/`, `test/` (and `val/`) has those splits; other user data has no test split. With `mmap`,
    a uint8 `.npy` is memory-mapped instead of read; with `lazy`, a folder of images is read by
    index, by background threads, instead of all at once. `channels` and `image_size` convert and
    resize the images of a folder (data/folders.py).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    base, binarized = _parse_name(name)
    if binarized and base.startswith("dsprites"):
        raise DataError(f"{base} is binary already: use {base}, not {name}")
    labels: Tensor | None
    factors: Tensor | None = None
    by_split = split_folders(Path(base)) if base not in BUILTIN else {}
    if base in BUILTIN:
        if split == "all":
            raise DataError(f"{name!r} is built in: use split train or test, not all")
        images, labels, factors = _builtin(BUILTIN[base], "test" if split == "test" else "train", data_dir)
        val_size = val_size or 0
    elif by_split:
        folder, split, val_size = _split_folder(name, by_split, split, val_size)
        images, labels = load_user_data(folder, mmap, lazy, channels, image_size)
    else:
        if split == "test":
            raise DataError(
                f"{name!r} is user data and has no test split; score it whole (split all), pass the test set as its "
                "own file, or lay the folder out as train/ and test/"
            )
        images, labels = load_user_data(Path(base), mmap, lazy, channels, image_size)
        factors = npz_factors(Path(base), int(images.shape[0])) if base.endswith(".npz") else None
    _check_images(images, name)
    if val_size is None and (mmap or lazy):
        val_size = 0  # carving would copy a memory-mapped or lazy set into memory: ask for it with data.val_size
    if val_size is None:  # user data with no held-out split of its own
        n = int(images.shape[0])
        val_size = min(AUTO_VAL_MAX, round(AUTO_VAL_FRACTION * n)) if n >= 20 else 0
    data = Dataset(name=name, split=split, images=images, labels=labels, factors=factors)
    if split in ("train", "val") and val_size > 0:
        data = replace(_carve_validation(data, split, val_size, val_seed), val_size=val_size)
    elif split == "val" and not (by_split and "val" in by_split):
        raise DataError("split 'val' needs val_size > 0 (config key data.val_size)")
    if binarized:
        data = _binarize(data)
    return data


def _builtin(spec: Builtin, split: str, data_dir: str | Path | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A built-in set's (images, labels, factors or None) of split train or test."""
    images, labels = spec.load(split, data_dir)
    return images, labels, spec.factors(split, data_dir) if spec.factors else None


def _split_folder(
    name: str, by_split: dict[str, Path], split: str, val_size: int | None
) -> tuple[Path, str, int | None]:
    """The folder of `split` in a folder laid out by split, the split it is read as, and the validation size."""
    folder = by_split.get(split, by_split["train"] if split in ("val", "all") else None)
    if folder is None:
        raise DataError(f"{name!r} has no {split}/ folder (it has {', '.join(by_split)}/)")
    if split == "val" and "val" in by_split:
        val_size = 0  # the val/ folder is the validation split
    elif val_size is None:
        val_size = 0 if "test" in by_split or "val" in by_split else None
    return folder, "train" if split == "all" else split, val_size


def _original_sprites(split: str, data_dir: str | Path | None) -> tuple[Tensor, Tensor, Tensor]:
    path = cifar.find("dsprites", dsprites.FILE, data_dir)
    if path is None:
        where = " or ".join(str(p) for p in idx.search_folders_for("dsprites", data_dir))
        raise DataError(f"dsprites not found (it is not downloaded); put {dsprites.FILE} in {where}, or use the "
                        "procedural dsprites-like")
    return dsprites.load_original(path, split)


def has_split(name: str, split: str) -> bool:
    """Whether data set `name` has `split` of its own (a built-in set or a folder laid out by split)."""
    base = name.removeprefix("binarized-")
    if base in BUILTIN:
        return split in ("train", "test")
    return split in split_folders(Path(base)) or split in ("train", "all")


def list_datasets() -> list[dict[str, object]]:
    """Built-in data sets and where their files were found (None when they are not on disk)."""
    rows: list[dict[str, object]] = []
    for name, spec in BUILTIN.items():
        folder = spec.find(None)
        for prefix in ("",) if name.startswith("dsprites") else ("", "binarized-"):
            rows.append(
                {
                    "name": prefix + name,
                    "shape": list(spec.shape),
                    "train": spec.sizes[0],
                    "test": spec.sizes[1],
                    "found": str(folder) if folder else None,
                    "note": spec.note,
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

"""The data a training run uses: train, validation and test splits, and a conditional model's class count."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vaekit.config import Config
from vaekit.data.datasets import Dataset, has_split, load_dataset
from vaekit.data.imbalance import long_tailed, require_labels
from vaekit.errors import VaekitError


def load_splits(cfg: Config) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """(train, val or None, test or None) as the config's data section asks."""
    d = cfg.data
    def split(name: str, **extra: Any) -> Dataset:
        return load_dataset(
            d.name, name, d.data_dir, d.val_size, d.val_seed, channels=d.channels, image_size=d.image_size, **extra
        )

    train_set = split("train", mmap=d.mmap, lazy=d.lazy)
    val_set = split("val") if train_set.val_size or has_split(d.name, "val") else None
    test_set = split("test") if has_split(d.name, "test") else None
    return replace(training_split(cfg, train_set), hflip=d.hflip, noise=d.noise), val_set, test_set


def training_split(cfg: Config, train_set: Dataset) -> Dataset:
    """The training split as the run sees it: long-tailed with `data.imbalance` (the held-out splits untouched);
    a sampler or class weights on data without labels is a one-line error."""
    d = cfg.data
    for key, value, plain in (("sampler", d.sampler, "shuffle"), ("class_weights", d.class_weights, "none")):
        if value != plain:
            require_labels(train_set, f"data.{key}={value}")
    if d.imbalance is None:
        return train_set
    return long_tailed(train_set, d.imbalance, d.imbalance_seed, d.imbalance_profile)


def num_classes(data: Dataset, given: int | None) -> int:
    """The class count of a conditional model: `model.num_classes`, else 1 + the largest training label."""
    if data.labels is None:
        raise VaekitError(
            f"model.conditional=true needs class labels, and {data.name!r} has none; use a built-in set, a folder "
            "with one subfolder per class, or an .npz with a 'labels' array"
        )
    found = int(data.labels.max()) + 1
    if given is not None and given < found:
        raise VaekitError(f"model.num_classes={given}, but {data.name!r} has labels up to {found - 1}")
    return max(given or found, 2)

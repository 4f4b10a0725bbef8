"""Long-tailed training sets and the remedies for them: class-balanced epoch orders and class weights.

- `long_tailed`: the exponential profile of long-tailed CIFAR (Cui et al. 2019; Cao et al. 2019's
  `get_img_num_per_cls`): class c keeps n_max * ratio^(-c / (C - 1)) images, class 0 the most and the last class
  n_max / ratio, drawn with a seed. n_max is the smallest class's count, so every class can supply its share
  (MNIST: 5,421). The `balanced` profile keeps the same total, spread evenly: the control a remedy is judged by.
- `epoch_order`: `shuffle` (each image once), `balanced` (draws with replacement, each class equally likely;
  Kang et al. 2020's class-balanced sampling) or `sqrt` (a class drawn in proportion to sqrt(n_c); their
  square-root sampling). An epoch keeps its length, N draws.
- `class_weights`: per-class loss weights, `inverse` (1 / n_c), `sqrt-inverse` (1 / sqrt(n_c)) or `effective`
  (Cui et al. 2019: 1 / E_c with E_c = (1 - beta^n_c) / (1 - beta), the effective number of samples), scaled so
  that the mean weight over the training images is 1: the loss keeps plain training's scale (the learning rate
  still fits), and with `inverse` the weighted loss is the class-balanced average of the per-class losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.errors import DataError

PROFILES = ("exponential", "balanced")
SAMPLERS = ("shuffle", "balanced", "sqrt")
WEIGHTINGS = ("none", "inverse", "sqrt-inverse", "effective")


def class_counts(labels: Tensor, num_classes: int | None = None) -> Tensor:
    """(C,) int64 images per class; C is `num_classes`, else 1 + the largest label."""
    return torch.bincount(labels.long(), minlength=num_classes or 0)


def long_tail_counts(available: Sequence[int], ratio: float, profile: str = "exponential") -> list[int]:
    """Images kept per class (class 0 first) out of `available` ones, for largest / smallest = `ratio`."""
    if ratio < 1:
        raise DataError(f"data.imbalance={ratio:g}: the ratio of the largest to the smallest class must be >= 1")
    if profile not in PROFILES:
        raise DataError(f"data.imbalance_profile={profile!r} is not one of {', '.join(PROFILES)}")
    present = [n for n in available if n > 0]
    n_classes = len(available)
    if n_classes < 2 or not present:
        raise DataError(f"a long-tailed set needs at least 2 classes with images; this one has {len(present)}")
    n_max = min(present)
    tail = [int(n_max * ratio ** (-c / (n_classes - 1)) + 1e-9) if available[c] else 0 for c in range(n_classes)]
    if profile == "exponential":
        return tail
    even, extra = divmod(sum(tail), len(present))  # the balanced control: the tail's total, spread evenly
    return [even + (1 if i < extra else 0) if n else 0 for i, n in enumerate(available)]


def long_tailed(data: Dataset, ratio: float, seed: int = 0, profile: str = "exponential") -> Dataset:
    """A long-tailed subset of a labelled set (see the module's docstring); the images keep their order."""
    labels = require_labels(data, "data.imbalance")
    wanted = long_tail_counts(class_counts(labels).tolist(), ratio, profile)
    gen = torch.Generator().manual_seed(seed)
    kept = []
    for c, n in enumerate(wanted):
        members = (labels == c).nonzero().squeeze(1)
        kept.append(members[torch.randperm(members.numel(), generator=gen)[:n]])
    index = torch.cat(kept).sort().values
    return replace(data.subset(index), name=data.name)


def epoch_order(labels: Tensor | None, n: int, sampler: str, generator: torch.Generator) -> Tensor:
    """(n,) int64 indices of one epoch: a permutation (`shuffle`) or class-balanced draws with replacement."""
    if sampler == "shuffle":
        return torch.randperm(n, generator=generator)
    if sampler not in SAMPLERS:
        raise DataError(f"data.sampler={sampler!r} is not one of {', '.join(SAMPLERS)}")
    assert labels is not None  # load_splits refuses a sampler on data without labels
    counts = class_counts(labels).double()
    per_class = counts.reciprocal() if sampler == "balanced" else counts.rsqrt()  # P(class) ~ n_c * per_class
    weights = per_class.nan_to_num(posinf=0.0)[labels.long()]  # (n,) one per image
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def class_weights(counts: Tensor, scheme: str, beta: float = 0.9999) -> Tensor | None:
    """(C,) float32 loss weight per class, mean 1 over the training images; None for `none`."""
    if scheme == "none":
        return None
    if scheme not in WEIGHTINGS:
        raise DataError(f"data.class_weights={scheme!r} is not one of {', '.join(WEIGHTINGS)}")
    n = counts.double()
    if scheme == "inverse":
        raw = n.reciprocal()
    elif scheme == "sqrt-inverse":
        raw = n.rsqrt()
    else:
        raw = (1 - beta) / (1 - torch.pow(torch.full_like(n, beta), n))  # 1 / E_c
    raw = torch.where(n > 0, raw, torch.zeros_like(raw))
    return (raw * n.sum() / (raw * n).sum()).float()


def loss_weights(data: Dataset, scheme: str, beta: float = 0.9999) -> Tensor | None:
    """`class_weights` of a training set's own class counts; None for `none` or a set without labels."""
    return None if data.labels is None else class_weights(class_counts(data.labels), scheme, beta)


def require_labels(data: Dataset, what: str) -> Tensor:
    """The set's labels, or a one-line error naming the setting that needs them."""
    if data.labels is None:
        raise DataError(
            f"{what} needs class labels, and {data.name!r} has none; use a built-in set, a folder with one "
            "subfolder per class, an .npz with a 'labels' array or an IDX images file beside its labels file"
        )
    return data.labels

"""Sample-quality metrics between two sets of feature vectors (real, fake), each (N, F).

- Fréchet distance (Heusel et al. 2017) and KID (Bińkowski et al. 2018: the unbiased MMD^2 with the kernel
  (x.y / F + 1)^3, averaged over random subsets, with its standard deviation) come from torchmetrics, fed the
  features through `FeatureRows`, so the features are computed once for every metric.
- Precision and recall (Kynkäänniemi et al. 2019, k = 3): the share of fake samples inside the union of the real
  samples' k-nearest-neighbour balls, and the share of real samples inside the fake samples' balls.
- Density and coverage (Naeem et al. 2020, k = 5): how many real balls hold each fake sample on average (divided
  by k; 1 for matching distributions), and the share of real balls that hold at least one fake sample.

Neither library has the last four; they are written here and tested against brute-force definitions.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError

ROWS = 1024  # rows of a distance matrix computed at once


class FeatureRows(nn.Module):
    """A torchmetrics 'feature extractor' that receives feature vectors already computed and returns them."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of the two sets' Gaussian fits."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _need(real, fake, 2, "the Fréchet distance (a covariance)")
    metric = FrechetInceptionDistance(feature=FeatureRows(real.shape[1]))
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID's mean and standard deviation over `subsets` random subsets of `subset_size` from each set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _need(real, fake, subset_size, f"KID with subsets of {subset_size} (set a smaller subset size)")
    with warnings.catch_warnings():  # it keeps every feature in memory: what it is given here, once
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        metric = KernelInceptionDistance(feature=FeatureRows(real.shape[1]), subsets=subsets, subset_size=subset_size)
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def knn_radii(points: Tensor, k: int) -> Tensor:
    """(N,) distance from each point to its k-th nearest other point in the same set."""
    radii = [torch.cdist(chunk, points).topk(k + 1, largest=False).values[:, k] for chunk in points.split(ROWS)]
    return torch.cat(radii)


def _inside(queries: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """(Q, N) boolean: query q lies in the ball of centre n (distance <= radius)."""
    return torch.cat([torch.cdist(chunk, centres) <= radii for chunk in queries.split(ROWS)])


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Kynkäänniemi et al.'s improved precision and recall with k-nearest-neighbour balls."""
    _need(real, fake, k + 1, f"precision and recall with k = {k}")
    real, fake = real.float(), fake.float()
    precision = _inside(fake, real, knn_radii(real, k)).any(1).float().mean()
    recall = _inside(real, fake, knn_radii(fake, k)).any(1).float().mean()
    return float(precision), float(recall)


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Naeem et al.'s density (unbounded; 1 for matching sets) and coverage (in [0, 1]), balls around real only."""
    _need(real, fake, k + 1, f"density and coverage with k = {k}")
    real, fake = real.float(), fake.float()
    inside = _inside(fake, real, knn_radii(real, k))  # (M, N)
    density = inside.sum() / (k * fake.shape[0])
    coverage = inside.any(0).float().mean()
    return float(density), float(coverage)


def class_shares(logits: Tensor, classes: int) -> list[float]:
    """The share of samples a classifier puts in each class (its argmax), summing to 1."""
    counts = torch.bincount(logits.argmax(-1), minlength=classes).float()
    return (counts / counts.sum()).tolist()


MISSING, UNDER = 0.1, 0.5  # a class generated below these fractions of its target share is missing / under-generated


def class_coverage(
    shares: list[float], train: list[float] | None = None, target: list[float] | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """How samples cover the classes, from their shares (a classifier's argmax, `class_shares`).

    Total variation distance (half the L1 distance, in [0, 1]) to the training distribution `train` and to the
    uniform one; each class's share against its target (`target`, else the training distribution, else uniform),
    and the classes below 10% of it named as missing, those below half of it as under-generated.
    """
    k = len(shares)
    uniform = [1.0 / k] * k
    goal = target or train or uniform
    names = names or [str(c) for c in range(k)]
    missing = [names[c] for c in range(k) if shares[c] < MISSING * goal[c]]
    under = [names[c] for c in range(k) if MISSING * goal[c] <= shares[c] < UNDER * goal[c]]
    return {"classes": names, "shares": shares, "train_shares": train, "target": goal,
            "tv_train": total_variation(shares, train) if train is not None else None,
            "tv_uniform": total_variation(shares, uniform), "missing": missing, "under_generated": under}


def total_variation(p: list[float], q: list[float]) -> float:
    """0.5 * sum_c |p_c - q_c| of two distributions over the same classes."""
    if len(p) != len(q):
        raise ConfigError(f"class distributions over {len(p)} and {len(q)} classes cannot be compared")
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


def _need(real: Tensor, fake: Tensor, n: int, what: str) -> None:
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ConfigError(f"features must be two (N, F) sets of one width; got {tuple(real.shape)} and "
                          f"{tuple(fake.shape)}")
    if min(real.shape[0], fake.shape[0]) < n:
        raise ConfigError(f"{what} needs at least {n} samples in each set; got {real.shape[0]} real and "
                          f"{fake.shape[0]} generated: pass more samples")

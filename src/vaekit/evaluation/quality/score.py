"""Score a trained model's samples and reconstructions against the test split, in a named feature space.

`quality(model, test, train)` draws N samples (default 10,000; from the prior, or from a fitted sampler's latents),
reconstructs the test split, and compares each with the test images: Fréchet distance, KID, precision, recall,
density, coverage, and the share of each class among the samples by the feature network's own classifier. The
training split's distance to the test split is the floor no model can be expected to beat. Every number names its
feature network ("FD-lenet-mnist"): distances in different feature spaces are not comparable, and none is FID.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.quality.metrics import (
    class_coverage,
    class_shares,
    density_coverage,
    frechet_distance,
    kid,
    precision_recall,
)
from vaekit.evaluation.quality.nets import FEATURE_NETS, FeatureNet, feature_net_for, load_feature_net
from vaekit.models.base import BaseVAE

BATCH = 500
Latents = Callable[[int, torch.Generator], Tensor]  # (n, generator) -> (n, latent_dim): a sampler's draws


@dataclass
class SetScores:
    """One image set against the test split in one feature space."""

    fd: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    density: float
    coverage: float
    class_shares: list[float] = field(default_factory=list)

    @property
    def rarest_class_share(self) -> float:
        return min(self.class_shares) if self.class_shares else float("nan")


@dataclass
class QualityResult:
    features: str  # the feature network's name: every distance below is in its space
    n_samples: int
    n_test: int
    sampler: str
    samples: SetScores
    reconstructions: SetScores
    floor: SetScores | None  # the training split's own images against the test split
    examples: Tensor | None = field(default=None, repr=False)  # the first scored samples (up to 64), for a grid
    class_coverage: dict[str, Any] | None = None  # the samples' classes against the training distribution
    # (metrics.class_coverage): shares, total variation, classes missing or under-generated

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, examples=None))
        del out["examples"]
        for key in ("samples", "reconstructions", "floor"):
            part = getattr(self, key)
            if part is not None:
                out[key]["rarest_class_share"] = part.rarest_class_share
        return out


@torch.no_grad()
def embed(net: FeatureNet, images: Iterator[Tensor]) -> tuple[Tensor, Tensor]:
    """(features (N, F), logits (N, K)) of image batches in [0, 1]; a wrong shape or range is a one-line error."""
    feats, logits = [], []
    for x in images:
        if tuple(x.shape[1:]) != tuple(net.input_shape):
            raise ConfigError(f"feature network {net.name} reads images {tuple(net.input_shape)}; these are "
                              f"{tuple(x.shape[1:])}: pass a feature network for this data")
        if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise ConfigError(f"images must be finite and in [0, 1] to be scored; got [{x.min():.3g}, {x.max():.3g}]")
        f = net.features(x.float())
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats), torch.cat(logits)


def compare(real: Tensor, fake: Tensor, fake_logits: Tensor, kid_subset: int) -> SetScores:
    # subsets of at most half the smaller set, so that they differ and the standard deviation means something
    mean, std = kid(real, fake, subset_size=min(kid_subset, max(2, min(real.shape[0], fake.shape[0]) // 2)))
    precision, recall = precision_recall(real, fake)
    density, coverage = density_coverage(real, fake)
    return SetScores(frechet_distance(real, fake), mean, std, precision, recall, density, coverage,
                     class_shares(fake_logits, fake_logits.shape[1]))


def _dataset_batches(data: Dataset, limit: int) -> Iterator[Tensor]:
    for start in range(0, min(limit, len(data)), BATCH):
        yield data.batch(torch.arange(start, min(start + BATCH, limit, len(data))))


def _sample_batches(model: BaseVAE, n: int, latents: Latents | None, gen: torch.Generator,
                    class_balance: list[float] | None = None) -> Iterator[Tensor]:
    for start in range(0, n, BATCH):
        m = min(BATCH, n - start)
        if latents is None:  # a conditional model cycles through its classes unless a balance is asked for
            labels = None
            if model.num_classes and class_balance is not None:
                labels = torch.multinomial(torch.tensor(class_balance), m, replacement=True, generator=gen)
            yield model.sample(m, generator=gen, labels=labels).cpu()
        else:
            yield model.decode(latents(m, gen).to(model.device)).mean.clamp(0, 1).cpu()


def _kept(batches: Iterator[Tensor], kept: list[Tensor]) -> Iterator[Tensor]:
    """`batches`, with the first one also appended to `kept`."""
    for x in batches:
        if not kept:
            kept.append(x)
        yield x


def _reconstructions(model: BaseVAE, data: Dataset, limit: int) -> Iterator[Tensor]:
    for start in range(0, min(limit, len(data)), BATCH):
        index = torch.arange(start, min(start + BATCH, limit, len(data)))
        labels = data.labels[index] if model.num_classes and data.labels is not None else None
        yield model.reconstruct(data.batch(index), labels)


def quality(model: BaseVAE, test: Dataset, train: Dataset | None = None, n: int = 10_000,
            features: FeatureNet | str | None = None, latents: Latents | None = None, sampler: str = "prior",
            seed: int = 0, kid_subset: int = 1000, train_labels: Tensor | None = None,
            class_balance: list[float] | None = None) -> QualityResult:
    """Samples, reconstructions and (with `train`) the floor, each against `n` test images.

    The samples' class coverage is judged against the training distribution: the labels `train_labels` the model
    was trained on (a long-tailed split: data.imbalance), else `train`'s. `class_balance` is the balance asked of
    the generator, the coverage's target (else the training distribution is): a conditional model's labels are
    drawn from it; any other model's `latents` must be drawn at it (apps/samplers/balance.py)."""
    net = features if isinstance(features, FeatureNet) else load_feature_net(features or feature_net_for(test.name))
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        real, _ = embed(net, _dataset_batches(test, n))
        kept: list[Tensor] = []
        fake, fake_logits = embed(net, _kept(_sample_batches(model, n, latents, gen, class_balance), kept))
        rec, rec_logits = embed(net, _reconstructions(model, test, n))
    finally:
        model.train(was_training)
    floor = None
    if train is not None:
        tr, tr_logits = embed(net, _dataset_batches(train, n))
        floor = compare(real, tr, tr_logits, kid_subset)
    samples = compare(real, fake, fake_logits, kid_subset)
    if train_labels is None and train is not None:
        train_labels = train.labels
    coverage = _coverage(samples.class_shares, net, train_labels, class_balance)
    return QualityResult(net.name, fake.shape[0], real.shape[0], sampler, samples,
                         compare(real, rec, rec_logits, kid_subset), floor, kept[0][:64] if kept else None, coverage)


def _coverage(shares: list[float], net: FeatureNet, labels: Tensor | None, target: list[float] | None
              ) -> dict[str, Any]:
    """class_coverage of the samples' shares, with the feature network's class names where it has them."""
    k, train = len(shares), None
    if labels is not None:
        train = (torch.bincount(labels.long(), minlength=k)[:k].double() / labels.numel()).tolist()
    names = list(FEATURE_NETS.get(net.name).classes) if net.name in FEATURE_NETS.names() else None
    return class_coverage(shares, train, target, names)

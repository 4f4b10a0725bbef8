"""Per-example scores and out-of-distribution scores that work, with the AUROC of telling two sets apart.

Methods (higher = more out-of-distribution), all in nats:
- `nll`: -ELBO (single sample), or -log p(x) with `iw_samples` importance samples. Fooled by simple
  inputs: a Fashion-MNIST model gives MNIST digits a higher likelihood (Nalisnick et al. 2019).
- `complexity`: the input-complexity correction (Serrà et al. 2020, Eq. 2): S(x) = -log p(x) - L(x),
  L(x) the code length of x under a generic lossless compressor (`png` or `webp` lossless), in nats.
- `ratio`: the likelihood ratio (Ren et al. 2019): -log p(x) + log p_background(x), where the
  background model is the same network trained on inputs with a fraction of their pixels replaced by
  noise (`vaekit train ... --set data.noise=0.2`), so it learns only the population-level statistics.
- `typicality`: Nalisnick et al. 2019's typicality test: |(1/M) sum_m -log p(x_m) - H|, H the mean
  -log p(x) over training images (an estimate of the entropy), for batches of M test inputs (M = 1:
  per example).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.errors import VaekitError
from vaekit.evaluation.evaluate import EVAL_SEED
from vaekit.models.base import BaseVAE

METHODS = ("nll", "complexity", "ratio", "typicality")
COMPRESSORS = ("png", "webp")
TYPICAL_SET_EXAMPLES = 5000  # training images that estimate H


@torch.no_grad()
def score(
    model: BaseVAE, data: Dataset, iw_samples: int | None = None, batch_size: int = 500, seed: int = EVAL_SEED
) -> Tensor:
    """(N,) nats per example: -ELBO (single sample), or -log p(x) with `iw_samples` importance samples."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = []
    for x in data.batches(batch_size):
        x = x.to(device)
        if iw_samples:
            out.append(-model.log_likelihood(x, k=iw_samples, generator=gen).cpu())
        else:
            out.append(model.elbo(x, generator=gen).neg_elbo.cpu())
    model.train(was_training)
    return torch.cat(out)


def code_length_nats(data: Dataset, compressor: str = "png") -> Tensor:
    """(N,) nats: the size of each image as a lossless `compressor` file (PNG at level 9, or WebP lossless)."""
    from PIL import Image

    if compressor not in COMPRESSORS:
        raise VaekitError(f"unknown compressor {compressor!r}; valid: {', '.join(COMPRESSORS)}")
    out = []
    for image in data.images[: len(data)]:
        array = image.numpy()
        pil = Image.fromarray(array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1))
        buffer = io.BytesIO()
        if compressor == "png":
            pil.save(buffer, format="PNG", optimize=True, compress_level=9)
        else:
            pil.save(buffer, format="WEBP", lossless=True, method=6, quality=100)
        out.append(8 * len(buffer.getvalue()) * math.log(2))
    return torch.tensor(out, dtype=torch.float32)


def typical_entropy(model: BaseVAE, train: Dataset, iw_samples: int | None = None) -> float:
    """H: the mean -log p(x) (or -ELBO) over up to 5,000 training images, nats."""
    n = min(len(train), TYPICAL_SET_EXAMPLES)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return float(score(model, train.subset(pick), iw_samples).mean())


def typicality(nll: Tensor, entropy: float, batch: int = 1, seed: int = 0) -> Tensor:
    """|mean -log p over batches of `batch` examples - H|, (N // batch,); batch 1 keeps the example order."""
    if batch == 1:
        return (nll - entropy).abs()
    order = torch.randperm(len(nll), generator=torch.Generator().manual_seed(seed))
    usable = (len(nll) // batch) * batch
    return (nll[order[:usable]].view(-1, batch).mean(1) - entropy).abs()


def ood_scores(
    model: BaseVAE,
    data: Dataset,
    method: str = "nll",
    iw_samples: int | None = None,
    compressor: str = "png",
    background: BaseVAE | None = None,
    entropy: float | None = None,
    batch: int = 1,
) -> Tensor:
    """OOD scores of `data` by `method` (module docstring), nats, higher = more out-of-distribution."""
    if method not in METHODS:
        raise VaekitError(f"unknown scoring method {method!r}; valid: {', '.join(METHODS)}")
    nll = score(model, data, iw_samples)
    if method == "nll":
        return nll
    if method == "complexity":
        return nll - code_length_nats(data, compressor)
    if method == "ratio":
        if background is None:
            raise VaekitError(
                "--method ratio needs a background model (--background RUN): the same preset trained with "
                "--set data.noise=0.2 (Ren et al. 2019)"
            )
        return nll - score(background, data, iw_samples)
    if entropy is None:
        raise VaekitError("--method typicality needs the training set's entropy estimate (typical_entropy)")
    return typicality(nll, entropy, batch)


def auroc(in_scores: Tensor, out_scores: Tensor) -> float:
    """Area under the ROC curve for "higher score = out-of-distribution", ties counted as 1/2.

    It equals the Mann-Whitney U statistic over n_in * n_out: the probability that a random OOD
    example scores above a random in-distribution one, from average ranks in O(n log n).
    """
    scores = torch.cat([in_scores, out_scores]).double()
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # ties: give every member of a tied group its group's average rank
    unique, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    rank_sum = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    ranks = (rank_sum / counts)[inverse]
    n_in, n_out = len(in_scores), len(out_scores)
    u = ranks[n_in:].sum() - n_out * (n_out + 1) / 2
    return float(u / (n_in * n_out))

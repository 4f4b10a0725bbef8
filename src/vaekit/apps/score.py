"""Per-example scores (-ELBO or importance-sampled NLL) and the AUROC of telling two sets apart."""

from __future__ import annotations

import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.evaluation.evaluate import EVAL_SEED
from vaekit.models.vae import VAE


@torch.no_grad()
def score(
    model: VAE, data: Dataset, iw_samples: int | None = None, batch_size: int = 500, seed: int = EVAL_SEED
) -> Tensor:
    """(N,) nats per example: -ELBO (single sample), or -log p(x) with `iw_samples` importance samples."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for x in data.batches(batch_size):
        if iw_samples:
            out.append(-model.log_likelihood(x, k=iw_samples, generator=gen))
        else:
            out.append(model.elbo(x, generator=gen).neg_elbo_per_example)
    model.train(was_training)
    return torch.cat(out)


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

"""Evaluation: the ELBO (and optionally the importance-sampled NLL) over a whole split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from vaekit.data.datasets import BINARIZED_TEST_SEED, Dataset
from vaekit.evaluation.diagnostics import active_units, mutual_information
from vaekit.models.distributions import DiagonalGaussian
from vaekit.models.objectives import bits_per_dim, elbo_terms
from vaekit.models.vae import VAE

EVAL_SEED = 1234  # fixed draws of z, so the same weights always score the same


@dataclass(frozen=True)
class EvalResult:
    split: str
    n: int
    neg_elbo: float  # nats per example, single-sample estimate, lower is better
    neg_elbo_se: float  # standard error across examples
    log_px: float  # nats per example, E_q[log p(x|z)]
    kl: float  # nats per example
    bits_per_dim: float  # neg_elbo / (D ln 2)
    active_units: int  # dims with Var_x(E_q[z_d]) > 0.01 (Burda et al. 2016)
    mutual_info: float  # I(x; z) estimate, nats (diagnostics.mutual_information)
    kl_per_dim: list[float]
    nll: float | None = None  # importance-sampled -log p(x), nats, when asked for
    nll_se: float | None = None
    nll_bits_per_dim: float | None = None
    iw_samples: int | None = None
    binarization_seed: int | None = None  # the one fixed draw of a binarized held-out split, when there is one

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


MI_EXAMPLES = 2000  # posteriors used for I(x; z): O(N^2) pairs; the estimate's bias is at most log N


@torch.no_grad()
def evaluate(
    model: VAE, data: Dataset, batch_size: int = 1000, iw_samples: int | None = None, seed: int = EVAL_SEED
) -> EvalResult:
    """Score every example of `data`; with `iw_samples = k` also estimate -log p(x) with k samples."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    neg_elbo, log_px, kl_dims, means, logvars, nll = [], [], [], [], [], []
    device = next(model.parameters()).device
    for x in data.batches(batch_size, generator=gen):
        x = x.to(device)
        out = model(x, generator=gen)
        terms = elbo_terms(out, x, model.prior)
        neg_elbo.append(terms.neg_elbo_per_example)
        log_px.append(terms.log_px)
        kl_dims.append(terms.kl_per_dim)
        means.append(out.q.mean.float())
        logvars.append(out.q.logvar.float())
        if iw_samples:
            nll.append(-model.log_likelihood(x, k=iw_samples, generator=gen))
    model.train(was_training)
    ne, kd, mean = torch.cat(neg_elbo), torch.cat(kl_dims), torch.cat(means)
    q_sub = DiagonalGaussian(mean[:MI_EXAMPLES], torch.cat(logvars)[:MI_EXAMPLES])
    extra: dict[str, Any] = {}
    if iw_samples:
        nl = torch.cat(nll)
        extra = {
            "nll": nl.mean().item(),
            "nll_se": _se(nl),
            "iw_samples": iw_samples,
            "nll_bits_per_dim": float(bits_per_dim(nl.mean().item(), model.dims)),
        }
    return EvalResult(
        split=data.split,
        n=ne.shape[0],
        neg_elbo=ne.mean().item(),
        neg_elbo_se=_se(ne),
        log_px=torch.cat(log_px).mean().item(),
        kl=kd.sum(-1).mean().item(),
        bits_per_dim=float(bits_per_dim(ne.mean().item(), model.dims)),
        active_units=active_units(mean),
        mutual_info=mutual_information(q_sub, gen),
        kl_per_dim=[round(v, 5) for v in kd.mean(0).tolist()],
        binarization_seed=BINARIZED_TEST_SEED if data.name.startswith("binarized-") and data.split != "train" else None,
        **extra,
    )


def _se(values: Tensor) -> float:
    n = values.shape[0]
    return values.std().item() / math.sqrt(n) if n > 1 else float("nan")

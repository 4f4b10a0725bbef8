"""Evaluation: the ELBO (and optionally the importance-sampled NLL) over a whole split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from vaekit.data import Dataset
from vaekit.model import VAE
from vaekit.objectives import bits_per_dim

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
    kl_per_dim: list[float]
    nll: float | None = None  # importance-sampled -log p(x), nats, when asked for
    nll_se: float | None = None
    nll_bits_per_dim: float | None = None
    iw_samples: int | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model: VAE, data: Dataset, batch_size: int = 1000, iw_samples: int | None = None, seed: int = EVAL_SEED
) -> EvalResult:
    """Score every example of `data`; with `iw_samples = k` also estimate -log p(x) with k samples."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    neg_elbo, log_px, kl_dims, means, nll = [], [], [], [], []
    device = next(model.parameters()).device
    for x in data.batches(batch_size, generator=gen):
        x = x.to(device)
        terms = model.elbo(x, generator=gen)
        neg_elbo.append(terms.neg_elbo_per_example)
        log_px.append(terms.log_px)
        kl_dims.append(terms.kl_per_dim)
        means.append(model.encode(x).mean)
        if iw_samples:
            nll.append(-model.log_likelihood(x, k=iw_samples, generator=gen))
    model.train(was_training)
    ne, kd = torch.cat(neg_elbo), torch.cat(kl_dims)
    n = ne.shape[0]
    result = EvalResult(
        split=data.split,
        n=n,
        neg_elbo=ne.mean().item(),
        neg_elbo_se=_se(ne),
        log_px=torch.cat(log_px).mean().item(),
        kl=kd.sum(-1).mean().item(),
        bits_per_dim=float(bits_per_dim(ne.mean().item(), model.dims)),
        active_units=int((torch.cat(means).var(0, unbiased=n > 1) > 0.01).sum()),
        kl_per_dim=[round(v, 5) for v in kd.mean(0).tolist()],
    )
    if iw_samples:
        nl = torch.cat(nll)
        return EvalResult(
            **{
                **result.to_dict(),
                "nll": nl.mean().item(),
                "nll_se": _se(nl),  # type: ignore[arg-type]
                "nll_bits_per_dim": float(bits_per_dim(nl.mean().item(), model.dims)),
                "iw_samples": iw_samples,
            }
        )
    return result


def _se(values: Tensor) -> float:
    n = values.shape[0]
    return values.std().item() / math.sqrt(n) if n > 1 else float("nan")

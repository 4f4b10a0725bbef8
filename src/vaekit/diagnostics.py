"""Posterior-collapse diagnostics: mutual information I(x; z), active units, and warnings."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.distributions import DiagonalGaussian


def mutual_information(q: DiagonalGaussian, generator: torch.Generator | None = None) -> float:
    """Estimate I(x; z) under q(x, z) = p_data(x) q(z|x) from the posteriors of N examples, nats.

    I = E_x E_{q(z|x)} [log q(z|x) - log q(z)], with the aggregate posterior q(z) approximated by the
    mixture (1/N) sum_j q(z|x_j) over the same N examples (Hoffman & Johnson 2016; He et al. 2019,
    Eq. 4). The estimate is biased low by at most log N and is computed in chunks: memory O(N * chunk).
    """
    n = q.mean.shape[0]
    z = q.rsample(1, generator)[0]  # (N, D), one z per example
    log_qz_x = q.log_prob(z.unsqueeze(0))[0]  # (N,) log q(z_i|x_i)
    log_qz = torch.empty(n, device=z.device)
    for start in range(0, n, 512):
        zc = z[start : start + 512].unsqueeze(1)  # (c, 1, D) against all N posteriors
        log_qz[start : start + 512] = torch.logsumexp(q.log_prob(zc), dim=1) - math.log(n)  # (c, N) -> (c,)
    return float((log_qz_x - log_qz).mean())


def active_units(means: Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across x: Var_x(E_q[z_d]) > threshold (Burda et al. 2016)."""
    if means.shape[0] < 2:
        return 0
    return int((means.var(0) > threshold).sum())


def collapse_warnings(
    kl: float, active: int, latent_dim: int, min_active_fraction: float = 0.1, min_kl: float = 0.05
) -> list[str]:
    """Warnings that name the cause and a remedy when the posterior has collapsed onto the prior."""
    found = []
    if kl < min_kl:
        found.append(
            f"KL is {kl:.3f} nats: the posterior has collapsed onto the prior and z carries no "
            "information; try objective.free_bits=0.5, objective.kl_schedule=cyclical, or a weaker decoder"
        )
    elif active < max(1, math.ceil(min_active_fraction * latent_dim)):
        found.append(
            f"only {active} of {latent_dim} latent dimensions are active: posterior collapse; try "
            "objective.free_bits=0.5 or objective.kl_schedule=linear with objective.kl_warmup_steps, "
            "or a smaller model.latent_dim"
        )
    return found

"""Posterior-collapse diagnostics: mutual information I(x; z), active units, and warnings."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vaekit.models.outputs import Posterior


def mutual_information(
    posteriors: Posterior | Sequence[Posterior], generator: torch.Generator | None = None, limit: int | None = None
) -> float:
    """Estimate I(x; z) under q(x, z) = p_data(x) q(z|x) from the posteriors of N examples, nats.

    I = E_x E_{q(z|x)} [log q(z|x) - log q(z)], with the aggregate posterior q(z) approximated by the
    mixture (1/N) sum_j q(z|x_j) over the same N examples (Hoffman & Johnson 2016; He et al. 2019,
    Eq. 4). The estimate is biased low by at most log N. `posteriors`: one (N, D) posterior or the
    (B_b, D) posteriors of consecutive batches, of any kind (models/outputs.py, `Posterior`); the first
    `limit` examples are used. Memory O(N^2).
    """
    parts, covered = [], 0
    for q in [posteriors] if not isinstance(posteriors, Sequence) else posteriors:
        if limit is not None and covered >= limit:
            break
        parts.append(q)
        covered += q.mean.shape[0]
    z = torch.cat([q.rsample(1, generator)[0] for q in parts])[:limit]  # (N, D), one z per example
    n = z.shape[0]
    pairs = torch.cat([q.cross_log_prob(z) for q in parts], dim=1)[:, :n].double()  # [i, j] = log q(z_i | x_j)
    log_qz = torch.logsumexp(pairs, dim=1) - math.log(n)  # (N,)
    return float((pairs.diagonal() - log_qz).mean())  # the diagonal: log q(z_i|x_i)


def active_units(means: Tensor, threshold: float = 0.01) -> int:
    """Dimensions whose posterior mean varies across x: Var_x(E_q[z_d]) > threshold (Burda et al. 2016)."""
    if means.shape[0] < 2:
        return 0
    return int((means.var(0) > threshold).sum())


def collapse_warnings(
    kl: float, active: int, latent_dim: int, min_active_fraction: float = 0.1, min_kl: float = 0.05,
    shared_kl: float = 1.0,
) -> list[str]:
    """Warnings that name the cause and a remedy when z carries (almost) no information about x.

    Either the posterior has collapsed onto the prior (KL near 0), or too few dimensions vary with the input;
    with none varying and a KL of `shared_kl` nats or more, the KL is spent on a posterior shared by every input.
    """
    found = []
    if kl < min_kl:
        found.append(
            f"KL is {kl:.3f} nats: the posterior has collapsed onto the prior and z carries no "
            "information; try objective.free_bits=0.5, objective.kl_schedule=cyclical, or a weaker decoder"
        )
    elif active == 0 and kl >= shared_kl:
        found.append(
            f"no latent dimension is active although KL is {kl:.1f} nats: every input gets nearly the same "
            "posterior, away from the prior, so z carries almost no information about x (not a collapse onto "
            "the prior); early in training this passes; if it persists, lower optim.lr, or with annealed-vae "
            "give the capacity more steps (objective.capacity_steps) or lower objective.capacity_gamma"
        )
    elif active < max(1, math.ceil(min_active_fraction * latent_dim)):
        found.append(
            f"only {active} of {latent_dim} latent dimensions are active: posterior collapse; try "
            "objective.free_bits=0.5 or objective.kl_schedule=linear with objective.kl_warmup_steps, "
            "or a smaller model.latent_dim"
        )
    return found


def group_collapse_warnings(kl_per_group: list[float], min_kl: float = 0.05) -> list[str]:
    """A warning per group of a hierarchy (top first) whose KL is under `min_kl` nats: it has collapsed onto its prior.

    Upper groups collapsing is the usual failure of deep VAEs (NVAE issue 15): the decoder learns
    to do without them. The remedy is to keep them in play until they are used.
    """
    n = len(kl_per_group)
    found = []
    for level, kl in enumerate(kl_per_group):
        if kl < min_kl:
            where = "the top group" if level == 0 else f"group {level + 1} of {n} from the top"
            found.append(
                f"{where} carries {kl:.3f} nats: it has collapsed onto its prior; try "
                "objective.free_bits_group=0.5 (or objective.free_bits) or a longer KL warm-up "
                "(objective.kl_schedule=linear, a larger objective.kl_warmup_steps)"
            )
    return found


def codebook_warnings(usage: float, perplexity: float, size: int, min_usage: float = 0.5) -> list[str]:
    """A warning naming the remedies when fewer than `min_usage` of a VQ model's K codes are in use: codebook
    collapse, the VQ-VAE's posterior collapse (most codes never chosen, so the code grid carries little)."""
    if usage >= min_usage:
        return []
    return [
        f"only {usage:.0%} of the {size} codes are in use (perplexity {perplexity:.1f}): codebook collapse; "
        "restart unused codes sooner (a higher model.vq.dead_threshold, a lower model.vq.decay), start from k-means "
        "(model.vq.kmeans_iters=10), try model.vq.gradient=rotation, or use a smaller model.vq.codebook_size; early "
        "in a run, unused codes may not have been restarted yet"
    ]

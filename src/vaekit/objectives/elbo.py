"""`elbo`: the negative ELBO with its training knobs (Kingma & Welling 2014).

loss = -E_q[log p(x|z)] + beta * sum_l w_l c_l KL_l, per example, averaged over the batch, where beta is the KL
weight of the step (beta-VAE, Higgins et al. 2017, and the KL schedules), w_l a per-group warm-up, c_l NVAE's KL
balancing coefficients, and each KL floored by free bits. The reported score is the -ELBO at weight 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import ElboTerms, elbo_terms
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets


@dataclass(frozen=True)
class Elbo:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        return None

    def compile_blocker(self) -> str | None:
        if self.cfg.group_warmup_steps or self.cfg.kl_balance:
            return "per-group KL weights (objective.group_warmup_steps, objective.kl_balance)"
        return None

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=self.samples, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        kl = weighted_kl(terms, self.cfg.free_bits, self.cfg.free_bits_group, knobs.group_weights, knobs.kl_balance,
                         batch.mean)
        loss = -batch.mean(terms.log_px) + knobs.kl_weight * kl
        per_example = (knobs.kl_weight * terms.kl - terms.log_px).detach()
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach()}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)


def weighted_kl(
    terms: ElboTerms,
    free_bits: float = 0.0,
    free_bits_group: float = 0.0,
    group_weights: list[float] | None = None,
    balance: bool = False,
    mean: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """() nats: sum_l w_l c_l KL_l over the groups, each a batch mean floored by free bits.

    Free bits (Kingma et al. 2016, Eq. 15) act on batch means: a dimension whose mean KL is below `free_bits` nats
    contributes a constant, so its gradient is zero; a Monte Carlo group has no per-dimension KL and gets the same
    budget on its total, `free_bits * D_l`. `free_bits_group` does the same per group. `group_weights` w_l (top
    first) are per-group KL weights; `balance` sets c_l by NVAE's KL balancing, else c_l = 1. `mean` is the batch
    mean over dim 0 (`Batch.mean`: weighted by class with data.class_weights).
    """
    mean = mean or (lambda values: values.mean(0))
    coeffs = kl_balance_coefficients(terms.kl_per_group.detach(), terms.group_dims) if balance else None
    total: Tensor | None = None
    for i, (kl, dims) in enumerate(zip(terms.kl_groups, terms.group_dims, strict=True)):
        if kl.dim() == 2:
            per_dim = mean(kl)
            if free_bits > 0:
                per_dim = per_dim.clamp(min=free_bits)
            group = per_dim.sum()
        else:
            group = mean(kl)
            if free_bits > 0:
                group = group.clamp(min=free_bits * dims)
        if free_bits_group > 0:
            group = group.clamp(min=free_bits_group)
        if group_weights is not None:
            group = group_weights[i] * group
        if coeffs is not None:
            group = coeffs[i] * group
        total = group if total is None else total + group
    assert total is not None
    return total


def kl_balance_coefficients(kl_per_group: Tensor, group_dims: tuple[int, ...]) -> Tensor:
    """NVAE's KL balancing (Vahdat & Kautz 2020, App. A; their utils.kl_balancer), (L,) with mean 1.

    c_l is proportional to the group's batch-mean |KL| (+ 0.01) divided by alpha_l, here the group's
    size relative to the smallest (NVAE divides by the groups' spatial size): a group that carries
    little is pushed down less, so the upper groups are not switched off while the KL weight ramps.
    """
    c = kl_per_group.abs().mean(0) + 0.01  # (L,)
    alpha = torch.tensor(group_dims, dtype=c.dtype, device=c.device)
    alpha = alpha / alpha.min()
    c = c / alpha * c.sum()
    return c / c.mean()

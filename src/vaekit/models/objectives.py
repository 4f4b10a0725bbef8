"""Objectives as pure functions of tensors: the ELBO's terms, the importance-weighted bound, units.

Signs and units are in the names: `log_px` and `log_w` are nats (higher is better), `neg_elbo`
is nats per example (lower is better), `bits_per_dim` divides nats by D * ln 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vaekit.models.distributions import StandardNormal
    from vaekit.models.vae import VAEOutput


@dataclass(frozen=True)
class ElboTerms:
    log_px: Tensor  # (B,) nats: E_q[log p(x|z)], summed over pixels, averaged over the S samples
    kl_per_dim: Tensor  # (B, D) nats: KL(q(z_d|x) || p(z_d)), closed form

    @property
    def kl(self) -> Tensor:
        """(B,) nats."""
        return self.kl_per_dim.sum(-1)

    @property
    def neg_elbo_per_example(self) -> Tensor:
        """(B,) nats: -log p(x|z) + KL, the unweighted bound used for reporting."""
        return self.kl - self.log_px

    def neg_elbo(self, beta: float | Tensor = 1.0, free_bits: float = 0.0) -> Tensor:
        """() nats per example: the training loss, -E[log p(x|z)] + beta * KL.

        Free bits (Kingma et al. 2016, Eq. 15) act on the batch mean of each dimension's KL: a
        dimension below `free_bits` nats contributes a constant, so its gradient is zero.
        """
        kl = self.kl_per_dim.mean(0)
        if free_bits > 0:
            kl = kl.clamp(min=free_bits)
        return -self.log_px.mean() + beta * kl.sum()


def elbo_terms(out: VAEOutput, x: Tensor, prior: StandardNormal) -> ElboTerms:
    """The ELBO's two terms for a batch x (B, C, H, W) from a forward pass with S samples."""
    log_px = out.px.log_prob(x).mean(0)  # (S, B) -> (B,)
    return ElboTerms(log_px=log_px.float(), kl_per_dim=prior.kl_per_dim(out.q).float())


def log_weights(out: VAEOutput, x: Tensor, prior: StandardNormal) -> Tensor:
    """Importance log-weights log p(x, z_s) - log q(z_s|x), (S, B) nats."""
    return (out.px.log_prob(x) + prior.log_prob(out.z) - out.q.log_prob(out.z)).float()


def iw_bound(log_w: Tensor) -> Tensor:
    """The importance-weighted bound (Burda et al. 2016, Eq. 8), (S, B) -> (B,) nats.

    log (1/S) sum_s w_s; with S = 1 it is a single-sample ELBO estimate.
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def iwae_loss(out: VAEOutput, x: Tensor, prior: StandardNormal, dreg: bool = False) -> Tensor:
    """-(k-sample bound), () nats per example, from a forward pass with S = k samples.

    With `dreg`, the encoder's gradient is the doubly reparameterized estimator (Tucker et al.
    2019, Eq. 5): log q is evaluated with the posterior's parameters detached, so the encoder
    learns only through z, and the gradient reaching z is re-weighted by the normalized weights
    once more (w~^2 in total), which removes the score-function term whose variance grows with k.
    The decoder's gradient is the usual IWAE one. The loss value is the same either way.
    """
    if not dreg:
        return -iw_bound(log_weights(out, x, prior)).mean()
    q_stop = type(out.q)(out.q.mean.detach(), out.q.logvar.detach())
    log_w = (out.px.log_prob(x) + prior.log_prob(out.z) - q_stop.log_prob(out.z)).float()  # (S, B)
    weights = torch.softmax(log_w, dim=0).detach()  # (S, B) normalized importance weights
    if out.z.requires_grad:
        out.z.register_hook(lambda grad: grad * weights.unsqueeze(-1).to(grad.dtype))
    surrogate = (weights * log_w).sum(0)  # gradient: sum_s w~_s grad log w_s
    value = iw_bound(log_w).detach()
    return -(surrogate + (value - surrogate.detach())).mean()  # the bound's value, DReG's gradient


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Convert nats per example to bits per data dimension."""
    return nats / (dims * math.log(2))

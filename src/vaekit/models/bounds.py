"""Bounds as pure functions of tensors: the ELBO's terms, the importance-weighted bound, units.

Signs and units are in the names: `log_px` and `log_w` are nats (higher is better), `neg_elbo`
is nats per example (lower is better), `bits_per_dim` divides nats by D * ln 2.

The KL is a sum over latent groups. A group's KL is exact where its posterior knows it for its prior
(`Posterior.kl`: (B, D_l) nats, per dimension; two diagonal Gaussians), and otherwise a Monte Carlo
estimate from the forward pass's own samples, log q(z) - log p(z) ((B,) nats; a mixture prior or a flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.models.outputs import LatentGroup, VAEOutput


@dataclass(frozen=True)
class ElboTerms:
    log_px: Tensor  # (B,) nats: E_q[log p(x|z)], summed over pixels, averaged over the S samples
    kl_groups: tuple[Tensor, ...]  # per group, top first: (B, D_l) closed form, or (B,) Monte Carlo
    group_dims: tuple[int, ...]  # D_l per group

    @property
    def kl_per_dim(self) -> Tensor:
        """(B, D) nats over the closed-form groups' dimensions (all of them for Gaussian models)."""
        closed = [kl for kl in self.kl_groups if kl.dim() == 2]
        if len(closed) == 1:
            return closed[0]
        if not closed:
            return self.log_px.new_zeros(self.log_px.shape[0], 0)
        return torch.cat(closed, dim=-1)

    @property
    def kl_per_group(self) -> Tensor:
        """(B, L) nats, top first."""
        return torch.stack([kl.sum(-1) if kl.dim() == 2 else kl for kl in self.kl_groups], dim=-1)

    @property
    def closed_form(self) -> tuple[bool, ...]:
        """Per group: is its KL the closed form (True) or a single-sample Monte Carlo estimate (False)?"""
        return tuple(kl.dim() == 2 for kl in self.kl_groups)

    @property
    def kl(self) -> Tensor:
        """(B,) nats."""
        total = None
        for kl in self.kl_groups:
            part = kl.sum(-1) if kl.dim() == 2 else kl
            total = part if total is None else total + part
        assert total is not None
        return total

    @property
    def neg_elbo(self) -> Tensor:
        """(B,) nats: -E[log p(x|z)] + KL, the negative ELBO itself (the objectives weigh its terms for training)."""
        return self.kl - self.log_px


def group_kl(group: LatentGroup) -> Tensor:
    """KL(q || p) of one group: (B, D) where the posterior knows it exactly for its prior, else (B,) Monte Carlo."""
    exact = group.q.kl(group.p) if group.log_q is None else None
    if exact is not None:
        return exact if exact.dim() == 2 else exact.mean(0)  # (S, B, D) given the groups above -> (B, D)
    return (group.log_qz() - group.p.log_prob(group.z)).mean(0)  # (S, B) -> (B,)


def elbo_terms(out: VAEOutput, x: Tensor) -> ElboTerms:
    """The ELBO's terms for a batch x (B, C, H, W) from a forward pass with S samples."""
    log_px = out.px.log_prob(x).mean(0)  # (S, B) -> (B,)
    kls = tuple(group_kl(g).float() for g in out.groups)
    return ElboTerms(log_px=log_px.float(), kl_groups=kls, group_dims=tuple(g.z.shape[-1] for g in out.groups))


def log_weights(out: VAEOutput, x: Tensor) -> Tensor:
    """Importance log-weights log p(x, z_s) - log q(z_s|x), (S, B) nats, summed over groups."""
    log_w = out.px.log_prob(x)
    for g in out.groups:
        log_w = log_w + g.p.log_prob(g.z) - g.log_qz()
    return log_w.float()


def iw_bound(log_w: Tensor) -> Tensor:
    """The importance-weighted bound (Burda et al. 2016, Eq. 8), (S, B) -> (B,) nats.

    log (1/S) sum_s w_s; with S = 1 it is a single-sample ELBO estimate.
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Convert nats per example to bits per data dimension."""
    return nats / (dims * math.log(2))

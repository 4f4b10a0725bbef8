"""Objectives as pure functions of tensors: the ELBO's terms, the importance-weighted bound, units.

Signs and units are in the names: `log_px` and `log_w` are nats (higher is better), `neg_elbo`
is nats per example (lower is better), `bits_per_dim` divides nats by D * ln 2.

The KL is a sum over latent groups. A group's KL is in closed form when its posterior and prior
are both diagonal Gaussians ((B, D_l) nats, per dimension), and otherwise a Monte Carlo estimate
from the forward pass's own samples, log q(z) - log p(z) ((B,) nats; a mixture prior or a flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.errors import ConfigError
from vaekit.models.distributions import DiagonalGaussian, StandardNormal, gaussian_kl
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
    def neg_elbo_per_example(self) -> Tensor:
        """(B,) nats: -log p(x|z) + KL, the unweighted bound used for reporting."""
        return self.kl - self.log_px

    def neg_elbo(
        self,
        beta: float | Tensor = 1.0,
        free_bits: float = 0.0,
        free_bits_group: float = 0.0,
        group_weights: list[float] | None = None,
        balance: bool = False,
    ) -> Tensor:
        """() nats per example: the training loss, -E[log p(x|z)] + beta * sum_l w_l c_l KL_l.

        Free bits (Kingma et al. 2016, Eq. 15) act on batch means: a dimension whose mean KL is
        below `free_bits` nats contributes a constant, so its gradient is zero; a Monte Carlo group
        has no per-dimension KL and gets the same budget on its total, `free_bits * D_l`.
        `free_bits_group` does the same per group: a group below it is not pushed further down.
        `group_weights` w_l (top first) are per-group KL weights (a per-group warm-up); `balance`
        sets c_l by NVAE's KL balancing (`kl_balance_coefficients`), else c_l = 1.
        """
        coeffs = kl_balance_coefficients(self.kl_per_group.detach(), self.group_dims) if balance else None
        total: Tensor | None = None
        for i, (kl, dims) in enumerate(zip(self.kl_groups, self.group_dims, strict=True)):
            if kl.dim() == 2:
                per_dim = kl.mean(0)
                if free_bits > 0:
                    per_dim = per_dim.clamp(min=free_bits)
                group = per_dim.sum()
            else:
                group = kl.mean()
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
        return -self.log_px.mean() + beta * total


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


def group_kl(group: LatentGroup) -> Tensor:
    """KL(q || p) of one group: (B, D) in closed form where both are diagonal Gaussians, else (B,) Monte Carlo."""
    if group.log_q is None and isinstance(group.p, StandardNormal):
        kl = group.p.kl_per_dim(group.q)  # Kingma & Welling 2014, Appendix B
        return kl if kl.dim() == 2 else kl.mean(0)
    if group.log_q is None and isinstance(group.p, DiagonalGaussian):
        return gaussian_kl(group.q, group.p).mean(0)  # (S, B, D) given the groups above -> (B, D)
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


def iwae_loss(out: VAEOutput, x: Tensor, dreg: bool = False) -> Tensor:
    """-(k-sample bound), () nats per example, from a forward pass with S = k samples.

    With `dreg`, the encoder's gradient is the doubly reparameterized estimator (Tucker et al.
    2019, Eq. 5): log q is evaluated with the posterior's parameters detached, so the encoder
    learns only through z, and the gradient reaching z is re-weighted by the normalized weights
    once more (w~^2 in total), which removes the score-function term whose variance grows with k.
    The decoder's gradient is the usual IWAE one. The loss value is the same either way. DReG
    needs q's density with its parameters held fixed: one Gaussian group, so a hierarchy (whose
    lower posteriors depend on sampled groups above) or a flow is refused.
    """
    if not dreg:
        return -iw_bound(log_weights(out, x)).mean()
    if len(out.groups) != 1 or out.groups[0].log_q is not None:
        raise ConfigError(
            "objective.estimator=dreg needs a one-group Gaussian posterior (model.kind=vae, model.posterior=gaussian); "
            "use estimator=standard for hierarchies and flows"
        )
    g = out.groups[0]
    q_stop = DiagonalGaussian(g.q.mean.detach(), g.q.logvar.detach())
    log_w = (out.px.log_prob(x) + g.p.log_prob(g.z) - q_stop.log_prob(g.z)).float()  # (S, B)
    weights = torch.softmax(log_w, dim=0).detach()  # (S, B) normalized importance weights
    if g.z.requires_grad:
        g.z.register_hook(lambda grad: grad * weights.unsqueeze(-1).to(grad.dtype))
    surrogate = (weights * log_w).sum(0)  # gradient: sum_s w~_s grad log w_s
    value = iw_bound(log_w).detach()
    return -(surrogate + (value - surrogate.detach())).mean()  # the bound's value, DReG's gradient


def bits_per_dim(nats: Tensor | float, dims: int) -> Tensor | float:
    """Convert nats per example to bits per data dimension."""
    return nats / (dims * math.log(2))

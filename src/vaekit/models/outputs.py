"""What a forward pass returns: one `LatentGroup` per stochastic layer, top first, and p(x|z).

These sit beside the distributions they hold and below both the models that make them and the
objectives that score them, so neither imports the other. A group's posterior and prior are any
objects with the methods of `Posterior` and `PriorDistribution` (models/distributions.py's
Gaussians, or a kind's own categorical or quantized latent): the bounds, objectives, evaluation and
guards read a group through these methods only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from vaekit.models.likelihoods import PixelDistribution


class PriorDistribution(Protocol):
    """p(z_l) or p(z_l | z_>l): a log-density over the last dimension."""

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...) nats."""
        ...


class Posterior(Protocol):
    """q(z_l | x, z_>l) of one group: parameters (B, D) for the top group, (S, B, D) below it."""

    @property
    def mean(self) -> Tensor:
        """The point in z-space the encoder maps x to (B, D) or (S, B, D): a Gaussian's mean, a code vector."""
        ...

    def rsample(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """(S, B, D) samples through which gradients reach the parameters."""
        ...

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...) nats, broadcasting leading dimensions against the parameters'."""
        ...

    def cross_log_prob(self, z: Tensor) -> Tensor:
        """log q(z_n | x_b) for samples z (N, D) against each of the B examples' posteriors: (N, B) nats."""
        ...

    def kl(self, prior: object) -> Tensor | None:
        """KL(q || prior) per dimension (..., D) nats where it is exact for this prior, else None (Monte Carlo)."""
        ...

    def detach(self) -> Posterior:
        """The same distribution, its parameters cut from the graph (DReG's log q)."""
        ...


@dataclass(frozen=True)
class LatentGroup:
    """One stochastic layer of a forward pass with S samples of z per example.

    `q` is the posterior (a flow's Gaussian base); its parameters are (B, D) when q depends on x
    alone (the top group) and (S, B, D) when it also depends on the sampled groups above. `log_q` is
    log q(z) at z (S, B) when q is a flow (its density known only at its own samples), else None.
    """

    q: Posterior
    p: PriorDistribution
    z: Tensor  # (S, B, D) reparameterized samples, flattened per group (conv groups: D = C*H*W)
    log_q: Tensor | None = None

    def log_qz(self) -> Tensor:
        """log q(z) (S, B) nats at this group's own samples."""
        return self.log_q if self.log_q is not None else self.q.log_prob(self.z)

    @property
    def posterior_mean(self) -> Tensor:
        """(B, D): the posterior's mean (a flow's base mean), at the first sample of the groups above."""
        return self.q.mean if self.q.mean.dim() == 2 else self.q.mean[0]


@dataclass(frozen=True)
class VAEOutput:
    groups: tuple[LatentGroup, ...]  # top (l = L) first, bottom (l = 1) last
    px: PixelDistribution  # p(x|z) with batch shape (S, B)

    @property
    def z(self) -> Tensor:
        """(S, B, D_total): every group's sample, top first."""
        return self.groups[0].z if len(self.groups) == 1 else torch.cat([g.z for g in self.groups], dim=-1)

    @property
    def q(self) -> Posterior:
        """The posterior of a one-group model (a flow's Gaussian base)."""
        if len(self.groups) != 1:
            raise ValueError("a hierarchical model's posterior is per group: use out.groups[l].q")
        return self.groups[0].q

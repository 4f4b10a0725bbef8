"""Priors over the top latent group, as registry entries (`model.prior`).

- `standard-normal`: N(0, I), KL in closed form.
- `mog`: a mixture of K diagonal Gaussians with learned means, variances and weights.
- `vamp`: the VampPrior (Tomczak & Welling 2018, Eq. 9): p(z) = 1/K sum_k q(z | u_k), with K
  learned pseudo-inputs u_k pushed through the model's own encoder.

Each is an nn.Module whose `distribution(encode)` gives the distribution for this forward pass
(`encode` maps images to the top group's Gaussian posterior, which only the VampPrior uses). The
mixtures' log-density is exact; their KL against q has no closed form, so the ELBO uses a
single-sample Monte Carlo estimate log q(z) - log p(z) (reported as such).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture, StandardNormal, soft_clamp
from vaekit.registry import Registry

Encode = Callable[[Tensor], DiagonalGaussian]
Shape = tuple[int, int, int]


class Prior(nn.Module):
    def distribution(self, encode: Encode) -> StandardNormal | GaussianMixture:  # pragma: no cover - interface
        raise NotImplementedError


PRIORS: Registry[Callable[[int, ModelConfig, Shape], Prior]] = Registry("prior")


@PRIORS.register("standard-normal")
class StandardNormalPrior(Prior):
    def __init__(self, latent_dim: int, cfg: ModelConfig, shape: Shape) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def distribution(self, encode: Encode) -> StandardNormal:
        return StandardNormal(self.latent_dim)


@PRIORS.register("mog")
class MixturePrior(Prior):
    """K = `model.prior_components` learned diagonal Gaussians with learned weights."""

    def __init__(self, latent_dim: int, cfg: ModelConfig, shape: Shape) -> None:
        super().__init__()
        k = cfg.prior_components
        self.mean = nn.Parameter(torch.randn(k, latent_dim))  # spread out, so components start apart
        self.logvar = nn.Parameter(torch.zeros(k, latent_dim))
        self.logits = nn.Parameter(torch.zeros(k))
        self.logvar_bounds = (cfg.logvar_min, cfg.logvar_max)

    def distribution(self, encode: Encode) -> GaussianMixture:
        logvar = soft_clamp(self.logvar, *self.logvar_bounds)
        return GaussianMixture(self.mean, logvar, torch.log_softmax(self.logits, dim=0))


@PRIORS.register("vamp")
class VampPrior(Prior):
    """K pseudo-inputs u_k = sigmoid(logits_k) in [0, 1], the shape of an image.

    Tomczak & Welling map an identity matrix through a hard-tanh layer; a sigmoid of free logits is
    the same family with a smooth gradient. Initialized near grey (0.5 +- noise), as theirs are.
    """

    def __init__(self, latent_dim: int, cfg: ModelConfig, shape: Shape) -> None:
        super().__init__()
        self.pseudo_logits = nn.Parameter(0.1 * torch.randn(cfg.prior_components, *shape))

    def distribution(self, encode: Encode) -> GaussianMixture:
        q = encode(torch.sigmoid(self.pseudo_logits))  # (K, D)
        k = q.mean.shape[0]
        log_weights = torch.full((k,), -math.log(k), device=q.mean.device)
        return GaussianMixture(q.mean, q.logvar, log_weights)


def build_prior(latent_dim: int, cfg: ModelConfig, shape: Shape) -> Prior:
    return PRIORS.get(cfg.prior)(latent_dim, cfg, shape)

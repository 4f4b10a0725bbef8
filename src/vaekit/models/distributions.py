"""Small distribution objects with the shapes a VAE needs (no torch.distributions validation cost)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def soft_clamp(x: Tensor, low: float, high: float) -> Tensor:
    """Smoothly squash `x` into [low, high]; close to the identity near the middle.

    Soft clamping of posterior parameters follows NVAE (Vahdat & Kautz 2020) and diffusers'
    DiagonalGaussianDistribution: a hard clamp stops the gradient at the bounds, tanh only
    far beyond them (float32 saturates about 10 half-widths out).
    """
    mid = (high + low) / 2
    half = (high - low) / 2
    return mid + half * torch.tanh((x - mid) / half)


@dataclass(frozen=True)
class DiagonalGaussian:
    """q(z|x) = N(mean, diag(exp(logvar))); mean and logvar are (B, D)."""

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterized samples z = mean + std * eps, (S, B, D) (Kingma & Welling 2014, Sec. 2.4)."""
        shape = (n_samples, *self.mean.shape)
        device = generator.device if generator is not None else self.mean.device  # a CPU generator on CUDA data
        eps = torch.randn(shape, generator=generator, device=device, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + self.std * eps

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over D; z is (S, B, D), returns (S, B) nats (any leading shape that broadcasts)."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean) ** 2 * torch.exp(-self.logvar)).sum(-1)

    def cross_log_prob(self, z: Tensor) -> Tensor:
        """log q(z_n | x_b) for every sample against every example's posterior: z (N, D) -> (N, B) nats, float64
        (the aggregate posterior's pieces; float64 keeps the matrix-product expansion exact enough)."""
        return pairwise_log_density(z.double(), self.mean.double(), self.logvar.double())

    def kl(self, prior: object) -> Tensor | None:
        """KL(self || prior) per dimension in closed form, (..., D) nats, where `prior` is a standard normal or a
        diagonal Gaussian; None for any other prior (the caller estimates it by Monte Carlo)."""
        if isinstance(prior, StandardNormal):
            return prior.kl_per_dim(self)  # Kingma & Welling 2014, Appendix B
        if isinstance(prior, DiagonalGaussian):
            return gaussian_kl(self, prior)
        return None

    def detach(self) -> DiagonalGaussian:
        """The same distribution with its parameters cut from the graph (a gradient reaches z only through z)."""
        return DiagonalGaussian(self.mean.detach(), self.logvar.detach())


class StandardNormal:
    """The prior p(z) = N(0, I) over D dimensions."""

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...) nats."""
        return -0.5 * (LOG_2PI + z**2).sum(-1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """(n, D) draws; `temperature` scales the standard deviation."""
        return temperature * torch.randn(n, self.latent_dim, generator=generator, device=device)

    def kl_per_dim(self, q: DiagonalGaussian) -> Tensor:
        """KL(q || N(0, I)) per dimension, (B, D) nats, in closed form.

        Kingma & Welling 2014, Appendix B: -KL = 1/2 * sum(1 + log(sigma^2) - mu^2 - sigma^2).
        """
        return 0.5 * (q.mean**2 + torch.exp(q.logvar) - 1.0 - q.logvar)


def bernoulli_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """log Bernoulli(x | sigmoid(logits)) per element; also valid for x in [0, 1] (continuous BCE)."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def gaussian_kl(q: DiagonalGaussian, p: DiagonalGaussian) -> Tensor:
    """KL(q || p) per dimension for two diagonal Gaussians of the same shape, nats.

    KL = 1/2 * (log s_p^2 - log s_q^2 + (s_q^2 + (m_q - m_p)^2) / s_p^2 - 1), summed nowhere.
    """
    return 0.5 * (p.logvar - q.logvar + (torch.exp(q.logvar) + (q.mean - p.mean) ** 2) * torch.exp(-p.logvar) - 1.0)


def pairwise_log_density(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z_n; mean_k, diag(exp(logvar_k))) for every z (..., D) and component (K, D): (..., K) nats.

    Written as matrix products, sum_d (z_d - m_kd)^2 / v_kd = z^2 @ (1/v)^T - 2 z @ (m/v)^T + sum_d m_kd^2 / v_kd,
    so N samples against K Gaussians never build an (N, K, D) tensor.
    """
    inv_var = torch.exp(-logvar)  # (K, D)
    const = -0.5 * (mean.shape[-1] * LOG_2PI + logvar.sum(-1) + (mean**2 * inv_var).sum(-1))  # (K,)
    return const - 0.5 * (z**2 @ inv_var.T) + z @ (mean * inv_var).T


@dataclass(frozen=True)
class GaussianMixture:
    """p(z) = sum_k w_k N(z; mean_k, diag(exp(logvar_k))): the mixture and VampPrior priors.

    mean, logvar (K, D); log_weights (K,) normalized. The log-density is exact (a logsumexp over
    the K components), written as matrix products so (S, B) latents against K = 500 components
    never build an (S, B, K, D) tensor; it runs in float32 outside autocast, since bf16 products
    would lose the quadratic form's digits.
    """

    mean: Tensor
    logvar: Tensor
    log_weights: Tensor

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...) nats."""
        with torch.autocast(z.device.type, enabled=False):
            per_component = pairwise_log_density(z.float(), self.mean.float(), self.logvar.float())  # (..., K)
            return torch.logsumexp(per_component + self.log_weights.float(), dim=-1)

    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """(n, D) draws: a component by its weight, then its Gaussian with std scaled by `temperature`."""
        weights = self.log_weights.detach().float().softmax(0).cpu()
        k = torch.multinomial(weights, n, replacement=True, generator=generator).to(self.mean.device)
        eps = torch.randn(n, self.mean.shape[-1], generator=generator).to(self.mean.device)
        return self.mean[k] + temperature * torch.exp(0.5 * self.logvar[k]) * eps

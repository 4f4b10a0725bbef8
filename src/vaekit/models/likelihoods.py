"""Likelihoods p(x|z): map decoder outputs (N, K*C, H, W) to a per-image distribution.

Each entry of LIKELIHOODS is built as `factory(shape, cfg)` and says how many decoder output
channels it needs per image channel (`params_per_channel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.distributions import LOG_2PI, bernoulli_log_prob
from vaekit.registry import Registry


class PixelDistribution(Protocol):
    """p(x|z) for a batch of images with batch shape (...,); events are (C, H, W)."""

    def log_prob(self, x: Tensor) -> Tensor:
        """x (..., C, H, W) -> (...) nats, summed over pixels."""
        ...

    @property
    def mean(self) -> Tensor:
        """(..., C, H, W) in the data's units."""
        ...

    def sample(self, generator: torch.Generator | None = None) -> Tensor: ...


class Likelihood(nn.Module):
    params_per_channel: int = 1

    def param_channels(self, channels: int) -> int:
        """Decoder output channels this likelihood reads, for images of `channels` channels."""
        return channels * self.params_per_channel

    def forward(self, params: Tensor) -> PixelDistribution:  # pragma: no cover - interface
        raise NotImplementedError


LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")


@dataclass(frozen=True)
class BernoulliPixels:
    logits: Tensor  # (..., C, H, W)

    def log_prob(self, x: Tensor) -> Tensor:
        # BCE with logits: stable and ~5x cheaper than sigmoid followed by BCE (DESIGN.md).
        return bernoulli_log_prob(self.logits, x.expand_as(self.logits)).flatten(-3).sum(-1)

    @property
    def mean(self) -> Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(self.mean, generator=generator)


@dataclass(frozen=True)
class GaussianPixels:
    loc: Tensor  # (..., C, H, W)
    scale: Tensor  # broadcastable to loc

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.loc) / self.scale
        log_density = -0.5 * (LOG_2PI + z**2) - torch.log(self.scale)
        return log_density.expand_as(self.loc).flatten(-3).sum(-1)

    @property
    def mean(self) -> Tensor:
        return self.loc

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(self.loc.shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.scale * eps


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """Pixels as Bernoulli probabilities; with grey levels in [0, 1] this is the usual continuous BCE."""

    def __init__(self, shape: tuple[int, int, int], cfg: ModelConfig) -> None:
        super().__init__()

    def forward(self, params: Tensor) -> BernoulliPixels:
        return BernoulliPixels(params)


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """N(loc, scale^2) per pixel with a learned scale, global or per pixel, floored at `min_scale`."""

    def __init__(self, shape: tuple[int, int, int], cfg: ModelConfig) -> None:
        super().__init__()
        self.min_scale = cfg.min_scale
        size = shape if cfg.gaussian_scale == "pixel" else (1, 1, 1)
        # softplus(raw) + min_scale starts near 0.1 + min_scale: wide enough that early steps are tame.
        self.raw_scale = nn.Parameter(torch.full(size, math.log(math.expm1(0.1))))

    def forward(self, params: Tensor) -> GaussianPixels:
        scale = F.softplus(self.raw_scale) + self.min_scale
        return GaussianPixels(params, scale)


def _bin_log_prob(xs: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """log P(bin of xs) per pixel under a logistic discretized to 256 bins of width 2/255 on [-1, 1]."""
    inv_s = torch.exp(-log_scale)
    centred = xs - loc
    plus_in = inv_s * (centred + 1 / 255)
    min_in = inv_s * (centred - 1 / 255)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # log sigmoid(plus_in), for the bin at 0
    log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - sigmoid(min_in)), for the bin at 255
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    mid_in = inv_s * centred  # where the bin mass underflows, use the density at its centre times its width
    log_pdf_mid = mid_in - log_scale - 2 * F.softplus(mid_in)
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    return torch.where(xs < -0.999, log_cdf_plus, torch.where(xs > 0.999, log_one_minus_cdf_min, inner))


def _bin_probs(loc: Tensor, log_scale: Tensor) -> Tensor:
    """Probabilities of the 256 levels, (..., 256), of logistics with parameters (...)."""
    k = torch.arange(1, 256, dtype=loc.dtype, device=loc.device)
    edges = (2 * k - 1) / 255 - 1  # between level k-1 (at 2(k-1)/255 - 1) and level k
    cdf = torch.sigmoid((edges - loc[..., None]) * torch.exp(-log_scale)[..., None])
    zeros = torch.zeros_like(cdf[..., :1])
    return torch.diff(torch.cat([zeros, cdf, zeros + 1], dim=-1), dim=-1)


def _logistic_sample(loc: Tensor, log_scale: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(loc.shape, generator=generator, device=loc.device).clamp(1e-5, 1 - 1e-5)
    xs = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.round((xs.clamp(-1, 1) + 1) / 2 * 255) / 255


@dataclass(frozen=True)
class DiscretizedLogisticPixels:
    """8-bit pixels as a logistic discretized to 256 bins on [-1, 1] (Salimans et al. 2017, PixelCNN++).

    loc, log_scale: (..., C, H, W) on the [-1, 1] scale; x is given in [0, 1] (v / 255).
    """

    loc: Tensor
    log_scale: Tensor

    def log_prob(self, x: Tensor) -> Tensor:
        return _bin_log_prob(x * 2 - 1, self.loc, self.log_scale).flatten(-3).sum(-1)

    @property
    def mean(self) -> Tensor:
        return (self.loc.clamp(-1, 1) + 1) / 2

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return _logistic_sample(self.loc, self.log_scale, generator)

    def bin_probs(self) -> Tensor:
        """Probabilities of the 256 levels, (..., C, H, W, 256); for entropy coding."""
        return _bin_probs(self.loc, self.log_scale)


@dataclass(frozen=True)
class LogisticMixturePixels:
    """A mixture of K discretized logistics per pixel (Salimans et al. 2017): can put mass at both
    ends at once, as MNIST's mostly-black, mostly-white pixels want.

    logits, loc, log_scale: (..., K, C, H, W) on the [-1, 1] scale; x is given in [0, 1] (v / 255).
    """

    logits: Tensor
    loc: Tensor
    log_scale: Tensor

    def log_prob(self, x: Tensor) -> Tensor:
        per_component = _bin_log_prob((x * 2 - 1).unsqueeze(-4), self.loc, self.log_scale)  # (..., K, C, H, W)
        log_p = torch.logsumexp(F.log_softmax(self.logits, dim=-4) + per_component, dim=-4)
        return log_p.flatten(-3).sum(-1)

    @property
    def mean(self) -> Tensor:
        return (torch.softmax(self.logits, dim=-4) * (self.loc.clamp(-1, 1) + 1) / 2).sum(-4)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device).clamp(1e-10, 1 - 1e-10)
        pick = (self.logits - torch.log(-torch.log(u))).argmax(-4, keepdim=True)  # Gumbel-max: component ~ weights
        loc, log_scale = self.loc.gather(-4, pick).squeeze(-4), self.log_scale.gather(-4, pick).squeeze(-4)
        return _logistic_sample(loc, log_scale, generator)

    def bin_probs(self) -> Tensor:
        """Probabilities of the 256 levels, (..., C, H, W, 256); for entropy coding."""
        weights = torch.softmax(self.logits, dim=-4)[..., None]
        return (weights * _bin_probs(self.loc, self.log_scale)).sum(-5)


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogistic(Likelihood):
    """256-level discretized logistic per pixel: 8-bit images get a real, codable likelihood."""

    params_per_channel = 2

    def __init__(self, shape: tuple[int, int, int], cfg: ModelConfig) -> None:
        super().__init__()
        self.channels = shape[0]

    def forward(self, params: Tensor) -> DiscretizedLogisticPixels:
        loc, log_scale = params.split(self.channels, dim=-3)
        return DiscretizedLogisticPixels(loc, log_scale.clamp(min=-7.0))


@LIKELIHOODS.register("logistic-mixture")
class LogisticMixture(Likelihood):
    """A mixture of `model.mixture_components` 256-level discretized logistics per pixel."""

    def __init__(self, shape: tuple[int, int, int], cfg: ModelConfig) -> None:
        super().__init__()
        self.channels, self.components = shape[0], cfg.mixture_components
        self.params_per_channel = 3 * cfg.mixture_components

    def forward(self, params: Tensor) -> LogisticMixturePixels:
        k, c = self.components, self.channels
        logits, loc, log_scale = params.unflatten(-3, (3, k, c)).unbind(-5)  # (..., 3KC, H, W) -> 3 x (..., K, C, H, W)
        return LogisticMixturePixels(logits, loc, log_scale.clamp(min=-7.0))


@dataclass(frozen=True)
class RGBMixturePixels:
    """PixelCNN++'s mixture of K discretized logistics over a whole RGB pixel (Salimans et al. 2017, Sec. 2.2).

    The K components are shared by the three channels of a pixel, and within a component the means
    of G and B depend linearly on the channels before them:
        mu_R = m_R,  mu_G = m_G + alpha * x_R,  mu_B = m_B + beta * x_R + gamma * x_G   (x on [-1, 1])
    so log p(pixel) = logsumexp_k [log pi_k + sum_c log p(x_c | x_<c, k)], exact over 256^3 values.
    logits (..., K, H, W); loc, log_scale (..., K, 3, H, W); coeffs (..., K, 3, H, W) = (alpha, beta, gamma), tanh'd.
    """

    logits: Tensor
    loc: Tensor
    log_scale: Tensor
    coeffs: Tensor

    def _means(self, xs: Tensor) -> Tensor:
        """Per-component channel means given the pixel values xs (..., 1, 3, H, W) on [-1, 1]."""
        alpha, beta, gamma = self.coeffs.unbind(-3)
        r, g = xs[..., 0, :, :], xs[..., 1, :, :]
        m_r, m_g, m_b = self.loc.unbind(-3)
        return torch.stack(torch.broadcast_tensors(m_r, m_g + alpha * r, m_b + beta * r + gamma * g), dim=-3)

    def _channel_log_probs(self, x: Tensor) -> Tensor:
        """log p(x_c | x_<c, k) per component and channel, (..., K, 3, H, W)."""
        xs = (x * 2 - 1).unsqueeze(-4)  # (..., 1, 3, H, W)
        return _bin_log_prob(xs, self._means(xs), self.log_scale)

    def log_prob(self, x: Tensor) -> Tensor:
        per_channel = self._channel_log_probs(x)  # (..., K, 3, H, W)
        log_p = torch.logsumexp(F.log_softmax(self.logits, dim=-3) + per_channel.sum(-3), dim=-3)  # (..., H, W)
        return log_p.flatten(-2).sum(-1)

    @property
    def mean(self) -> Tensor:
        """E[x] per channel, (..., 3, H, W) in [0, 1]: each component's means chained through its coefficients."""
        weights = torch.softmax(self.logits, dim=-3).unsqueeze(-3)  # (..., K, 1, H, W)
        m = self.loc.clamp(-1, 1)
        alpha, beta, gamma = self.coeffs.unbind(-3)
        mu_r = m[..., 0, :, :]
        mu_g = m[..., 1, :, :] + alpha * mu_r
        mu_b = m[..., 2, :, :] + beta * mu_r + gamma * mu_g
        means = torch.stack([mu_r, mu_g, mu_b], dim=-3).clamp(-1, 1)
        return ((weights * (means + 1) / 2).sum(-4)).clamp(0, 1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """One draw (..., 3, H, W) in [0, 1], channel by channel within the picked component."""
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device).clamp(1e-10, 1 - 1e-10)
        pick = (self.logits - torch.log(-torch.log(u))).argmax(-3, keepdim=True)  # (..., 1, H, W)
        index = pick.unsqueeze(-3).expand(*pick.shape[:-2], 3, *pick.shape[-2:])  # (..., 1, 3, H, W)
        loc, log_scale, coeffs = (t.gather(-4, index).squeeze(-4) for t in (self.loc, self.log_scale, self.coeffs))
        alpha, beta, gamma = coeffs.unbind(-3)
        m, s = loc.unbind(-3), log_scale.unbind(-3)
        r = _logistic_sample(m[0], s[0], generator)
        g = _logistic_sample(m[1] + alpha * (2 * r - 1), s[1], generator)
        b = _logistic_sample(m[2] + beta * (2 * r - 1) + gamma * (2 * g - 1), s[2], generator)
        values = [r, g, b]
        return torch.stack(values, dim=-3)

    def channel_bin_probs(self, x: Tensor, channel: int) -> Tensor:
        """P(x_c = v | x_<c) for v = 0..255, (..., H, W, 256), given the true earlier channels of x; for coding.

        The component weights are the posterior given the earlier channels, pi_k p(x_<c | k) normalized,
        so coding R, then G, then B costs exactly -log p(pixel).
        """
        xs = (x * 2 - 1).unsqueeze(-4)
        means = self._means(xs)  # uses only channels before each one
        log_w = F.log_softmax(self.logits, dim=-3)
        if channel > 0:
            earlier = _bin_log_prob(xs, means, self.log_scale)[..., :channel, :, :].sum(-3)  # (..., K, H, W)
            log_w = torch.log_softmax(log_w + earlier, dim=-3)
        probs = _bin_probs(means[..., channel, :, :], self.log_scale[..., channel, :, :])  # (..., K, H, W, 256)
        return (torch.exp(log_w)[..., None] * probs).sum(-4)


@LIKELIHOODS.register("rgb-logistic-mixture")
class RGBLogisticMixture(Likelihood):
    """PixelCNN++'s channel-dependent mixture for RGB images, `model.mixture_components` components per pixel."""

    def __init__(self, shape: tuple[int, int, int], cfg: ModelConfig) -> None:
        super().__init__()
        if shape[0] != 3:
            raise ConfigError(
                f"model.likelihood=rgb-logistic-mixture is for RGB images; these have {shape[0]} channel(s): "
                "use logistic-mixture"
            )
        self.components = cfg.mixture_components

    def param_channels(self, channels: int) -> int:
        return 10 * self.components  # per component: 1 logit, 3 locations, 3 log-scales, 3 coefficients

    def forward(self, params: Tensor) -> RGBMixturePixels:
        k = self.components
        logits = params[..., :k, :, :]  # (..., K, H, W)
        rest = params[..., k:, :, :].unflatten(-3, (3, k, 3))  # (..., 3, K, 3, H, W)
        loc, log_scale, coeffs = rest.unbind(-5)
        return RGBMixturePixels(logits, loc, log_scale.clamp(min=-7.0), torch.tanh(coeffs))


def build_likelihood(shape: tuple[int, int, int], cfg: ModelConfig) -> Likelihood:
    return LIKELIHOODS.get(cfg.likelihood)(shape, cfg)

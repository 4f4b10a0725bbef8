"""The VAE: encoder to a diagonal Gaussian q(z|x), reparameterized z, decoder to a likelihood p(x|z).

Kingma & Welling 2014, "Auto-Encoding Variational Bayes". The model returns distributions; the
loss lives in `objectives` (STYLE.md, habit 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.distributions import DiagonalGaussian, StandardNormal, soft_clamp
from vaekit.models.likelihoods import PixelDistribution, build_likelihood
from vaekit.models.nets import DECODERS, ENCODERS
from vaekit.models.objectives import ElboTerms, elbo_terms, log_weights
from vaekit.registry import Registry

PRIORS: Registry[type[StandardNormal]] = Registry("prior")
PRIORS.register("standard-normal")(StandardNormal)


@dataclass(frozen=True)
class VAEOutput:
    q: DiagonalGaussian  # posterior q(z|x); mean, logvar (B, D)
    z: Tensor  # (S, B, D) reparameterized samples
    px: PixelDistribution  # p(x|z) with batch shape (S, B)


class VAE(nn.Module):
    """A VAE over images of `cfg.input_shape` = (C, H, W) with pixels in [0, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.input_shape is None:
            raise ConfigError("model.input_shape is not set; build the model from data or pass (C, H, W)")
        c, h, w = cfg.input_shape
        self.cfg = cfg
        self.shape = (c, h, w)
        self.latent_dim = cfg.latent_dim
        self.likelihood = build_likelihood(self.shape, cfg)
        decoder_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else cfg.hidden[::-1]
        self.encoder = ENCODERS.get(cfg.encoder)(self.shape, cfg.hidden, 2 * cfg.latent_dim, cfg.activation)
        self.decoder = DECODERS.get(cfg.decoder)(
            self.shape, decoder_hidden, cfg.latent_dim, cfg.activation, c * self.likelihood.params_per_channel
        )
        self.prior = PRIORS.get(cfg.prior)(cfg.latent_dim)

    @property
    def dims(self) -> int:
        """Data dimensions per example (C * H * W), for bits/dim."""
        return math.prod(self.shape)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        """x (B, C, H, W) in [0, 1] -> q(z|x) with mean, logvar (B, D)."""
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return DiagonalGaussian(mean, soft_clamp(logvar, self.cfg.logvar_min, self.cfg.logvar_max))

    def decode(self, z: Tensor) -> PixelDistribution:
        """z (..., D) -> p(x|z) with batch shape (...)."""
        params = self.decoder(z.reshape(-1, self.latent_dim))  # (N, K*C, H, W)
        return self.likelihood(params.view(*z.shape[:-1], *params.shape[1:]))

    def forward(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None, eps: Tensor | None = None
    ) -> VAEOutput:
        """q(z|x), z = mean + std * eps with S samples, and p(x|z); `eps` (S, B, D) may be given."""
        q = self.encode(x)
        z = q.mean + q.std * eps if eps is not None else q.rsample(n_samples, generator)  # (S, B, D)
        return VAEOutput(q=q, z=z, px=self.decode(z))

    def elbo(self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> ElboTerms:
        """The ELBO's terms for x (B, C, H, W); `neg_elbo_per_example` is (B,) nats."""
        return elbo_terms(self(x, n_samples, generator), x, self.prior)

    @torch.no_grad()
    def log_likelihood(
        self, x: Tensor, k: int = 1000, chunk: int = 100, generator: torch.Generator | None = None
    ) -> Tensor:
        """Importance-sampled log p(x), (B,) nats, with q(z|x) as proposal (Burda et al. 2016, App. D).

        Samples are drawn `chunk` at a time and combined with a running logsumexp, so memory
        stays at O(chunk * B) for any k. With k = 1 this is a single-sample ELBO.
        """
        q = self.encode(x)
        total = torch.full((x.shape[0],), -math.inf, device=x.device)
        for start in range(0, k, chunk):
            z = q.rsample(min(chunk, k - start), generator)
            log_w = log_weights(VAEOutput(q=q, z=z, px=self.decode(z)), x, self.prior)  # (S, B)
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        return total - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """n images (n, C, H, W): the likelihood's mean at z ~ N(0, temperature^2 I)."""
        device = next(self.parameters()).device
        z = self.prior.sample(n, generator=generator, temperature=temperature).to(device)
        return self.decode(z).mean.clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The likelihood's mean at the posterior mean, (B, C, H, W), on x's device (the model may be on a GPU)."""
        device = next(self.parameters()).device
        return self.decode(self.encode(x.to(device)).mean).mean.clamp(0, 1).to(x.device)

    def save_pretrained(self, folder: str) -> None:
        """Write `config.json` + `model.safetensors` (no pickle) to `folder`."""
        from vaekit.checkpoint import save_model

        save_model(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str, map_location: str = "cpu") -> VAE:
        """Load a model written by `save_pretrained` (or a run directory's `model/`)."""
        from vaekit.checkpoint import load_model

        return load_model(folder, map_location)

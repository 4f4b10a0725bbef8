"""`model.kind: vq`: the vector-quantized VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

The encoder maps x (B, C, H, W) to a grid of vectors z_e (B, d, h, w) (h = H / 2^L for L = len(model.hidden)
strided convolutions, then `model.res_blocks` residual blocks: the paper's Sec. 4.1 network); each vector is
replaced by a code (models/quantizers.py); the decoder maps the code grid back to the likelihood's parameters. A code
prior over the grid of code numbers (models/code_priors.py) makes it a generative model.

The posterior is a point mass on the encoder's code grid c(x), so log q = 0 there and the ELBO is
log p(x | c(x)) + log p(c(x)): minus the two-part code length of x (codes coded by the prior, pixels by the decoder),
an upper bound on -log p(x) when the likelihood is discrete. The forward pass returns that as the one latent group
(q: `QuantizedPosterior`, p: `CodeDistribution`), so the bounds, evaluation and reports need nothing of their own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.base import BaseVAE, Step, last_weight
from vaekit.models.code_priors import PixelCNNPrior, UniformCodePrior
from vaekit.models.likelihoods import PixelDistribution
from vaekit.models.nets import ACTIVATIONS, res_stack
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.quantizers import QUANTIZERS, FiniteScalarQuantizer, Quantized, VectorQuantizer


@dataclass(frozen=True)
class QuantizedPosterior:
    """q(z|x) as a point mass on the codes: `z` (B, D) the code vectors (the gradient estimator's path to the
    encoder), `z_e` (B, D) the encoder's output, `indices` (B, h, w) the code numbers, `commit` (B,) the summed
    ||z_e - sg(z_q)||^2 over the grid."""

    z: Tensor
    z_e: Tensor
    indices: Tensor
    commit: Tensor

    @property
    def mean(self) -> Tensor:
        return self.z

    def rsample(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        return self.z.expand(n_samples, *self.z.shape)  # (S, B, D): every sample is the code grid

    def log_prob(self, z: Tensor) -> Tensor:
        """0 nats at the codes (a point mass; z is always this posterior's own code grid)."""
        return torch.zeros(z.shape[:-1], device=z.device)

    def cross_log_prob(self, z: Tensor) -> Tensor:
        """log q(z_n | x_b): 0 where z_n is example b's code grid, -inf elsewhere, (N, B)."""
        same = (z[:, None, :] == self.z.detach()[None, :, :]).all(-1)
        return torch.where(same, 0.0, float("-inf"))

    def kl(self, prior: object) -> Tensor | None:
        return None  # KL(point mass || p) = -log p(codes): the bounds' Monte Carlo form gives it exactly

    def detach(self) -> QuantizedPosterior:
        return replace(self, z=self.z.detach(), z_e=self.z_e.detach())


@dataclass(frozen=True)
class CodeDistribution:
    """p(z) of a VQ model: z (..., D) is a grid of code vectors; its log-density is the code prior's log p of the
    code numbers (the codes are discrete, so this is a probability, not a density)."""

    model: VQVAE

    def log_prob(self, z: Tensor) -> Tensor:
        """(..., D) -> (...) nats."""
        codes = self.model.codes_of(z.reshape(-1, z.shape[-1]))
        return self.model.code_prior.log_prob(codes).view(z.shape[:-1])


class GridEncoder(nn.Module):
    """x (B, C, H, W) -> (B, d, H / 2^L, W / 2^L): L strided 4x4 convolutions, residual blocks, a 1x1 to d."""

    def __init__(self, channels_in: int, widths: list[int], code_width: int, blocks: int, activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise([channels_in, *widths]):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        scale = 1 / max(1, blocks) ** 0.5
        layers += [res_stack(blocks, widths[-1], activation, scale), ACTIVATIONS[activation](),
                   nn.Conv2d(widths[-1], code_width, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GridDecoder(nn.Module):
    """Codes (N, d, h, w) -> the likelihood's parameters (N, P, h 2^L, w 2^L): a 3x3 convolution, residual blocks,
    L strided 4x4 transposed convolutions (the encoder's widths in reverse)."""

    def __init__(self, code_width: int, widths: list[int], channels_out: int, blocks: int, activation: str) -> None:
        super().__init__()
        scale = 1 / max(1, blocks) ** 0.5
        layers: list[nn.Module] = [nn.Conv2d(code_width, widths[-1], 3, padding=1),
                                   res_stack(blocks, widths[-1], activation, scale), ACTIVATIONS[activation]()]
        outs = [*widths[::-1][1:], channels_out]
        for i, (n_in, n_out) in enumerate(zip(widths[::-1], outs, strict=True)):
            layers.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
            if i < len(outs) - 1:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class VQVAE(BaseVAE):
    """`model.kind: vq`: a grid of discrete codes, `model.vq` for the quantizer and the code prior."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        if cfg.conditional:
            raise ConfigError("model.kind=vq is not conditional here; set model.conditional=false")
        if cfg.prior != "standard-normal" or cfg.posterior != "gaussian":
            raise ConfigError("model.kind=vq has its own code prior (model.vq.code_prior); leave model.prior and "
                              "model.posterior at their defaults")
        vq, (c, height, width) = cfg.vq, self.shape
        factor = 2 ** len(cfg.hidden)
        if height % factor or width % factor:
            raise ConfigError(f"model.kind=vq halves {height}x{width} images {len(cfg.hidden)} times "
                              f"(one per model.hidden entry): use sizes divisible by {factor}, or fewer entries")
        self.code_width = vq.code_dim if vq.quantizer == "vq" else len(vq.fsq_levels)
        self.grid = (height // factor, width // factor)
        self.latent_dim = self.code_width * self.grid[0] * self.grid[1]
        self.group_dims = (self.latent_dim,)
        self.quantizer: VectorQuantizer | FiniteScalarQuantizer = QUANTIZERS.get(vq.quantizer)(self.code_width, vq)
        self.num_codes: int = self.quantizer.num_codes
        self.encoder = GridEncoder(c, cfg.hidden, self.code_width, cfg.res_blocks, cfg.activation)
        widths = cfg.decoder_hidden[::-1] if cfg.decoder_hidden is not None else cfg.hidden
        self.decoder = GridDecoder(self.code_width, widths, self.likelihood_channels, cfg.res_blocks, cfg.activation)
        self.code_prior: PixelCNNPrior | UniformCodePrior = (
            PixelCNNPrior(self.num_codes, self.grid, vq.prior_channels, vq.prior_layers, vq.prior_kernel)
            if vq.code_prior == "pixelcnn" else UniformCodePrior(self.num_codes, self.grid))

    # --- codes and grids ------------------------------------------------------------------------

    def quantize(self, x: Tensor) -> QuantizedPosterior:
        """x (B, C, H, W) -> the point-mass posterior on its code grid."""
        z_e = self.encoder(x)  # (B, d, h, w)
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B h w, d)
        out: Quantized = self.quantizer(flat)
        z = out.z.view(b, h, w, d).permute(0, 3, 1, 2).reshape(b, -1)  # (B, D), channels first like the grid
        return QuantizedPosterior(z=z, z_e=z_e.reshape(b, -1), indices=out.indices.view(b, h, w),
                                  commit=out.commit.view(b, -1).sum(-1))

    def codes_of(self, z: Tensor) -> Tensor:
        """Flat code grids (N, D) -> their code numbers (N, h, w)."""
        n = z.shape[0]
        vectors = z.view(n, self.code_width, *self.grid).permute(0, 2, 3, 1).reshape(-1, self.code_width)
        return self.quantizer.nearest(vectors.float()).view(n, *self.grid)

    def latents_of(self, codes: Tensor) -> Tensor:
        """Code numbers (N, h, w) -> flat code grids (N, D)."""
        return self.quantizer.lookup(codes).permute(0, 3, 1, 2).reshape(codes.shape[0], -1)

    # --- the kind's part of BaseVAE ---------------------------------------------------------------

    def encode(self, x: Tensor, y: Tensor | None = None) -> QuantizedPosterior:  # type: ignore[override]
        """x (B, C, H, W) -> the point mass on its codes; `.mean` (B, D) is the code grid, flat."""
        return self.quantize(x)

    def decode(self, z: Tensor, y: Tensor | None = None) -> PixelDistribution:
        flat = z.reshape(-1, self.code_width, *self.grid)
        params = self.decoder(flat)  # (N, P, H, W)
        return self.likelihood(params.view(*z.shape[:-1], *params.shape[1:]))

    def forward(self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None,
                eps: Tensor | None = None, y: Tensor | None = None) -> VAEOutput:
        """The code grid as the one group (no noise: `eps` fixes only how many samples, all the same)."""
        q = self.quantize(x)
        z = q.rsample(eps.shape[0] if eps is not None else n_samples)
        return VAEOutput(groups=(LatentGroup(q=q, p=CodeDistribution(self), z=z),), px=self.decode(z, y))

    def prior_distribution(self) -> CodeDistribution:  # type: ignore[override]
        return CodeDistribution(self)

    def sample_latents(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                       y: Tensor | None = None, top: Tensor | None = None, top_k: int | None = None) -> Tensor:
        """(n, D) code grids drawn from the code prior in raster order (logits / temperature, among the top_k)."""
        if top is not None:
            return top.to(self.device)
        return self.latents_of(self.code_prior.sample(n, temperature, top_k, generator).to(self.device))

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               labels: Tensor | None = None, top_k: int | None = None) -> Tensor:
        """n images (n, C, H, W): the likelihood's mean at code grids from the code prior."""
        return self.decode(self.sample_latents(n, temperature, generator, top_k=top_k)).mean.clamp(0, 1)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, k: int = 1000, chunk: int = 100, generator: torch.Generator | None = None,
                       y: Tensor | None = None) -> Tensor:
        """Minus the two-part code length, log p(c(x)) + log p(x | c(x)), (B,) nats: q is a point mass, so more
        importance samples change nothing (k is ignored); a lower bound on log p(x) for a discrete likelihood."""
        return -self.elbo(x).neg_elbo

    def walk(self, x: Tensor | None = None) -> Generator[Step, Tensor, PixelDistribution]:
        raise ConfigError("bits-back coding needs Gaussian latents; a VQ model codes its code grid with its prior "
                          "(vaekit compress, two-part code)")

    def top_posterior(self) -> Callable[[Tensor], QuantizedPosterior]:  # type: ignore[override]
        return self.quantize

    def output_layer(self) -> Tensor | None:
        return last_weight(self.decoder)

"""The top-down hierarchical VAE (Sønderby et al. 2016, LVAE; Kingma et al. 2016, IAF-VAE; Vahdat & Kautz 2020, NVAE).

A bottom-up deterministic pass computes one feature per group from x; a top-down pass then walks
the groups from the top (l = L) to the bottom (l = 1). Each group below the top has a prior
p(z_l | z_>l) = N(mu_p, sigma_p^2) read from the top-down state s, and a posterior that shares it:

    q(z_l | x, z_>l) = N(mu_p + d_mu, sigma_p^2 * exp(d_logvar)),  (d_mu, d_logvar) = head(s, f_l)

This is NVAE's residual parameterization (their Eq. 2), chosen over LVAE's precision-weighted
merge because the posterior is written relative to the prior: when the heads output zero the KL
is zero, so a deep model starts with no KL explosion, and the offset (d_mu, d_logvar) is the one
quantity a stabilizer has to bound. The KL of every such group is in closed form given the
sampled groups above. The top group's prior is the registry prior (`model.prior`), its posterior
q(z_L | x) a plain Gaussian head.

Noise for every group comes from one draw of shape (S, B, sum D_l), split top first, so DDP
ranks, resumed runs and a given `eps` all see the same stream.

Conditional (`model.conditional`, Sohn et al. 2015 over a hierarchy): a learned per-class offset is
added to every bottom-up feature, so each posterior sees y, and to the top-down state after every
group, so every lower prior p(z_l | z_>l, y) and the likelihood p(x | z, y) see it; the top group's
prior stays the registry prior, as in the one-group model. The offsets start at zero: training
begins from the unconditional model, for any block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.models.base import BaseVAE, Step, draw_noise, last_weight
from vaekit.models.blocks import BLOCKS
from vaekit.models.distributions import DiagonalGaussian, soft_clamp
from vaekit.models.likelihoods import PixelDistribution
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.priors import build_prior


def _repeat(t: Tensor, s: int) -> Tensor:
    """(B, ...) -> (S*B, ...), sample-major, matching z.reshape(S*B, D)."""
    return t.unsqueeze(0).expand(s, *t.shape).reshape(s * t.shape[0], *t.shape[1:])


class TopDownVAE(BaseVAE):
    """`model.kind: hierarchical`: groups of `model.groups` (top first) over the `model.block` network."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)  # the likelihood; a hierarchy takes its labels through offsets (below), not label_in
        self.net = BLOCKS.get(cfg.block)(self.shape, cfg, self.likelihood_channels)
        self.group_dims = self.net.group_dims
        self.latent_dim = sum(self.group_dims)
        self.prior = build_prior(self.group_dims[0], cfg, self.shape)
        self.label_up: nn.ModuleList | None = None
        self.label_down: nn.ModuleList | None = None
        if self.num_classes:
            self._label_offsets()

    @torch.no_grad()
    def _label_offsets(self) -> None:
        """Per-class offsets, zero at the start: one per bottom-up feature, one per top-down state after a group."""
        x0 = torch.zeros(1, *self.shape)
        features = self.net.bottom_up(x0)
        s = self.net.initial_state(1, x0)
        states = []
        for level, dim in enumerate(self.group_dims):  # the shapes a one-image top-down pass goes through
            s = self.net.merge(level, s, torch.zeros(1, dim))
            states.append(s.shape[1:])

        def offsets(shape: torch.Size) -> nn.Embedding:
            table = nn.Embedding(self.num_classes, math.prod(shape))
            nn.init.zeros_(table.weight)
            return table

        self.label_up = nn.ModuleList(offsets(f.shape[1:]) for f in features)
        self.label_down = nn.ModuleList(offsets(shape) for shape in states)

    @staticmethod
    def _offset(tables: nn.ModuleList | None, level: int, t: Tensor, labels: Tensor | None) -> Tensor:
        """t (N, ...) plus its rows' class offsets (labels (N,)); t itself for an unconditional model."""
        if tables is None or labels is None:
            return t
        return t + tables[level](labels).view(t.shape).to(t.dtype)

    def _features(self, x: Tensor, labels: Tensor | None) -> list[Tensor]:
        return [self._offset(self.label_up, i, f, labels) for i, f in enumerate(self.net.bottom_up(x))]

    def _merge(self, level: int, s: Tensor | None, z: Tensor, labels: Tensor | None) -> Tensor:
        return self._offset(self.label_down, level, self.net.merge(level, s, z), labels)

    def _checked(self, y: Tensor | None, n: int) -> Tensor | None:
        return self.labels(y, n) if self.num_classes else None

    def _gaussian(self, params: Tensor) -> DiagonalGaussian:
        mean, logvar = params.chunk(2, dim=-1)
        return DiagonalGaussian(mean, self.logvar(logvar))

    def _lower(self, level: int, s: Tensor, feature: Tensor | None) -> tuple[DiagonalGaussian, DiagonalGaussian | None]:
        """p(z_l | z_>l) and, given the bottom-up feature, q(z_l | x, z_>l) in NVAE's residual form."""
        mean_p, raw_p = self.net.prior_params(level, s).chunk(2, dim=-1)
        logvar_p = self.raw_logvar(raw_p)
        bounds = (self.cfg.logvar_min, self.cfg.logvar_max)
        p = DiagonalGaussian(mean_p, soft_clamp(logvar_p, *bounds))
        if feature is None:
            return p, None
        d_mean, d_raw = self.net.posterior_params(level, s, feature).chunk(2, dim=-1)
        d_logvar = self.raw_logvar(d_raw)  # log of sigma_q^2 / sigma_p^2
        if self.cfg.posterior_offset_max is not None:  # a bounded offset from the prior: |d| < b, smoothly
            b = self.cfg.posterior_offset_max
            d_mean, d_logvar = b * torch.tanh(d_mean / b), b * torch.tanh(d_logvar / b)
        return p, DiagonalGaussian(mean_p + d_mean, soft_clamp(logvar_p + d_logvar, *bounds))

    def _top(self, x: Tensor, features: list[Tensor]) -> tuple[DiagonalGaussian, Tensor | None]:
        s = self.net.initial_state(x.shape[0], x)
        return self._gaussian(self.net.posterior_params(0, s, features[0])), s

    def top_posterior(self) -> Callable[[Tensor], DiagonalGaussian]:
        return lambda u: self._top(u, self.net.bottom_up(u))[0]

    def forward(
        self,
        x: Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
        y: Tensor | None = None,  # labels (B,) of a conditional model
    ) -> VAEOutput:
        b = x.shape[0]
        labels = self._checked(y, b)
        features = self._features(x, labels)  # top first, (B, ...)
        if eps is None:
            eps = draw_noise((n_samples, b, self.latent_dim), x, generator)  # x: float32 even under autocast
        n = eps.shape[0]
        rows = _repeat(labels, n) if labels is not None else None  # the labels of the (S*B) top-down rows
        noise = eps.split(list(self.group_dims), dim=-1)  # top first, (S, B, D_l)
        q, s0 = self._top(x, features)
        z = q.mean + q.std * noise[0]  # (S, B, D_L)
        groups = [LatentGroup(q=q, p=self.prior_distribution(), z=z)]
        s = self._merge(0, None if s0 is None else _repeat(s0, n), z.reshape(n * b, -1), rows)
        for level in range(1, len(self.group_dims)):
            p, q_flat = self._lower(level, s, _repeat(features[level], n))
            assert q_flat is not None
            q = DiagonalGaussian(q_flat.mean.view(n, b, -1), q_flat.logvar.view(n, b, -1))  # (S, B, D_l)
            z = q.mean + q.std * noise[level]
            groups.append(LatentGroup(q=q, p=DiagonalGaussian(p.mean.view(n, b, -1), p.logvar.view(n, b, -1)), z=z))
            s = self._merge(level, s, z.reshape(n * b, -1), rows)
        params = self.net.output(s)  # (S*B, K*C, H, W): after the bottom group's merge, s is a tensor
        return VAEOutput(groups=tuple(groups), px=self.likelihood(params.view(n, b, *params.shape[1:])))

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """The posterior along its mean path, (B, latent_dim): each group's q given the means of the groups above."""
        labels = self._checked(y, x.shape[0])
        features = self._features(x, labels)
        q, s0 = self._top(x, features)
        means, logvars = [q.mean], [q.logvar]
        s = self._merge(0, s0, q.mean, labels)
        for level in range(1, len(self.group_dims)):
            _, q_l = self._lower(level, s, features[level])
            assert q_l is not None
            means.append(q_l.mean)
            logvars.append(q_l.logvar)
            s = self._merge(level, s, q_l.mean, labels)
        return DiagonalGaussian(torch.cat(means, dim=-1), torch.cat(logvars, dim=-1))

    def walk(self, x: Tensor | None = None) -> Generator[Step, Tensor, PixelDistribution]:
        features = self.net.bottom_up(x) if x is not None else None
        s0 = self.net.initial_state(1, x if x is not None else self.net_anchor)
        q = self._gaussian(self.net.posterior_params(0, s0, features[0])) if features is not None else None
        z = yield self.top_prior_for_coding(), q
        s = self.net.merge(0, s0, z)
        for level in range(1, len(self.group_dims)):
            p, q = self._lower(level, s, features[level] if features is not None else None)
            z = yield p, q
            s = self.net.merge(level, s, z)
        params = self.net.output(s)
        return self.likelihood(params)

    @property
    def net_anchor(self) -> Tensor:
        return next(self.parameters())

    def output_layer(self) -> Tensor | None:
        out = getattr(self.net, "out", None)  # the top-down net's output head (mlp and resconv blocks have one)
        return last_weight(out) if isinstance(out, nn.Module) else None

    def decode(self, z: Tensor, y: Tensor | None = None) -> PixelDistribution:
        """z (..., latent_dim), every group's latents top first (and labels y, one per z, if conditional)
        -> p(x|z) with batch shape (...)."""
        flat = z.reshape(-1, self.latent_dim)
        labels = None
        if self.num_classes:  # y (B,) for z (S, B, D): the same label for every sample of an example
            labels = y if y is None or y.numel() == flat.shape[0] else y.repeat(flat.shape[0] // max(y.numel(), 1))
            labels = self.labels(labels, flat.shape[0])
        s = self.net.initial_state(flat.shape[0], flat)
        for level, z_l in enumerate(flat.split(list(self.group_dims), dim=-1)):
            s = self._merge(level, s, z_l, labels)
        assert s is not None
        params = self.net.output(s)
        return self.likelihood(params.view(*z.shape[:-1], *params.shape[1:]))

    def sample_latents(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, y: Tensor | None = None,
        top: Tensor | None = None,
    ) -> Tensor:
        """(n, latent_dim) ancestral draws, top first; every group's standard deviation scaled by `temperature`;
        a conditional model's lower groups drawn given labels y (n,); `top` (n, D_top): the top group given."""
        labels = self._checked(y, n)
        z = self.prior_distribution().sample(n, generator=generator, temperature=temperature) if top is None else top
        z = z.to(self.device)
        latents = [z]
        s = self._merge(0, self.net.initial_state(n, z), z, labels)
        for level in range(1, len(self.group_dims)):
            p, _ = self._lower(level, s, None)
            z = p.mean + temperature * p.std * draw_noise(tuple(p.mean.shape), p.mean, generator)
            latents.append(z)
            s = self._merge(level, s, z, labels)
        return torch.cat(latents, dim=-1)

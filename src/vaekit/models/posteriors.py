"""Posterior flows on top of the diagonal Gaussian, as registry entries (`model.posterior`).

- `gaussian`: q(z|x) is the diagonal Gaussian itself (no flow).
- `iaf`: inverse autoregressive flow (Kingma et al. 2016, "Improved Variational Inference with
  Inverse Autoregressive Flow"): T steps, each a MADE (Germain et al. 2015) that reads z and a
  context h from the encoder and gives (m, s); sigma = sigmoid(s), z <- sigma * z + (1 - sigma) * m
  (their Eq. 14, the numerically stable form), and log q(z) -= sum log sigma. The Jacobian of each
  step is triangular, so the log-determinant is exact. The order of z is reversed between steps.

A flow's density is known only at its own samples, so the KL is a Monte Carlo estimate and the
bits-back coder (which needs q at any z) refuses flow models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.registry import Registry


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor) -> None:
        super().__init__(n_in, n_out)
        self.mask: Tensor
        self.register_buffer("mask", mask.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """(z (N, D), h (N, C)) -> (m, s), each (N, D), where output d depends on z_<d and on h only.

    Degrees: input d has degree d (1..D); hidden units get degrees cycling over 1..D-1; a hidden unit
    sees inputs of degree <= its own, an output of degree d sees hidden units of degree < d.
    """

    def __init__(self, dim: int, context: int, hidden: int) -> None:
        super().__init__()
        d_in = torch.arange(1, dim + 1)
        d_hidden = torch.arange(hidden) % max(dim - 1, 1) + 1
        self.z_in = MaskedLinear(dim, hidden, (d_hidden[:, None] >= d_in[None, :]))
        self.h_in = nn.Linear(context, hidden) if context > 0 else None
        self.mid = MaskedLinear(hidden, hidden, (d_hidden[:, None] >= d_hidden[None, :]))
        out_mask = d_in[:, None] > d_hidden[None, :]  # (D, H)
        self.out = MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))
        self.dim = dim

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        a = self.z_in(z)
        if self.h_in is not None and h is not None:
            a = a + self.h_in(h)
        a = self.mid(F.elu(a))
        m, s = self.out(F.elu(a)).split(self.dim, dim=-1)
        return m, s


class IAF(nn.Module):
    """T = `model.flow_steps` IAF steps; `context_dim` extra encoder outputs feed every step."""

    def __init__(self, dim: int, context_dim: int, hidden: int, steps: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.context_dim = context_dim
        self.steps = nn.ModuleList(MADE(dim, context_dim, hidden) for _ in range(steps))
        # sigma starts near sigmoid(1) = 0.73, so each step begins close to the identity (Kingma et al., Sec. 4)
        self.forget_bias = forget_bias

    def forward(self, z: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """z (S, B, D) from the Gaussian base, h (B, C) -> (z_T (S, B, D), log|det dz_T/dz_0| (S, B))."""
        h_s = h.expand(z.shape[0], *h.shape) if h is not None else None
        log_det = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        for i, made in enumerate(self.steps):
            if i > 0:
                z = z.flip(-1)  # alternate the autoregressive order
            m, s = made(z, h_s)
            sigma = torch.sigmoid(s + self.forget_bias)
            z = sigma * z + (1 - sigma) * m
            log_det = log_det + F.logsigmoid(s + self.forget_bias).sum(-1)
        return z, log_det


PosteriorFactory = Callable[[int, ModelConfig], "IAF | None"]
POSTERIORS: Registry[PosteriorFactory] = Registry("posterior")
POSTERIORS.register("gaussian")(lambda dim, cfg: None)
POSTERIORS.register("iaf")(lambda dim, cfg: IAF(dim, cfg.flow_context, cfg.flow_hidden, cfg.flow_steps))


def build_flow(dim: int, cfg: ModelConfig) -> IAF | None:
    """The posterior flow of `cfg.posterior` over `dim` latents, or None for a plain Gaussian."""
    return POSTERIORS.get(cfg.posterior)(dim, cfg)

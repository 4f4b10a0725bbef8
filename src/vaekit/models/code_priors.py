"""Priors over a VQ model's grid of code numbers (B, h, w), each K-way (`model.vq.code_prior`).

- `pixelcnn`: a gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders",
  Sec. 2.2): a vertical stack that sees the rows above and a horizontal stack that sees the row so far, with no blind
  spot; gate tanh(a) * sigmoid(b); log p(codes) = sum over positions of log p(c_ij | c_<ij) in raster order.
  Causality comes from padding and shifting, not from masked weights: the vertical stack's output reaches the
  horizontal one shifted down a row, and the first horizontal convolution reads its input shifted right a column.
- `uniform`: log p(codes) = -h w log K, the VQ-VAE paper's prior while the autoencoder trains.

Sampling runs in raster order, one position at a time, with a temperature and top-k.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gate(a: Tensor) -> Tensor:
    """(B, 2C, ...) -> tanh(first half) * sigmoid(second half), (B, C, ...) (Eq. 2)."""
    value, gate_logit = a.chunk(2, dim=1)
    return torch.tanh(value) * torch.sigmoid(gate_logit)


def shift_down(x: Tensor) -> Tensor:
    """(B, C, H, W): row i takes row i - 1 (zeros in row 0)."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2]]


def shift_right(x: Tensor) -> Tensor:
    """(B, C, H, W): column j takes column j - 1 (zeros in column 0)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, : x.shape[3]]


class GatedLayer(nn.Module):
    """One gated layer: (v, h) -> (v', h'). v' at row i sees v's rows <= i; h' at (i, j) sees h's row i up to
    column j (columns < j in the first layer, whose h is the raw input) and v's rows < i."""

    def __init__(self, channels: int, kernel: int, first: bool) -> None:
        super().__init__()
        self.reach, self.first = kernel // 2, first  # columns each side (rows above) a layer reads
        self.v_conv = nn.Conv2d(channels, 2 * channels, (self.reach + 1, kernel))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = nn.Conv2d(channels, 2 * channels, (1, self.reach + 1))
        self.h_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        k = self.reach
        v_pre = self.v_conv(F.pad(v, (k, k, k, 0)))  # (B, 2C, H, W): row i reads rows i - k .. i
        h_src = shift_right(h) if self.first else h
        h_pre = self.h_conv(F.pad(h_src, (k, 0, 0, 0))) + self.v_to_h(shift_down(v_pre))
        h_new = self.h_out(gate(h_pre))
        return gate(v_pre), h_new if self.first else h + h_new


class PixelCNNPrior(nn.Module):
    """p(codes) over a (h, w) grid of K-way code numbers."""

    def __init__(self, num_codes: int, grid: tuple[int, int], channels: int, layers: int, kernel: int) -> None:
        super().__init__()
        self.num_codes, self.grid = num_codes, grid
        self.embed = nn.Embedding(num_codes, channels)
        self.layers = nn.ModuleList(GatedLayer(channels, kernel, first=i == 0) for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 4 * channels, 1), nn.ReLU(),
                                  nn.Conv2d(4 * channels, num_codes, 1))

    def logits(self, codes: Tensor) -> Tensor:
        """codes (B, h, w) long -> (B, K, h, w): position (i, j)'s logits read only the codes before it."""
        x = self.embed(codes).permute(0, 3, 1, 2)  # (B, C, h, w)
        v, h = x, x
        for layer in self.layers:
            v, h = layer(v, h)
        return self.head(h)

    def log_prob(self, codes: Tensor) -> Tensor:
        """codes (B, h, w) -> log p(codes) (B,) nats."""
        return -F.cross_entropy(self.logits(codes).float(), codes, reduction="none").flatten(1).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """(n, h, w) code grids drawn in raster order, logits divided by `temperature`, each draw among the `top_k`
        likeliest codes (None: all)."""
        device = self.embed.weight.device
        codes = torch.zeros(n, *self.grid, dtype=torch.long, device=device)
        for i in range(self.grid[0]):
            for j in range(self.grid[1]):  # rows below i never reach row i: the logits of rows <= i suffice
                logits = self.logits(codes[:, : i + 1])[:, :, i, j].float() / max(temperature, 1e-6)  # (n, K)
                codes[:, i, j] = draw(logits, top_k, generator).to(device)
        return codes


def draw(logits: Tensor, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """One category per row of logits (n, K), among each row's `top_k` largest when given."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, dim=-1)
    if generator is not None:
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


class UniformCodePrior(nn.Module):
    """`uniform`: every grid equally likely, log p = -h w log K."""

    def __init__(self, num_codes: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.num_codes, self.grid = num_codes, grid

    def log_prob(self, codes: Tensor) -> Tensor:
        return torch.full((codes.shape[0],), -codes[0].numel() * math.log(self.num_codes), device=codes.device)

    def sample(self, n: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        device = generator.device if generator is not None else None
        return torch.randint(self.num_codes, (n, *self.grid), generator=generator, device=device)

"""Quantizers of a VQ model's latent grid, as registry entries (`model.vq.quantizer`).

- `vq`: a codebook of K vectors (van den Oord et al. 2017, "Neural Discrete Representation Learning"), learned by
  exponential moving averages of the encoder outputs each code receives (their Appendix A.1, Eqs. 6-8), with
  Laplace-smoothed counts, k-means initialization on the first training batch, and dead-code replacement: a code
  whose averaged count falls below `dead_threshold` takes a random encoder output of the batch (Dhariwal et al.
  2020, "Jukebox", Sec. 3.2's codebook restarts). The encoder learns through the commitment term
  ||z_e - sg(z_q)||^2 and a gradient estimator: straight-through (z_q + z_e - sg(z_e)) or the rotation trick
  (Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick": z_q = sg(lambda R) z_e, R the
  rotation taking z_e's direction to z_q's, so the gradient keeps the angle between z_e and its code).
- `fsq`: finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple",
  App. A.1): each of d channels bounded to L_i levels and rounded (straight-through); the codebook is the
  implicit grid of prod L_i points, with nothing to collapse and no auxiliary loss.

Why not `vector-quantize-pytorch`: its codebook takes the EMA step inside the forward pass, unguarded; one
non-finite encoder output makes the whole codebook NaN for good (checked with 1.32.0), and the training step's
guards cannot hold the update back. Here the EMA step is skipped, on the device and without a host sync, when the
batch's statistics are not finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import VqConfig
from vaekit.registry import Registry


@dataclass(frozen=True)
class Quantized:
    """The quantizer's output for N vectors of width d."""

    z: Tensor  # (N, d) the codes' vectors, with the gradient estimator's path to z_e
    indices: Tensor  # (N,) long, code numbers in 0..K-1
    commit: Tensor  # (N,) ||z_e - sg(z_q)||^2 (zero for fsq)


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """Forward z_q exactly (z_e - sg(z_e) is exactly 0), backward the identity to z_e (van den Oord et al. 2017,
    Sec. 3.1)."""
    return z_q + (z_e - z_e.detach())


def rotation_trick(z_e: Tensor, z_q: Tensor, eps: float = 1e-6) -> Tensor:
    """Forward z_q, backward through sg(lambda R): R rotates z_e's direction e onto z_q's direction q (Householder
    form R = I - 2 r r^T + 2 q e^T with r = (e + q) / |e + q|; Fifty et al. 2024, Eq. 4), lambda = |z_q| / |z_e|.
    (N, d) -> (N, d)."""
    norm_e = z_e.norm(dim=-1, keepdim=True).clamp_min(eps)
    norm_q = z_q.norm(dim=-1, keepdim=True).clamp_min(eps)
    e, q = (z_e / norm_e).detach(), (z_q / norm_q).detach()
    r = F.normalize(e + q, dim=-1, eps=eps)
    scale = (norm_q / norm_e).detach()
    rotated = z_e - 2 * r * (r * z_e).sum(-1, keepdim=True) + 2 * q * (e * z_e).sum(-1, keepdim=True)
    return scale * rotated


ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ste": straight_through, "rotation": rotation_trick}


def kmeans(x: Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means of x (N, d) from k distinct random points (with repeats when N < k): (centres (k, d),
    counts (k,)); a cluster left empty keeps its centre."""
    pick = torch.randperm(x.shape[0], generator=generator)[:k] if x.shape[0] >= k else (
        torch.randint(x.shape[0], (k,), generator=generator))
    centres = x[pick.to(x.device)].clone()
    counts = torch.zeros(k, device=x.device)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(-1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return centres, counts


class VectorQuantizer(nn.Module):
    """`vq`: the nearest of K codes (K, d) for each vector, the codebook learned by EMA (no gradient reaches it)."""

    def __init__(self, dim: int, cfg: VqConfig) -> None:
        super().__init__()
        self.num_codes, self.dim = cfg.codebook_size, dim
        self.decay, self.dead_threshold, self.kmeans_iters = cfg.decay, cfg.dead_threshold, cfg.kmeans_iters
        self.estimator = ESTIMATORS[cfg.gradient]
        self.codebook: Tensor
        self.cluster_size: Tensor
        self.embed_sum: Tensor
        self.initted: Tensor
        codebook = torch.randn(self.num_codes, dim) / math.sqrt(dim)
        self.register_buffer("codebook", codebook)
        self.register_buffer("cluster_size", torch.ones(self.num_codes))  # EMA of each code's count per batch
        self.register_buffer("embed_sum", codebook.clone())  # EMA of the sum of the vectors each code receives
        self.register_buffer("initted", torch.tensor(cfg.kmeans_iters == 0))
        self.restarts: Tensor
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far (integer:
        # a weight EMA leaves it alone)
        self._initted_seen = False  # `initted` read once it is True: no host sync on every training step
        self.register_load_state_dict_post_hook(_forget_initted)  # a rollback may restore a pre-k-means codebook

    def nearest(self, z_e: Tensor) -> Tensor:
        """(N, d) -> (N,) the index of the nearest code (squared Euclidean distance)."""
        dist = z_e.pow(2).sum(-1, keepdim=True) - 2 * z_e @ self.codebook.T + self.codebook.pow(2).sum(-1)
        return dist.argmin(-1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code numbers (...) -> their vectors (..., d)."""
        return self.codebook[indices]

    def forward(self, z_e: Tensor) -> Quantized:
        """z_e (N, d) -> the nearest codes; then, in training mode with gradients on, the codebook's EMA step
        (k-means first, on the first training batch)."""
        z_e = z_e.float()
        learning = self.training and torch.is_grad_enabled()
        if learning and not self._initted_seen:
            self._initted_seen = bool(self.initted) or self._init_kmeans(z_e.detach())
        indices = self.nearest(z_e.detach())
        z_q = self.lookup(indices)  # a copy: the EMA step below changes the codebook in place
        commit = (z_e - z_q).pow(2).sum(-1)
        if learning:
            self._update(z_e.detach(), indices)
        return Quantized(z=self.estimator(z_e, z_q), indices=indices, commit=commit)

    @torch.no_grad()
    def _update(self, z_e: Tensor, indices: Tensor) -> None:
        """The EMA step (van den Oord et al., Eqs. 6-8) on this batch's assignments; nothing when it is not finite."""
        onehot = F.one_hot(indices, self.num_codes).to(z_e.dtype)  # (N, K)
        counts, sums = onehot.sum(0), onehot.T @ z_e  # (K,), (K, d)
        finite = torch.isfinite(sums).all()  # a non-finite batch leaves the codebook as it was
        size, summed = self.cluster_size, self.embed_sum  # N_i and m_i of the paper's Eqs. 6-7
        size.copy_(torch.where(finite, torch.lerp(counts, size, self.decay), size))
        summed.copy_(torch.where(finite, torch.lerp(sums, summed, self.decay), summed))
        total = size.sum()
        smoothed = (size + 1e-5) / (total + self.num_codes * 1e-5) * total  # Laplace: no division by 0
        self.codebook.copy_(torch.where(finite, summed / smoothed[:, None], self.codebook))
        self._restart_dead(z_e, finite)

    def _restart_dead(self, z_e: Tensor, finite: Tensor) -> None:
        """Codes used less than `dead_threshold` times per batch (on average) take random vectors of this batch."""
        if self.dead_threshold <= 0:
            return
        dead = (self.cluster_size < self.dead_threshold) & finite  # (K,)
        self.restarts.add_(dead.sum())
        picks = z_e[torch.randint(z_e.shape[0], (self.num_codes,), device=z_e.device)]  # (K, d)
        self.codebook.copy_(torch.where(dead[:, None], picks, self.codebook))
        self.embed_sum.copy_(torch.where(dead[:, None], picks * self.dead_threshold, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, self.dead_threshold),
                                            self.cluster_size))

    def _init_kmeans(self, z_e: Tensor) -> bool:
        """k-means on this batch's finite vectors; False when it has none (the next batch tries again)."""
        rows = z_e[torch.isfinite(z_e).all(-1)]
        if rows.shape[0] == 0:
            return False
        centres, counts = kmeans(rows, self.num_codes, self.kmeans_iters)
        if self.dead_threshold > 0:  # one batch of an untrained encoder is weak evidence of a code's future use:
            # counts capped at the threshold restart a code as soon as a batch uses it less (Jukebox's start). Uncapped,
            # the codes the moving encoder leaves behind wait ~250 steps (vqvae on MNIST: 4% of codes in use at step
            # 100); capped at twice the threshold, ~70 steps, while cifar-vq's codebook, collapsed onto a few codes by
            # the encoder's first ~20 steps, stayed collapsed (capped at the threshold: >100 codes again by step 20)
            counts = counts.clamp(max=self.dead_threshold)
        self.codebook.copy_(centres)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centres * counts[:, None])
        self.initted.fill_(True)
        return True


def _forget_initted(module: nn.Module, incompatible: object) -> None:
    module._initted_seen = False  # type: ignore[assignment]  # read `initted` again: the state may predate k-means


class FiniteScalarQuantizer(nn.Module):
    """`fsq`: d = len(levels) channels, channel i bounded to L_i values and rounded; K = prod L_i implicit codes."""

    def __init__(self, dim: int, cfg: VqConfig) -> None:
        super().__init__()
        self.levels_list = list(cfg.fsq_levels)
        if dim != len(self.levels_list):
            raise ValueError(f"fsq quantizes {len(self.levels_list)} channels (model.vq.fsq_levels), got {dim}")
        self.num_codes, self.dim = math.prod(self.levels_list), dim
        self.levels: Tensor
        self.basis: Tensor
        levels = torch.tensor(self.levels_list, dtype=torch.float32)
        self.register_buffer("levels", levels, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.tensor([1, *self.levels_list[:-1]]), 0), persistent=False)

    def bound(self, z: Tensor, eps: float = 1e-3) -> Tensor:
        """(..., d) -> values in (-L/2, L/2) that round onto L integer levels (even L shifted by 1/2; App. A.1)."""
        half = (self.levels - 1) * (1 - eps) / 2
        offset = torch.where(self.levels % 2 == 1, 0.0, 0.5)
        shift = torch.tan(offset / half)  # the paper's shift (tan, not atanh: defined for L = 2 too)
        return torch.tanh(z + shift) * half - offset

    def nearest(self, z: Tensor) -> Tensor:
        """Grid points (N, d) (normalized, as `lookup` gives them) -> their code numbers (N,)."""
        half = self.levels.long() // 2
        digits = (torch.round(z * half) + half).long().clamp(min=0)
        return (torch.minimum(digits, self.levels.long() - 1) * self.basis).sum(-1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code numbers (...) -> their grid points (..., d) in [-1, 1]."""
        digits = (indices[..., None] // self.basis) % self.levels.long()
        return (digits - self.levels.long() // 2).float() / (self.levels // 2)

    def forward(self, z_e: Tensor) -> Quantized:
        bounded = self.bound(z_e.float())
        rounded = straight_through(bounded, bounded.round())
        digits = rounded.detach().long() + self.levels.long() // 2  # (N, d) in 0..L_i - 1
        indices = (digits * self.basis).sum(-1)
        z = rounded / (self.levels // 2)
        return Quantized(z=z, indices=indices, commit=torch.zeros(z.shape[0], device=z.device))


QUANTIZERS: Registry[Callable[[int, VqConfig], VectorQuantizer | FiniteScalarQuantizer]] = Registry(
    "quantizer", {"vq": VectorQuantizer, "fsq": FiniteScalarQuantizer}
)


def code_usage(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Code counts (K,) -> (usage: the fraction of codes used at least once, perplexity exp(H) of the code
    frequencies: K when every code is used equally, 1 when one code takes everything), as () tensors (no sync)."""
    p = counts.float() / counts.sum().clamp_min(1)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def codebook_stats(counts: Tensor) -> tuple[float, float]:
    """`code_usage` as numbers."""
    usage, perplexity = code_usage(counts)
    return float(usage), float(perplexity)

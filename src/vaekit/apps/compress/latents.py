"""How bits-back codes each latent dimension: bucket indices popped and pushed under q and p.

Container version 2 (`EqualWidth`, the default): in the units of its prior, each dimension lies on K = 2^12
equal-width buckets over [-8, 8], and q and p are Gaussians quantized onto them by constriction's
`QuantizedGaussian` (lazy, in Rust: no (D, K) table). Version 1 (`EqualMass`, decoding old files): K buckets
of equal prior mass, q as a (D, K) probability table per image.
"""

from __future__ import annotations

from typing import Any, Protocol

import constriction
import numpy as np
import torch
from torch import Tensor

LATENT_BITS = 12  # K = 4096 equal-width buckets per latent dimension (container version 2)
LATENT_RANGE = 8.0  # the buckets cover [-8, 8] in prior units; beyond it, q and p leak to the end buckets
WINDOW_SIGMAS = 12.0  # q is coded on a window of buckets at least this many of its std either side of its mean
LEGACY_LATENT_BITS = 12  # container version 1: K = 4096 buckets of equal prior mass
BITS_BY_VERSION = {1: LEGACY_LATENT_BITS, 2: LATENT_BITS, 3: 0}  # 3: a VQ model's two-part code (no buckets)
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


class Latents(Protocol):
    """One latent dimension's discretization: pop and push bucket indices under q and p.

    q and p come in the prior's units: q's mean and std (D,) are (m_q - m_p) / s_p and s_q / s_p,
    and p is N(0, 1) there. `values` gives z' (D,) at the buckets' centres.
    """

    def pop_q(self, coder: Any, mean: Tensor, std: Tensor) -> np.ndarray:
        ...

    def push_q(self, coder: Any, idx: np.ndarray, mean: Tensor, std: Tensor) -> None:
        ...

    def pop_p(self, coder: Any, dims: int) -> np.ndarray:
        ...

    def push_p(self, coder: Any, idx: np.ndarray) -> None:
        ...

    def values(self, idx: np.ndarray) -> Tensor:
        ...


class EqualWidth:
    """K buckets of width 2R/K on [-R, R], symbols -K/2 .. K/2 - 1 (container version 2).

    q is coded on a window of the buckets around its mean, at least WINDOW_SIGMAS of its standard deviations
    either side (half-widths are powers of two, so the dimensions fall into a few groups coded together).
    constriction's quantizer is leaky: every symbol in a model's range gets at least 2^-24, so over the
    whole grid about one pop in 4,000 would land anywhere in [-R, R], a z the decoder may turn into
    thousands of bits (a sensitive dimension of hvae-mnist's bottom group did); in a window it lands near q.
    p, which is only pushed onto, keeps the whole grid.
    """

    def __init__(self, bits: int = LATENT_BITS, span: float = LATENT_RANGE) -> None:
        self.half = 2 ** (bits - 1)
        self.width = span / self.half
        self.model = constriction.stream.model.QuantizedGaussian(-self.half, self.half - 1)
        self.windows: dict[int, Any] = {}

    def _units(self, mean: Tensor, std: Tensor) -> tuple[np.ndarray, np.ndarray]:
        return (mean.double() / self.width).numpy(), (std.double() / self.width).clamp(min=1e-3).numpy()

    def _groups(self, mean: Tensor, std: Tensor) -> list[tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """(model, dims, offsets, means, stds) per window half-width, in increasing order of half-width."""
        m, s = self._units(mean, std)
        need = np.maximum(WINDOW_SIGMAS * s, 16.0)
        half = np.minimum(2 ** np.ceil(np.log2(need)).astype(np.int64), self.half)
        offset = np.clip(np.rint(m), -self.half + half, self.half - half).astype(np.int64)
        out = []
        for h in np.unique(half):
            dims = np.flatnonzero(half == h)
            if int(h) not in self.windows:
                self.windows[int(h)] = constriction.stream.model.QuantizedGaussian(-int(h), int(h) - 1)
            out.append((self.windows[int(h)], dims, offset[dims], m[dims] - offset[dims], s[dims]))
        return out

    def pop_q(self, coder: Any, mean: Tensor, std: Tensor) -> np.ndarray:
        idx = np.empty(mean.shape[0], dtype=np.int32)
        for model, dims, offset, m, s in self._groups(mean, std):
            idx[dims] = offset + np.asarray(coder.decode(model, m, s), dtype=np.int64)
        return idx

    def push_q(self, coder: Any, idx: np.ndarray, mean: Tensor, std: Tensor) -> None:
        for model, dims, offset, m, s in reversed(self._groups(mean, std)):  # the pops' order, backwards
            coder.encode_reverse((idx[dims] - offset).astype(np.int32), model, m, s)

    def pop_p(self, coder: Any, dims: int) -> np.ndarray:
        zeros, ones = np.zeros(dims), np.full(dims, 1 / self.width)
        return np.asarray(coder.decode(self.model, zeros, ones), dtype=np.int32)

    def push_p(self, coder: Any, idx: np.ndarray) -> None:
        zeros, ones = np.zeros(idx.size), np.full(idx.size, 1 / self.width)
        coder.encode_reverse(idx.astype(np.int32), self.model, zeros, ones)

    def values(self, idx: np.ndarray) -> Tensor:
        return torch.from_numpy(idx.astype(np.float64)) * self.width


class EqualMass:
    """K buckets of equal N(0, 1) mass, q as a (D, K) probability table (container version 1, decoding only)."""

    def __init__(self, bits: int = LEGACY_LATENT_BITS) -> None:
        k = 2**bits
        p = torch.arange(k + 1, dtype=torch.float64) / k
        self.edges = torch.special.ndtri(p)  # -inf ... +inf
        self.centres = torch.special.ndtri((torch.arange(k, dtype=torch.float64) + 0.5) / k)
        self.uniform = constriction.stream.model.Uniform(k)

    def _probs(self, mean: Tensor, std: Tensor) -> np.ndarray:
        cdf = torch.special.ndtr((self.edges[None, :] - mean[:, None].double()) / std[:, None].double())
        return torch.diff(cdf, dim=1).clamp(min=0).numpy()

    def pop_q(self, coder: Any, mean: Tensor, std: Tensor) -> np.ndarray:
        return np.asarray(coder.decode(CATEGORICAL, self._probs(mean, std)), dtype=np.int32)

    def push_q(self, coder: Any, idx: np.ndarray, mean: Tensor, std: Tensor) -> None:
        coder.encode_reverse(idx.astype(np.int32), CATEGORICAL, self._probs(mean, std))

    def pop_p(self, coder: Any, dims: int) -> np.ndarray:
        return np.asarray(coder.decode(self.uniform, dims), dtype=np.int32)

    def push_p(self, coder: Any, idx: np.ndarray) -> None:
        coder.encode_reverse(idx.astype(np.int32), self.uniform)

    def values(self, idx: np.ndarray) -> Tensor:
        return self.centres[idx]


def latents_for(version: int) -> Latents:
    """The latent discretization of a container version (1: equal prior mass, 2: equal width)."""
    return EqualMass() if version == 1 else EqualWidth()

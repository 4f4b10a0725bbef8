"""Weight regularizers for deep models: NVAE's spectral regularization.

Vahdat & Kautz 2020, Sec. 3.2: a penalty lambda * sum_i s_i, s_i the largest singular value of layer
i's weight (a convolution's reshaped to (out, in * k * k)), bounds the decoder's Lipschitz constant
and with it the KL explosions of deep hierarchies; NVAE's flag is `weight_decay_norm`. Each s_i is
estimated by one power iteration per step (Miyato et al. 2018), the vectors kept from step to step;
they are part of the training state, so a resumed run is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpectralPenalty:
    def __init__(self, model: nn.Module, coeff: float) -> None:
        self.coeff = coeff
        self.weights = {n: p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() >= 2}
        gen = torch.Generator().manual_seed(0)  # its own stream: the training RNG is not touched
        self.u = {
            n: F.normalize(torch.randn(p.shape[0], generator=gen), dim=0).to(p.device) for n, p in self.weights.items()
        }

    def __call__(self) -> Tensor:
        """coeff * sum of the estimated largest singular values, () with gradients to the weights."""
        total = torch.zeros((), device=next(iter(self.weights.values())).device)
        for name, weight in self.weights.items():
            w = weight.flatten(1)  # (out, in * k * k)
            with torch.no_grad():
                v = F.normalize(w.T @ self.u[name], dim=0)
                u = F.normalize(w @ v, dim=0)
                self.u[name] = u
            total = total + u @ w @ v  # sigma_max estimate, differentiable in w
        return self.coeff * total

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.u)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for name, u in state.items():
            if name in self.u:
                self.u[name] = u.to(self.u[name].device).clone()

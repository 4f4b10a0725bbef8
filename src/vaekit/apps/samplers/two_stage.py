"""The two-stage VAE (Dai & Wipf 2019, "Diagnosing and Enhancing VAE Models"): a second, small VAE fitted to the
first one's latents, whose own prior is then a good sampler of them. Its decoder is a Gaussian with one learned
variance gamma shared by every dimension (their Sec. 4: learning gamma lets the second stage fit the aggregate
posterior closely instead of blurring it):
loss = ||u - mu(v)||^2 / (2 gamma) + D/2 log(2 pi gamma) + KL(q(v|u) || N(0, I)).
Drawing: v ~ N(0, I), u ~ N(mu(v), gamma I).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vaekit.models.distributions import LOG_2PI, DiagonalGaussian, StandardNormal


class SecondStage(nn.Module):
    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, 2 * dim))
        self.decoder = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, dim))
        self.log_gamma = nn.Parameter(torch.zeros(()))

    def loss(self, u: Tensor) -> Tensor:
        """The negative ELBO per example, averaged, nats."""
        q = DiagonalGaussian(*self.encoder(u).chunk(2, dim=-1))
        v = q.rsample()[0]
        d = u.shape[-1]
        rec = ((u - self.decoder(v)) ** 2).sum(-1) / (2 * self.log_gamma.exp()) + 0.5 * d * (LOG_2PI + self.log_gamma)
        return (rec + StandardNormal(d).kl_per_dim(q).sum(-1)).mean()


class TwoStageSampler:
    name = "two-stage"

    def __init__(self, net: SecondStage, scale: Tensor, shift: Tensor, info: dict[str, Any]) -> None:
        self.net, self.scale, self.shift, self.info = net.eval(), scale, shift, info

    @classmethod
    def fit(cls, latents: Tensor, epochs: int = 40, hidden: int = 256, seed: int = 0,
            batch_size: int = 256) -> TwoStageSampler:
        """Adam (1e-3, cosine decay) on the standardized latents (N, D)."""
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        shift, scale = latents.mean(0), latents.std(0).clamp_min(1e-6)
        u = ((latents - shift) / scale).float()
        net = SecondStage(u.shape[1], hidden)
        steps = epochs * max(len(u) // batch_size, 1)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(epochs):
            order = torch.randperm(len(u), generator=gen)
            for start in range(0, len(u) - batch_size + 1, batch_size):
                loss = net.loss(u[order[start : start + batch_size]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        with torch.no_grad():
            final = float(net.loss(u[:5000]))
        info = {"epochs": epochs, "hidden": hidden, "seed": seed, "n": len(u), "final_loss": round(final, 4),
                "gamma": float(net.log_gamma.detach().exp())}
        return cls(net, scale, shift, info)

    @torch.no_grad()
    def draw(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, D): the second stage's own generative model, v ~ N(0, I), u ~ N(mu(v), gamma I), unstandardized (the
        decoder's mean alone would be narrower than the latents by gamma wherever gamma has not gone to 0)."""
        v = torch.randn(n, self.scale.shape[0], generator=generator)
        noise = torch.randn(n, self.scale.shape[0], generator=generator) * self.net.log_gamma.exp().sqrt()
        return (self.net.decoder(v) + noise) * self.scale + self.shift

    def tensors(self) -> dict[str, Tensor]:
        return {**{f"net.{k}": v for k, v in self.net.state_dict().items()}, "scale": self.scale, "shift": self.shift}

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], info: dict[str, Any]) -> TwoStageSampler:
        net = SecondStage(tensors["scale"].shape[0], info["hidden"])
        net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")})
        return cls(net, tensors["scale"], tensors["shift"], info)

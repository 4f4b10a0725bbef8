"""`rae`: the regularized (deterministic) autoencoder of Ghosh et al. 2020, "From Variational to Deterministic
Autoencoders".

z is the posterior mean (the forward pass runs with zero noise), and per example

    loss = -log p(x | z) + latent_l2 * 1/2 ||z||^2 + decoder_reg_weight * L_REG

with L_REG the decoder's weight decay sum ||theta||^2 (RAE-L2) or a gradient penalty (RAE-GP): the squared norm of
the gradient of the decoder's mean output, summed over pixels, with respect to z (the cheap form common
implementations use for ||grad_z D(z)||^2: the gradient of the sum, not the full Jacobian). The codes are not
matched to a prior: an RAE samples through a density fitted to them afterwards (`vaekit fit-sampler RUN --sampler
gmm`, Ghosh et al.'s ex-post GMM). Its score, like `ae`'s, is the reconstruction term `neg_log_px`: not a bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, forward_at_mean, require_one_gaussian_group


@dataclass(frozen=True)
class Rae:
    cfg: ObjectiveConfig
    score_name: str = "neg_log_px"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, "rae", prior=True)

    def compile_blocker(self) -> str | None:
        return "RAE's decoder regularizer (it reads the live decoder weights, or a gradient of a gradient)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = forward_at_mean(nets, batch)
        z = out.groups[0].z  # (1, B, D)
        log_px = out.px.log_prob(batch.x).mean(0).float()  # (B,)
        latent = 0.5 * z[0].float().pow(2).sum(-1)  # (B,)
        reg = self.decoder_penalty(nets, out.px.mean, z)
        loss = -batch.mean(log_px) + self.cfg.latent_l2 * batch.mean(latent) + self.cfg.decoder_reg_weight * reg
        neg_log_px = -log_px.detach()
        terms = {"log_px": log_px.detach(), "latent_l2": latent.detach(), "decoder_reg": reg.detach().expand_as(latent)}
        return LossOut(loss=loss, per_example=neg_log_px, score=neg_log_px, terms=terms)

    def decoder_penalty(self, nets: Nets, mean: Tensor, z: Tensor) -> Tensor:
        """() L_REG: sum ||theta_dec||^2 (l2), or the batch mean of ||grad_z sum_pixels D(z)||^2 (gp)."""
        if self.cfg.decoder_reg == "l2":
            decoder = nets.model.decoder
            assert isinstance(decoder, nn.Module)
            return sum((p.float().pow(2).sum() for p in decoder.parameters()), z.new_zeros(()).float())
        (grad,) = torch.autograd.grad(mean.sum(), z, create_graph=True)  # (1, B, D)
        return grad[0].float().pow(2).sum(-1).mean()

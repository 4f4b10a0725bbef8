"""`dip-vae`: the ELBO plus a penalty that pushes a covariance of the codes to the identity (Kumar et al. 2018,
"Variational Inference of Disentangled Latent Concepts from Unlabeled Observations", Eqs. 6-7):

    loss = -log p(x|z) + beta KL + dip_offdiag * sum_{i != j} Cov_ij^2 + dip_diag * sum_i (Cov_ii - 1)^2

DIP-VAE-I takes Cov the covariance of the posterior means over the batch, Cov_p(x)[mu(x)]; DIP-VAE-II the
covariance of q(z) = E_p(x)[q(z|x)], Cov[mu(x)] + E[diag(exp(logvar(x)))]. The paper sets lambda_d = 10 lambda_od
for I and lambda_d = lambda_od for II (dip_diag null). The covariance is the batch's (divided by B); its score is the
-ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import elbo_terms
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, gaussian_posterior, require_one_gaussian_group
from vaekit.objectives.elbo import weighted_kl


def dip_covariance(mean: Tensor, logvar: Tensor, kind: str) -> Tensor:
    """(D, D) the covariance DIP-VAE-I ("i") or -II ("ii") pushes to the identity, from a batch's posterior
    parameters (B, D)."""
    centred = mean - mean.mean(0, keepdim=True)
    cov = centred.T @ centred / mean.shape[0]
    return cov + torch.diag(torch.exp(logvar).mean(0)) if kind == "ii" else cov


def dip_penalty(cov: Tensor, offdiag: float, diag: float) -> Tensor:
    """() offdiag * sum of squared off-diagonal entries + diag * sum of squared (diagonal - 1)."""
    on = torch.diagonal(cov)
    off = cov - torch.diag(on)
    return offdiag * off.pow(2).sum() + diag * (on - 1).pow(2).sum()


@dataclass(frozen=True)
class DipVae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, f"dip-vae (dip_kind {self.cfg.dip_kind})")

    def compile_blocker(self) -> str | None:
        return None

    @property
    def diag_weight(self) -> float:
        if self.cfg.dip_diag is not None:
            return self.cfg.dip_diag
        return (10.0 if self.cfg.dip_kind == "i" else 1.0) * self.cfg.dip_offdiag

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        q = gaussian_posterior(out)
        cov = dip_covariance(q.mean.float(), q.logvar.float(), self.cfg.dip_kind)
        penalty = dip_penalty(cov, self.cfg.dip_offdiag, self.diag_weight)
        kl = weighted_kl(terms, self.cfg.free_bits, mean=batch.mean)
        loss = -batch.mean(terms.log_px) + knobs.kl_weight * kl + penalty
        per_example = (knobs.kl_weight * terms.kl - terms.log_px).detach()
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach(), "dip": penalty.detach().expand_as(terms.kl)}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

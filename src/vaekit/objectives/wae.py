"""`wae-mmd` and `info-vae`: the posterior's codes matched to the prior by a maximum mean discrepancy.

- `wae-mmd` (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders", Algorithm 2): a deterministic encoder (z the
  posterior mean), loss = -log p(x | z) + mmd_weight * MMD^2(q(z), p(z)), with the codes of the batch against as
  many draws from p(z) = N(0, I). Its score is the reconstruction term `neg_log_px` (not a bound).
- `info-vae` (Zhao et al. 2019, "InfoVAE", Eq. 6): the stochastic encoder of a VAE and
  loss = -log p(x | z) + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) MMD^2(q(z), p(z)); with alpha = 0
  this is the ELBO plus lambda - 1 times the MMD. Its score is the -ELBO.

MMD^2 is the unbiased U-statistic (Gretton et al. 2012, Lemma 6): the means of k over distinct pairs within each
set, less twice the mean over all cross pairs. Kernels, summed over `mmd_scales` s with C = 2 D s:
inverse multiquadric C / (C + |a - b|^2) (Tolstikhin et al.) and RBF exp(-|a - b|^2 / C).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import elbo_terms
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, forward_at_mean, require_one_gaussian_group
from vaekit.objectives.elbo import weighted_kl


def kernel_sum(a: Tensor, b: Tensor, kind: str, scales: list[float]) -> Tensor:
    """(N, M) sum over scales of k(a_i, b_j) for codes a (N, D) and b (M, D)."""
    dist2 = torch.cdist(a, b).pow(2)  # (N, M)
    total = torch.zeros_like(dist2)
    for s in scales:
        c = 2.0 * a.shape[-1] * s
        total = total + (c / (c + dist2) if kind == "imq" else torch.exp(-dist2 / c))
    return total


def mmd2(codes: Tensor, prior: Tensor, kind: str = "imq", scales: list[float] | None = None) -> Tensor:
    """() the unbiased estimate of MMD^2 between codes (N, D) and prior draws (M, D), N, M >= 2."""
    scales = scales or [1.0]
    n, m = codes.shape[0], prior.shape[0]
    k_qq, k_pp = kernel_sum(codes, codes, kind, scales), kernel_sum(prior, prior, kind, scales)
    k_qp = kernel_sum(codes, prior, kind, scales)
    within_q = (k_qq.sum() - k_qq.diagonal().sum()) / (n * (n - 1))
    within_p = (k_pp.sum() - k_pp.diagonal().sum()) / (m * (m - 1))
    return within_q + within_p - 2.0 * k_qp.mean()


def prior_mmd(z: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """() MMD^2 between the batch's codes (B, D) and as many draws from N(0, I); 0 for a batch of one."""
    return mmd2(z, torch.randn_like(z), cfg.mmd_kernel, cfg.mmd_scales) if z.shape[0] > 1 else z.sum() * 0


@dataclass(frozen=True)
class WaeMmd:
    cfg: ObjectiveConfig
    score_name: str = "neg_log_px"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, "wae-mmd", prior=True)

    def compile_blocker(self) -> str | None:
        return "draws from the prior inside the loss (compiled, they would not be the eager step's draws)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = forward_at_mean(nets, batch)
        z = out.groups[0].z[0].float()  # (B, D)
        log_px = out.px.log_prob(batch.x).mean(0).float()  # (B,)
        mmd = prior_mmd(z, self.cfg)
        loss = -batch.mean(log_px) + self.cfg.mmd_weight * mmd
        neg_log_px = -log_px.detach()
        return LossOut(loss=loss, per_example=neg_log_px, score=neg_log_px,
                       terms={"log_px": log_px.detach(), "mmd": mmd.detach().expand_as(log_px)})


@dataclass(frozen=True)
class InfoVae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, "info-vae", prior=True)

    def compile_blocker(self) -> str | None:
        return "draws from the prior inside the loss (compiled, they would not be the eager step's draws)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        z = out.groups[0].z[0].float()  # (B, D): one posterior sample per example, draws of q(z)
        mmd = prior_mmd(z, self.cfg)
        alpha, lam = self.cfg.info_alpha, self.cfg.mmd_weight
        kl = weighted_kl(terms, self.cfg.free_bits, mean=batch.mean)
        loss = -batch.mean(terms.log_px) + (1 - alpha) * knobs.kl_weight * kl + (alpha + lam - 1) * mmd
        per_example = ((1 - alpha) * terms.kl - terms.log_px).detach()
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach(), "mmd": mmd.detach().expand_as(terms.kl)}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

"""`factor-vae`: the ELBO plus gamma times a critic's estimate of the total correlation (Kim & Mnih 2018,
"Disentangling by Factorising", Algorithm 2).

Two players. The model minimizes -log p(x|z) + beta KL + factor_gamma * E[logit_q(z) - logit_perm(z)], the critic's
log-odds that a code drawn from q(z) (one posterior sample per example) is not a dimension-permuted one: the
density-ratio estimate of TC = KL(q(z) || prod_d q(z_d)). The critic minimizes the cross-entropy of telling this
step's codes (class 0) from the same codes with every dimension shuffled across the batch independently (class 1;
Kim & Mnih permute a second batch). Its loss reads the codes detached, so its gradient never reaches the encoder;
the model's TC term reaches the encoder through the critic, and the step zeroes the critic's gradients before its own
update, so the model's term never trains the critic. Each player's update is its own backward and optimizer step,
in order, with no parameter changed in place between a loss and its backward (the in-place autograd errors of
1Konny/FactorVAE #15). The score is the -ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import elbo_terms
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, require_one_gaussian_group
from vaekit.objectives.elbo import weighted_kl


def permute_dims(z: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, D) codes with each dimension shuffled across the batch independently: draws of prod_d q(z_d)."""
    b, d = z.shape
    order = torch.argsort(torch.rand(b, d, generator=generator, device=z.device), dim=0)
    return torch.gather(z, 0, order)


@dataclass(frozen=True)
class FactorVae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model", "critic")
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, "factor-vae")

    def compile_blocker(self) -> str | None:
        return "a second player (the TC critic)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        critic = nets.others["critic"]
        if player == "model":
            return self._model(critic, nets, batch, knobs)
        z = batch.memo["codes"]
        with nets.autocast():
            logits = critic(torch.cat([z, permute_dims(z)])).float()  # (2B, 2)
        labels = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        per_example = F.cross_entropy(logits, labels, reduction="none").view(2, -1).mean(0)  # (B,)
        accuracy = (logits.argmax(-1) == labels).float().view(2, -1).mean(0)
        return LossOut(loss=per_example.mean(), per_example=per_example.detach(), score=per_example.detach(),
                       terms={"critic_loss": per_example.detach(), "critic_accuracy": accuracy})

    def _model(self, critic: torch.nn.Module, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        z = out.groups[0].z[0]  # (B, D): one draw of q(z) per example
        batch.memo["codes"] = z.detach()
        with nets.autocast():
            logits = critic(z).float()
        tc = logits[:, 0] - logits[:, 1]  # (B,) log D(z) / (1 - D(z))
        kl = weighted_kl(terms, self.cfg.free_bits, mean=batch.mean)
        loss = -batch.mean(terms.log_px) + knobs.kl_weight * kl + self.cfg.factor_gamma * batch.mean(tc)
        per_example = (knobs.kl_weight * terms.kl - terms.log_px + self.cfg.factor_gamma * tc).detach()
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach(), "tc": tc.detach()}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

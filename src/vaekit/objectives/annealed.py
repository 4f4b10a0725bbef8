"""`annealed-vae`: beta-VAE with a controlled capacity (Burgess et al. 2018, "Understanding disentangling in
beta-VAE", Eq. 8):

    loss = -log p(x|z) + capacity_gamma * |KL(q(z|x) || p(z)) - C|,  C = capacity_max * min(1, step / capacity_steps)

The KL is the batch mean (closed form where the posterior knows it), so the codes are allowed C nats and the
capacity grows during training. Its score, and what the loss watch judges, is the -ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import elbo_terms
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets
from vaekit.objectives.elbo import weighted_kl


@dataclass(frozen=True)
class AnnealedVae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        return None

    def compile_blocker(self) -> str | None:
        return "the capacity's step schedule (objective.name=annealed-vae)"

    def capacity(self, step: int) -> float:
        """C at `step`, nats."""
        return self.cfg.capacity_max * min(1.0, step / max(1, self.cfg.capacity_steps))

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        c = self.capacity(knobs.step)
        kl = weighted_kl(terms, mean=batch.mean)
        loss = -batch.mean(terms.log_px) + self.cfg.capacity_gamma * (kl - c).abs()
        # what the loss watch judges: the -ELBO, not the loss, whose capacity term moves its target every step by
        # design (at gamma 1000 its swings would read as divergence)
        per_example = terms.neg_elbo.detach()
        capacity = terms.kl.new_full(terms.kl.shape, c)
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach(), "capacity": capacity}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

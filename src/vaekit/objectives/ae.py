"""`ae`: the plain autoencoder, reconstruction only (the article's Q1: what a VAE is without its KL term).

z is the posterior mean (the forward pass runs with zero noise), and the loss is -log p(x | z) with no KL, so the
latents are not held near the prior: the model reconstructs but cannot sample from it (Ghosh et al. 2020 fit a
density to the codes afterwards instead). The score is that reconstruction term, `neg_log_px`, nats per example: it
is not a bound on -log p(x), and is named so it is never read as one. `vaekit eval` still reports the -ELBO of the
trained model for comparison with a VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.errors import ConfigError
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, forward_at_mean


@dataclass(frozen=True)
class Autoencoder:
    cfg: ObjectiveConfig
    score_name: str = "neg_log_px"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        if model.prior != "standard-normal":
            raise ConfigError(
                f"objective.name=ae trains no prior (it has no KL term): model.prior={model.prior} would not learn; "
                "use model.prior=standard-normal"
            )

    def compile_blocker(self) -> str | None:
        return None

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = forward_at_mean(nets, batch)
        log_px = out.px.log_prob(batch.x).mean(0).float()  # (B,)
        neg_log_px = -log_px.detach()
        log = {"log_px": -neg_log_px}
        return LossOut(loss=-batch.mean(log_px), per_example=neg_log_px, score=neg_log_px, terms=log)

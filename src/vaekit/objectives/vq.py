"""`vq`: the VQ-VAE's loss (van den Oord et al. 2017, Eq. 3) and its code prior, trained side by side.

Two players. The model minimizes -log p(x | z_q) + commitment * ||z_e - sg(z_q)||^2 (summed over the grid): the
decoder learns from the reconstruction, the encoder from it through the quantizer's gradient estimator and from the
commitment term; the codebook learns by its EMA step, not by gradient (models/quantizers.py). The code prior (a
gated PixelCNN) minimizes -log p(codes) of this step's code grids, read detached, so the autoencoder never trains to
suit the prior: the paper's second stage, run alongside instead of after (the prior follows the codes as they
settle). The prior runs once a step: the model's loss computes -log p(codes) for the score and leaves it, graph and
all, for the prior's update. With `model.vq.code_prior: uniform` the model is the only player.

The score is the -ELBO of a point-mass posterior: -log p(x | c(x)) - log p(c(x)), the two-part code length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.quantizers import code_usage
from vaekit.models.vq import VQVAE, QuantizedPosterior
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets


@dataclass(frozen=True)
class VectorQuantized:
    commitment: float
    players: tuple[str, ...] = ("model", "code_prior")
    score_name: str = "neg_elbo"
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        if model.kind != "vq":
            raise ConfigError(f"objective.name=vq trains a VQ model: set model.kind=vq (this model: {model.kind})")

    def compile_blocker(self) -> str | None:
        return "the codebook's EMA step inside the forward pass"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        if player == "code_prior":
            return self._prior(nets, batch)
        model = nets.model
        assert isinstance(model, VQVAE), "check() admits VQ models only"
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        q = out.groups[0].q
        assert isinstance(q, QuantizedPosterior)
        codes, commit = q.indices, q.commit
        log_px = out.px.log_prob(batch.x).mean(0).float()  # (S, B) -> (B,)
        with nets.autocast():  # the prior's loss, kept with its graph for the code prior's own update (one pass)
            batch.memo["code_nats"] = -model.code_prior.log_prob(codes).float()  # (B,)
        code_nats = batch.memo["code_nats"].detach()
        loss = -batch.mean(log_px) + self.commitment * batch.mean(commit)
        per_example = (self.commitment * commit - log_px).detach()
        usage, perplexity = code_usage(torch.bincount(codes.flatten(), minlength=model.num_codes))
        terms = {"log_px": log_px.detach(), "code_nats": code_nats, "commit": commit.detach(), "code_usage": usage,
                 "code_perplexity": perplexity}
        restarts = getattr(model.quantizer, "restarts", None)
        if restarts is not None:
            terms["code_restarts"] = restarts.float()  # so far in the run (codes restarted by the EMA codebook)
        return LossOut(loss=loss, per_example=per_example, score=(code_nats - log_px).detach(), terms=terms)

    def _prior(self, nets: Nets, batch: Batch) -> LossOut:
        code_nats = batch.memo["code_nats"]  # (B,) -log p(codes) of this step's code grids, the codes read detached
        return LossOut(loss=batch.mean(code_nats), per_example=code_nats.detach(), score=code_nats.detach())


def vq_objective(commitment: float, code_prior: str) -> VectorQuantized:
    """The `vq` objective; the code prior is a player when it learns (pixelcnn), not when it is uniform."""
    players = ("model", "code_prior") if code_prior == "pixelcnn" else ("model",)
    return VectorQuantized(commitment, players)

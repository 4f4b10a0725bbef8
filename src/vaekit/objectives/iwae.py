"""`iwae` and `dreg`: the k-sample importance-weighted bound (Burda et al. 2016, Eq. 8), and the same bound with the
doubly reparameterized encoder gradient (Tucker et al. 2019, Eq. 5).

The loss is -(k-sample bound), and that is what the loss watch judges: IWAE training may worsen the single-sample
ELBO while its k-sample bound improves, so judging the -ELBO would roll a healthy run back. The reported score is
still the -ELBO (averaged over the k samples), comparable with every other run; the bound is logged as
`neg_iw_bound`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.errors import ConfigError
from vaekit.models.bounds import elbo_terms, iw_bound, log_weights
from vaekit.models.outputs import VAEOutput
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets


@dataclass(frozen=True)
class Iwae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    dreg: bool = False

    @property
    def samples(self) -> int:
        return self.cfg.iw_samples

    def check(self, model: ModelConfig) -> None:
        if self.dreg and (model.kind != "vae" or model.posterior != "gaussian"):
            raise ConfigError(
                "objective.name=dreg needs a one-group Gaussian posterior (model.kind=vae, model.posterior=gaussian); "
                "use objective.name=iwae for hierarchies and flows"
            )

    def compile_blocker(self) -> str | None:
        return "importance-weighted training (objective.name=iwae or dreg)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=self.samples, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        bound = k_sample_bound(out, batch.x, self.dreg)  # (B,)
        neg_bound = -bound.detach()
        return LossOut(
            loss=-batch.mean(bound),
            per_example=neg_bound,
            score=terms.neg_elbo.detach(),
            terms={"neg_iw_bound": neg_bound, "log_px": terms.log_px.detach(), "kl": terms.kl.detach()},
        )


def iwae(cfg: ObjectiveConfig) -> Iwae:
    return Iwae(cfg)


def dreg(cfg: ObjectiveConfig) -> Iwae:
    return Iwae(cfg, dreg=True)


def k_sample_bound(out: VAEOutput, x: Tensor, dreg: bool = False) -> Tensor:
    """The k-sample bound (B,) nats of a forward pass with S = k samples; with `dreg`, DReG's gradient."""
    return dreg_bound(out, x) if dreg else iw_bound(log_weights(out, x))


def dreg_bound(out: VAEOutput, x: Tensor) -> Tensor:
    """The k-sample bound (B,) nats whose gradient is DReG's (Tucker et al. 2019, Eq. 5).

    log q is evaluated with the posterior's parameters detached, so the encoder learns only through z, and the
    gradient reaching z is re-weighted by the normalized weights once more (w~^2 in total), which removes the
    score-function term whose variance grows with k. The decoder's gradient is the usual IWAE one, and the value is
    the bound itself. DReG needs q's density with its parameters held fixed: one group whose q has a density (no flow).
    """
    g = out.groups[0]
    q_stop = g.q.detach()
    log_w = (out.px.log_prob(x) + g.p.log_prob(g.z) - q_stop.log_prob(g.z)).float()  # (S, B)
    weights = torch.softmax(log_w, dim=0).detach()  # (S, B) normalized importance weights
    if g.z.requires_grad:
        g.z.register_hook(lambda grad: grad * weights.unsqueeze(-1).to(grad.dtype))
    surrogate = (weights * log_w).sum(0)  # gradient: sum_s w~_s grad log w_s
    value = iw_bound(log_w).detach()
    return surrogate + (value - surrogate.detach())

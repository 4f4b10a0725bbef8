"""Training objectives, one file per registry entry; the table below is the registry (no import registers anything
for its side effect). `build_objective(cfg)` reads `objective.name`."""

from __future__ import annotations

from collections.abc import Callable

from vaekit.config import Config
from vaekit.errors import ConfigError
from vaekit.objectives.adversarial import Adversarial
from vaekit.objectives.ae import Autoencoder
from vaekit.objectives.annealed import AnnealedVae
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, Objective
from vaekit.objectives.beta_tcvae import BetaTcvae
from vaekit.objectives.dip_vae import DipVae
from vaekit.objectives.elbo import Elbo
from vaekit.objectives.factor_vae import FactorVae
from vaekit.objectives.iwae import dreg, iwae
from vaekit.objectives.rae import Rae
from vaekit.objectives.vq import vq_objective
from vaekit.objectives.wae import InfoVae, WaeMmd
from vaekit.registry import Registry

OBJECTIVES: Registry[Callable[[Config], Objective]] = Registry(
    "objective",
    {
        "elbo": lambda cfg: Elbo(cfg.objective),
        "iwae": lambda cfg: iwae(cfg.objective),
        "dreg": lambda cfg: dreg(cfg.objective),
        "ae": lambda cfg: Autoencoder(cfg.objective),
        "adversarial": lambda cfg: Adversarial(cfg.objective, cfg.adversarial),
        "rae": lambda cfg: Rae(cfg.objective),
        "wae-mmd": lambda cfg: WaeMmd(cfg.objective),
        "info-vae": lambda cfg: InfoVae(cfg.objective),
        "beta-tcvae": lambda cfg: BetaTcvae(cfg.objective),
        "dip-vae": lambda cfg: DipVae(cfg.objective),
        "annealed-vae": lambda cfg: AnnealedVae(cfg.objective),
        "factor-vae": lambda cfg: FactorVae(cfg.objective),
        "vq": lambda cfg: vq_objective(cfg.objective.commitment, cfg.model.vq.code_prior),
    },
)

__all__ = ["OBJECTIVES", "Batch", "Knobs", "LossOut", "Nets", "Objective", "build_objective"]


def build_objective(cfg: Config) -> Objective:
    """The objective `cfg.objective.name` names, checked against the model it will train (one-line errors)."""
    objective = OBJECTIVES.get(cfg.objective.name)(cfg)
    if cfg.objective.iw_samples > 1 and cfg.objective.name not in ("iwae", "dreg"):
        raise ConfigError(
            f"objective.iw_samples={cfg.objective.iw_samples} is the k of the iwae and dreg objectives; "
            f"set objective.name=iwae (or dreg), or iw_samples=1 for {cfg.objective.name}"
        )
    if cfg.model.kind == "vq" and cfg.objective.name != "vq":
        raise ConfigError(f"objective.name={cfg.objective.name} does not train a VQ model (model.kind=vq): "
                          "use objective.name=vq")
    objective.check(cfg.model)
    return objective

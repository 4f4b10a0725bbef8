"""Training objectives, one file per registry entry; the table below is the registry (no import registers anything
for its side effect). `build_objective(cfg)` reads `objective.name`."""

from __future__ import annotations

from collections.abc import Callable

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.errors import ConfigError
from vaekit.objectives.ae import Autoencoder
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, Objective
from vaekit.objectives.elbo import Elbo
from vaekit.objectives.iwae import dreg, iwae
from vaekit.registry import Registry

OBJECTIVES: Registry[Callable[[ObjectiveConfig], Objective]] = Registry(
    "objective",
    {
        "elbo": Elbo,
        "iwae": iwae,
        "dreg": dreg,
        "ae": Autoencoder,
    },
)

__all__ = ["OBJECTIVES", "Batch", "Knobs", "LossOut", "Nets", "Objective", "build_objective"]


def build_objective(cfg: ObjectiveConfig, model: ModelConfig | None = None) -> Objective:
    """The objective `cfg.name` names, checked against the model it will train (one-line errors)."""
    objective = OBJECTIVES.get(cfg.name)(cfg)
    if cfg.iw_samples > 1 and cfg.name not in ("iwae", "dreg"):
        raise ConfigError(
            f"objective.iw_samples={cfg.iw_samples} is the k of the iwae and dreg objectives; "
            f"set objective.name=iwae (or dreg), or iw_samples=1 for {cfg.name}"
        )
    if model is not None:
        objective.check(model)
    return objective

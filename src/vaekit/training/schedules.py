"""Schedules as pure functions of the optimizer step (nanoGPT's `get_lr(it)` habit)."""

from __future__ import annotations

import math

from vaekit.config import ObjectiveConfig, OptimConfig
from vaekit.errors import ConfigError
from vaekit.objectives import Knobs


def kl_weight(step: int, cfg: ObjectiveConfig, total_steps: int | None = None) -> float:
    """The KL weight beta at `step` (0-based).

    constant: beta. linear: 0 -> beta over `kl_warmup_steps`. sigmoid: a logistic ramp centred
    at half the warm-up. cyclical (Fu et al. 2019): `kl_cycles` cycles over `total_steps`, each
    ramping 0 -> beta over `kl_ramp_fraction` of the cycle and then holding beta.
    """
    beta = cfg.beta
    warmup = cfg.kl_warmup_steps
    if cfg.kl_schedule == "constant":
        return beta
    if cfg.kl_schedule == "linear":
        return beta if warmup == 0 else beta * min(1.0, step / warmup)
    if cfg.kl_schedule == "sigmoid":
        if warmup == 0:
            return beta
        # 12 / warmup makes the ramp go from ~0.25% to ~99.75% of beta across the warm-up
        return beta / (1.0 + math.exp(-12.0 * (step / warmup - 0.5)))
    if cfg.kl_schedule == "cyclical":
        period = (total_steps or warmup or 1) / cfg.kl_cycles
        phase = (step % period) / period if period > 0 else 1.0
        return beta * min(1.0, phase / cfg.kl_ramp_fraction)
    raise ValueError(f"unknown kl_schedule {cfg.kl_schedule!r}")


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the base learning rate: linear warm-up, then constant or cosine decay."""
    if cfg.lr_warmup_steps and step < cfg.lr_warmup_steps:
        return (step + 1) / cfg.lr_warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(1, total_steps - cfg.lr_warmup_steps)
    progress = min(1.0, (step - cfg.lr_warmup_steps) / span)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def group_kl_weights(step: int, cfg: ObjectiveConfig, n_groups: int) -> list[float] | None:
    """Per-group KL weights (top first) from `objective.group_warmup_steps`: a linear ramp 0 -> 1 per group.

    None when no per-group warm-up is set. A group with 0 steps has weight 1 from the start.
    """
    if not cfg.group_warmup_steps:
        return None
    if len(cfg.group_warmup_steps) != n_groups:
        raise ConfigError(
            f"objective.group_warmup_steps has {len(cfg.group_warmup_steps)} entries; the model has {n_groups} groups"
        )
    return [1.0 if w == 0 else min(1.0, step / w) for w in cfg.group_warmup_steps]


def knobs_at(step: int, cfg: ObjectiveConfig, total_steps: int, n_groups: int) -> Knobs:
    """The objective's knobs at `step`: the KL weight, the per-group weights, and KL balancing (NVAE balances only
    while the KL weight ramps up)."""
    beta = kl_weight(step, cfg, total_steps)
    balance = cfg.kl_balance and beta < cfg.beta
    return Knobs(kl_weight=beta, group_weights=group_kl_weights(step, cfg, n_groups), kl_balance=balance, step=step)


def warmup_warning(cfg: ObjectiveConfig, total_steps: int) -> str | None:
    """A line to warn with when a KL warm-up outlasts the run (the KL weight would end below beta), else None."""
    if cfg.kl_schedule not in ("linear", "sigmoid") or cfg.kl_warmup_steps <= total_steps or cfg.beta <= 0:
        return None
    end = kl_weight(total_steps, cfg, total_steps) / cfg.beta
    return (
        f"objective.kl_warmup_steps={cfg.kl_warmup_steps} is longer than this run ({total_steps} steps): the KL "
        f"weight ends at {end:.2f} of objective.beta, so the model trains on a weakened KL (its -ELBO is always "
        f"scored at weight 1); shorten it, e.g. --set objective.kl_warmup_steps={max(1, total_steps // 2)}"
    )

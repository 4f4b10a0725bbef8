"""Schedules as pure functions of the step: the KL weight, the learning rate, per-group KL warm-ups."""

from __future__ import annotations

import math

import pytest

from vaekit.config import ObjectiveConfig, OptimConfig
from vaekit.errors import ConfigError
from vaekit.training.schedules import kl_weight, lr_factor


def test_group_warmup_ramps_each_group_and_checks_its_length() -> None:
    from vaekit.config import ObjectiveConfig
    from vaekit.training.schedules import group_kl_weights

    cfg = ObjectiveConfig(group_warmup_steps=[100, 0, 50])
    assert group_kl_weights(25, cfg, 3) == [0.25, 1.0, 0.5]
    assert group_kl_weights(500, cfg, 3) == [1.0, 1.0, 1.0]
    assert group_kl_weights(5, ObjectiveConfig(), 3) is None
    with pytest.raises(ConfigError, match="has 3 entries; the model has 2 groups"):
        group_kl_weights(0, cfg, 2)


def test_kl_schedules_at_chosen_steps() -> None:
    lin = ObjectiveConfig(kl_schedule="linear", kl_warmup_steps=100, beta=2.0)
    assert [kl_weight(s, lin) for s in (0, 50, 100, 500)] == [0.0, 1.0, 2.0, 2.0]
    sig = ObjectiveConfig(kl_schedule="sigmoid", kl_warmup_steps=100)
    assert kl_weight(50, sig) == 0.5 and kl_weight(0, sig) < 0.01 and kl_weight(100, sig) > 0.99
    cyc = ObjectiveConfig(kl_schedule="cyclical", kl_cycles=4, kl_ramp_fraction=0.5)
    # 1000 steps, 4 cycles of 250: ramp over 125 steps, then hold
    assert [kl_weight(s, cyc, 1000) for s in (0, 62, 125, 200, 250, 375)] == [0.0, 62 / 125, 1.0, 1.0, 0.0, 1.0]
    assert kl_weight(7, ObjectiveConfig(beta=3.0)) == 3.0


def test_lr_schedules() -> None:
    cfg = OptimConfig(lr_schedule="cosine", lr_warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg, 110) == 0.1 and lr_factor(9, cfg, 110) == 1.0
    assert lr_factor(10, cfg, 110) == 1.0
    assert math.isclose(lr_factor(60, cfg, 110), 0.1 + 0.9 * 0.5)
    assert math.isclose(lr_factor(110, cfg, 110), 0.1)
    assert lr_factor(5, OptimConfig(), 100) == 1.0

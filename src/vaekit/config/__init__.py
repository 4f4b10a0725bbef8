"""The typed config tree: `schema` (the dataclasses), `load` (YAML, presets, `--set`, migration), `checks`."""

from vaekit.config.load import PRESET_DIR, config_from_dict, load_config, override, preset_names
from vaekit.config.schema import (
    CONFIG_VERSION,
    AdversarialConfig,
    Config,
    DataConfig,
    GuardConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    TrainConfig,
    VqConfig,
)

__all__ = [
    "CONFIG_VERSION",
    "PRESET_DIR",
    "AdversarialConfig",
    "Config",
    "DataConfig",
    "GuardConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "TrainConfig",
    "VqConfig",
    "config_from_dict",
    "load_config",
    "override",
    "preset_names",
]

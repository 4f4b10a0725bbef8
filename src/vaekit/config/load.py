"""Reading a config: defaults < YAML file (or preset) < `--set key=value` overrides, with version migration.

Unknown keys and wrong types raise `ConfigError` naming the valid choices (STYLE.md, habit 3); the range checks
that types cannot express are in `checks.py`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from vaekit.config.checks import validate
from vaekit.config.schema import CONFIG_VERSION, Config
from vaekit.errors import ConfigError

PRESET_DIR = Path(__file__).parent.parent / "configs"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a config from a preset name or a YAML path, then apply `overrides`.

    >>> load_config("seed", ["objective.beta=2"]).objective.beta
    2.0
    """
    raw: dict[str, Any] = {}
    if source is not None:
        raw = _read_yaml(_resolve_source(source))
    cfg = config_from_dict(raw)
    return override(cfg, overrides) if overrides else cfg


def config_from_dict(raw: dict[str, Any]) -> Config:
    """A config from a nested mapping (a run's config.yaml, a model's config.json), migrated, typed and checked."""
    cfg: Config = _build(Config, _migrate(raw), "")
    validate(cfg)
    return cfg


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply `key.sub=value` strings (values parsed as YAML) and return a new config."""
    raw = cfg.to_dict()
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        _assign(raw, key.strip().split("."), value, key)
    return config_from_dict(raw)


def _resolve_source(source: str | Path) -> Path:
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(
                f"config file {str(path)!r} not found; give a YAML file or a preset ({', '.join(preset_names())})"
            )
        return path
    preset = PRESET_DIR / f"{source}.yaml"
    if not preset.is_file():
        raise ConfigError(
            f"unknown preset {str(source)!r}; valid: {', '.join(preset_names())} (or a path to a .yaml file)"
        )
    return preset


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from None
    if len(text) > 1_000_000:
        raise ConfigError(f"config {str(path)!r} is over 1 MB; a config is a few dozen lines")
    try:
        # safe_load never builds Python objects; aliases are expanded, so a YAML bomb is refused
        # below by counting nodes before the document is constructed.
        _check_alias_expansion(text, path)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ConfigError(f"config {str(path)!r} is not valid YAML ({first}); fix the file") from None
    if raw is None:
        raise ConfigError(f"config {str(path)!r} is empty; write at least one section, e.g. 'train: {{epochs: 1}}'")
    if not isinstance(raw, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def _check_alias_expansion(text: str, path: Path, limit: int = 100_000) -> None:
    """Refuse documents whose aliases expand past `limit` nodes (the 'billion laughs')."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    count = 0
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        nonlocal count
        if id(n) in sizes:
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(c) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        sizes[id(n)] = total
        count = max(count, total)
        if total > limit:
            raise ConfigError(f"config {str(path)!r} expands to over {limit} nodes through aliases; refusing it")
        return total

    if node is not None:
        size(node)


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    version = raw.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or version > CONFIG_VERSION or version < 1:
        raise ConfigError(
            f"config version {version!r} is not supported; this vaekit reads versions 1..{CONFIG_VERSION}"
        )
    if version < 2:  # 1 -> 2: the objective is named; iw_samples > 1 chose IWAE, `estimator` its gradient
        raw = _objective_named(raw)
    return {**raw, "version": CONFIG_VERSION}


def _objective_named(raw: dict[str, Any]) -> dict[str, Any]:
    objective = raw.get("objective")
    if not isinstance(objective, dict):
        return raw
    objective = dict(objective)
    estimator = objective.pop("estimator", "standard")
    k = objective.get("iw_samples", 1)
    if "name" not in objective and isinstance(k, int) and k > 1:
        objective["name"] = "dreg" if estimator == "dreg" else "iwae"
    return {**raw, "objective": objective}


def _assign(raw: dict[str, Any], keys: list[str], value: Any, full: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        if key not in node or not isinstance(node[key], dict):
            where = ".".join(keys[:depth]) or "the top level"
            valid = ", ".join(k for k, v in node.items() if isinstance(v, dict))
            raise ConfigError(f"unknown config section {key!r} in {full!r} at {where}; valid: {valid}")
        node = node[key]
    if keys[-1] not in node:
        valid = ", ".join(node)
        raise ConfigError(f"unknown config key {full!r}; valid keys here: {valid}")
    node[keys[-1]] = value


def _build(cls: type, raw: Any, path: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config section {path or 'top level'!r} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        where = f"section {path!r}" if path else "the top level"
        raise ConfigError(f"unknown config key {unknown[0]!r} in {where}; valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{path}.{k}" if path else k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _build(hint, value, path)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, path)
    if origin is Literal:
        if not any(value == a and type(value) is type(a) for a in args):  # 1 is not True
            raise ConfigError(f"config key {path!r} is {value!r}; valid: {', '.join(map(str, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {path!r} must be a list, got {value!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path!r} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {path!r} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {path!r} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {path!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"config field {path} has an unsupported type {hint}")

"""The config tree: presets, precedence, unknown keys, types, hostile YAML."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.config import Config, load_config, preset_names
from vaekit.errors import ConfigError


def test_required_presets_exist_and_load() -> None:
    assert {"seed", "mlp", "burda", "conv"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_config(name), Config)


def test_every_preset_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("The presets (`src/vaekit/configs/`):", 1)[1].split("\n\n", 2)[1]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`([^`]+)`", row.split("|")[1])}
    assert set(preset_names()) == named


def test_seed_preset_is_the_articles_network() -> None:
    cfg = load_config("seed")
    assert cfg.model.hidden == [128, 64] and cfg.model.decoder_hidden == [256, 128] and cfg.model.latent_dim == 2
    assert cfg.train.batch_size == 256 and cfg.train.epochs == 10 and cfg.optim.lr == 1e-3
    assert cfg.model.likelihood == "bernoulli"


def test_burda_preset() -> None:
    cfg = load_config("burda")
    assert cfg.model.hidden == [200, 200] and cfg.model.activation == "tanh" and cfg.model.latent_dim == 50
    assert cfg.data.name == "binarized-mnist"


def test_precedence_defaults_file_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 3, batch_size: 64}\n")
    cfg = load_config(path, ["train.epochs=5", "objective.beta=4"])
    assert cfg.train.epochs == 5 and cfg.train.batch_size == 64 and cfg.objective.beta == 4.0
    assert cfg.optim.lr == Config().optim.lr


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.epoch=3"], "valid keys here: epochs"),
        (["trian.epochs=3"], "valid: data, model"),
        (["train.epochs=three"], "must be an integer"),
        (["train.epochs=-1"], "train.epochs must be >= 1"),
        (["model.activation=swish"], "valid: relu"),
        (["objective.beta"], "key.sub=value"),
        (["optim.lr=0"], "optim.lr must be > 0"),
        (["model.hidden=[10, -2]"], "widths must be >= 1"),
    ],
)
def test_bad_overrides_name_the_problem(overrides: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        load_config("seed", overrides)


def test_exponent_floats_without_a_dot(tmp_path: Path) -> None:
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML 1.1 reads 1e-3 as a string
    path = tmp_path / "c.yaml"
    path.write_text("optim: {lr: 3e-4}\n")
    assert load_config(path).optim.lr == 3e-4


def test_unknown_key_in_file_lists_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: {latent: 3}\n")
    with pytest.raises(ConfigError, match="unknown config key 'latent'.*valid keys: encoder"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is empty"),
        ("[1, 2]", "must be a mapping"),
        ("train: [", "not valid YAML"),
        ("version: 99\n", "version 99 is not supported"),
        ("train: 3\n", "must be a mapping"),
        ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_yaml_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
        f"*a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases"):
        load_config(path)


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'nope'; valid: .*seed"):
        load_config("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_config("missing.yaml")


@settings(max_examples=60, deadline=None)
@given(
    epochs=st.integers(1, 10_000),
    beta=st.floats(0, 100, allow_nan=False),
    hidden=st.lists(st.integers(1, 4096), max_size=4),
    activation=st.sampled_from(["relu", "tanh", "elu", "silu", "leaky_relu"]),
)
def test_config_round_trips_through_yaml(
    tmp_path_factory: pytest.TempPathFactory, epochs: int, beta: float, hidden: list[int], activation: str
) -> None:
    cfg = load_config(
        None,
        [
            f"train.epochs={epochs}",
            f"objective.beta={beta!r}",
            f"model.hidden={hidden}",
            f"model.activation={activation}",
        ],
    )
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@settings(max_examples=80, deadline=None)
@given(key=st.text(min_size=1, max_size=20), value=st.text(max_size=20))
def test_arbitrary_overrides_never_crash(key: str, value: str) -> None:
    with contextlib.suppress(ConfigError):
        load_config(None, [f"{key}={value}"])

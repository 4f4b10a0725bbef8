"""One typed config tree: defaults < YAML file (or preset) < `--set key=value` overrides.

Unknown keys and wrong types raise `ConfigError` naming the valid choices (STYLE.md, habit 3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vaekit.errors import ConfigError

CONFIG_VERSION = 2  # 2: objective.name (a registry name) replaces iw_samples > 1 and objective.estimator
PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    name: str = "mnist"  # a built-in name, a .npy/.npz file or a folder of images
    data_dir: str | None = None  # explicit folder for the data set's files
    val_size: int | None = None  # fixed-seed hold-out carved from the training split; 0 = none;
    # null = none for built-in sets (they have a test split), 5% (at most 5,000) for user data without one
    val_seed: int = 0
    mmap: bool = False  # memory-map a uint8 .npy instead of reading it: for data larger than memory
    lazy: bool = False  # read a folder of images by index, in background threads, instead of all at once
    channels: int | None = None  # image folders: 1 (grey) or 3 (RGB); null: RGB if any image is colour
    image_size: int | None = None  # image folders: resize the shorter side to this and crop the centre square
    hflip: bool = False  # random horizontal flips of training batches (never at evaluation)
    noise: float = 0.0  # replace this fraction of training pixels by uniform noise (a background model, Ren et al.)


@dataclass
class ModelConfig:
    encoder: Literal["mlp", "conv", "resnet", "custom"] = "mlp"  # custom: your own nn.Module (VAE(cfg, encoder=...))
    decoder: Literal["mlp", "conv", "resnet", "custom"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400])  # encoder widths (mlp) / channels (conv)
    decoder_hidden: list[int] | None = None  # None mirrors `hidden`
    activation: Literal["relu", "tanh", "elu", "silu", "leaky_relu"] = "relu"
    latent_dim: int = 20
    likelihood: str = "bernoulli"  # registry name: bernoulli, gaussian, discretized-logistic, logistic-mixture
    mixture_components: int = 5  # logistic-mixture: logistics per pixel
    gaussian_scale: Literal["global", "pixel"] = "global"
    min_scale: float = 1e-3  # floor of a learned Gaussian scale
    logvar_min: float = -12.0  # soft clamp of the posterior log-variance
    logvar_max: float = 8.0
    scale_param: Literal["exp", "softplus"] = "exp"  # Gaussian scales: exp(raw / 2), or softplus(raw) (Efficient-VDVAE)
    posterior_offset_max: float | None = None  # hierarchy: |d_mean| and |d_logvar| of q against p softly bounded
    prior: str = "standard-normal"  # registry name: standard-normal, mog, vamp (over the top group)
    prior_components: int = 10  # mog: Gaussians in the mixture; vamp: pseudo-inputs
    posterior: str = "gaussian"  # registry name: gaussian, iaf (a flow on top of the Gaussian; kind vae only)
    flow_steps: int = 2  # iaf: MADE transforms
    flow_hidden: int = 320  # iaf: MADE width
    flow_context: int = 32  # iaf: extra encoder outputs h fed to every step
    # Hierarchical (kind: hierarchical): a bottom-up pass, then a top-down pass over `groups`.
    kind: Literal["vae", "hierarchical"] = "vae"
    block: str = "mlp"  # registry name of the hierarchy's network: mlp, resconv
    groups: list[int] = field(default_factory=list)  # latent size (mlp) or channels (resconv) per group, top first
    group_hidden: list[int] = field(default_factory=lambda: [100, 100])  # mlp: widths between two groups
    group_scales: list[int] = field(default_factory=list)  # resconv: downsampling factor per group, top first
    width: int = 64  # resconv: channels of the residual stream
    res_blocks: int = 2  # resconv and resnet: residual blocks per resolution
    conditional: bool = False  # a conditional VAE (Sohn et al. 2015): encoder and decoder also see the class label
    num_classes: int | None = None  # conditional: filled in from the data's labels at train time
    input_shape: list[int] | None = None  # (C, H, W); filled in from the data at train time


@dataclass
class ObjectiveConfig:
    name: str = "elbo"  # registry name: elbo, iwae, dreg, ae (vaekit objectives lists them)
    beta: float = 1.0  # KL weight after any schedule has finished
    kl_schedule: Literal["constant", "linear", "cyclical", "sigmoid"] = "constant"
    kl_warmup_steps: int = 0  # length of the linear/sigmoid ramp, or of one cycle
    kl_cycles: int = 4  # cyclical schedule (Fu et al. 2019): number of cycles
    kl_ramp_fraction: float = 0.5  # cyclical: fraction of a cycle spent ramping up
    free_bits: float = 0.0  # nats per latent dimension (Kingma et al. 2016)
    free_bits_group: float = 0.0  # nats per latent group: its batch-mean KL is not pushed below this
    group_warmup_steps: list[int] = field(default_factory=list)  # per group (top first): a linear KL ramp each
    kl_balance: bool = False  # NVAE's KL balancing across groups while the KL weight is below 1
    spectral_reg: float = 0.0  # NVAE's spectral regularization: lambda * sum of the weights' top singular values
    iw_samples: int = 1  # iwae and dreg: the k of the k-sample bound (Burda et al. 2016)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio


@dataclass
class GuardConfig:
    clip_grad_norm: float | None = 200.0  # None turns clipping off
    skip_grad_norm: float | None = None  # also skip above this absolute norm (VDVAE's rule); None = never
    skip_outlier: float | None = 20.0  # skip a norm this many times the recent median (and 6 robust sigma out)
    skip_window: int = 100  # recent finite gradient norms the outlier rule judges against
    skip_warmup: int = 25  # steps before the outlier rule judges anything
    skip_nonfinite: bool = True  # skip the update on a NaN/inf loss or gradient
    ema_decay: float = 0.0  # 0 = no EMA of the weights
    # EMA warm-up: the decay at step t is min(ema_decay, 1 - (1 + t) ** -power), so a short run does not
    # average in its initial weights (crowsonkb's EMA warm-up, as diffusers' EMAModel; 3/4 reaches 0.999
    # at 10,000 steps); 0 = the constant ema_decay from the first step
    ema_warmup_power: float = 0.75
    rollback_after: int = 50  # this many skipped steps in a row roll back to the last checkpoint; 0 = never
    rollback_lr_factor: float = 0.5  # each rollback multiplies the learning rate by this ...
    rollback_clip_factor: float = 0.5  # ... and the clip norm by this
    max_rollbacks: int = 3  # one more streak after this many rollbacks stops the run with a diagnosis
    # roll back (the same remedy) when the training loss averaged over loss_window steps (-log p(x|z) + beta KL at
    # the step's KL weight: the -ELBO once a warm-up is over) rises this many nats per data dimension above the
    # lower of the run's first step and its best window; None = never
    loss_rise: float | None = 0.25
    loss_window: int = 25


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: int | None = None  # overrides epochs when set
    batch_size: int = 128
    eval_batch_size: int = 1000
    seed: int = 0
    log_every: int = 100  # steps between metrics.jsonl rows
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    checkpoint_minutes: float = 0.0  # also checkpoint after this much wall time since the last one; 0 = off
    keep_checkpoints: int = 2
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast, loss terms in fp32; fp16 CUDA only
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int | None = None  # torch intra-op threads; None = leave torch's default
    # torch.compile the whole step (forward, backward, guards, Adam): true, false, or auto (on for runs long
    # enough to pay for the compilation); falls back to eager, with a warning, if compiling fails
    compile: Literal["auto", True, False] = "auto"
    channels_last: bool = False  # NHWC memory format for convolutional models (bench/model_speed.py: where it pays)
    # where the uint8 training images live (data/feed.py): device (copied once; batches gathered there), pinned
    # (double-buffered asynchronous copies), host, or auto (device on a GPU when the set fits, else pinned; host on CPU)
    data_placement: Literal["auto", "device", "pinned", "host"] = "auto"
    samples: int = 64  # images in the sample grid written at the end
    tensorboard: bool = True  # also write TensorBoard events when the tensorboard package is installed


@dataclass
class Config:
    version: int = CONFIG_VERSION
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Config:
        cfg = _build(cls, _migrate(raw), "")
        from vaekit.config_checks import validate  # the range checks, kept in their own module

        validate(cfg)
        return cfg

    def override(self, assignments: list[str]) -> Config:
        """Apply `key.sub=value` strings (values parsed as YAML) and return a new config."""
        raw = self.to_dict()
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {assignment!r} is not of the form key.sub=value")
            try:
                value = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                value = text
            _assign(raw, key.strip().split("."), value, key)
        return Config.from_dict(raw)


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
    cfg = Config.from_dict(raw)
    return cfg.override(overrides) if overrides else cfg


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

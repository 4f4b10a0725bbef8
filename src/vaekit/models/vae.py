"""The VAE: a model over an ordered list of latent groups, and its one-group kind.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes". `VAE(cfg)` builds the kind that
`cfg.kind` names: `vae` (this file: encoder to a diagonal Gaussian q(z|x), an optional posterior
flow, a registry prior, decoder to a likelihood p(x|z)) or `hierarchical` (models/hierarchy.py:
a top-down model over several groups). Every kind returns a `VAEOutput` of groups, top first, so
objectives, evaluation, guards and training treat them alike. The model returns distributions;
the loss lives in `objectives` (STYLE.md, habit 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit import zoo
from vaekit.config import ModelConfig, config_from_dict
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.bounds import ElboTerms, elbo_terms, log_weights
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture, StandardNormal, soft_clamp
from vaekit.models.likelihoods import PixelDistribution, build_likelihood
from vaekit.models.nets import DECODERS, ENCODERS
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.posteriors import build_flow
from vaekit.models.priors import Prior, build_prior
from vaekit.registry import Registry
from vaekit.storage import atomic_write_bytes, load_state, read_safetensors, tensors_digest, write_safetensors

MODEL_FORMAT = "vaekit-model/1"
SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) = 1
KINDS: Registry[type[VAE]] = Registry("model kind")  # models/hierarchy.py registers "hierarchical"
# (prior, posterior) of one group, as `walk` yields: prior None = standard normal, or a mixture for the top group
Step = tuple[DiagonalGaussian | GaussianMixture | None, DiagonalGaussian | None]


def draw_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of `shape` on `like`'s device; a CPU generator draws on the CPU first."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class VAE(nn.Module):
    """A VAE over images of `cfg.input_shape` = (C, H, W) with pixels in [0, 1].

    `group_dims` gives the latent size of each group, top first; `latent_dim` is their sum, the
    width of the flat z that `decode` takes and `encode` describes.
    """

    group_dims: tuple[int, ...]
    prior: Prior
    num_classes: int = 0
    label_in: nn.Linear | None  # set per instance: a class-level default would shadow the submodule under dynamo

    def __new__(cls, cfg: ModelConfig | None = None, *args: Any, **kwargs: Any) -> VAE:
        # VAE(cfg) builds the kind cfg.kind names; copy.deepcopy calls __new__ with no config
        kind = KINDS.get(cfg.kind) if cls is VAE and cfg is not None and cfg.kind != "vae" else cls
        return super().__new__(kind)

    def __init__(self, cfg: ModelConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None) -> None:
        """Build the nets `cfg` names, or use your own: `encoder` maps x (B, C, H, W) to (B, 2 * latent_dim),
        `decoder` maps z (N, latent_dim) to the likelihood's parameters (N, P, H, W) (P: `likelihood_channels`).
        """
        super().__init__()
        c, h, w = self._check_shape(cfg)
        if encoder is not None or decoder is not None:
            cfg = dataclasses.replace(
                cfg,
                encoder="custom" if encoder is not None else cfg.encoder,
                decoder="custom" if decoder is not None else cfg.decoder,
            )
        self.cfg = cfg
        self.shape = (c, h, w)
        self.latent_dim = cfg.latent_dim
        self.group_dims = (cfg.latent_dim,)
        self.likelihood = build_likelihood(self.shape, cfg)
        self.likelihood_channels = self.likelihood.param_channels(c)
        self.flow = build_flow(cfg.latent_dim, cfg)
        self.context_dim = self.flow.context_dim if self.flow is not None else 0
        decoder_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else cfg.hidden[::-1]
        encoder_out = 2 * cfg.latent_dim + self.context_dim
        self.num_classes = self._classes(cfg)
        decoder_in = cfg.latent_dim + self.num_classes  # a conditional decoder reads cat(z, one-hot y)
        extra = {"blocks": cfg.res_blocks} if cfg.encoder == "resnet" else {}
        self.encoder = (
            encoder
            if encoder is not None
            else self._net(cfg.encoder, ENCODERS, "encoder")(
                self.shape, cfg.hidden, encoder_out, cfg.activation, **extra
            )
        )
        extra = {"blocks": cfg.res_blocks} if cfg.decoder == "resnet" else {}
        self.decoder = (
            decoder
            if decoder is not None
            else self._net(cfg.decoder, DECODERS, "decoder")(
                self.shape, decoder_hidden, decoder_in, cfg.activation, self.likelihood_channels, **extra
            )
        )
        # a conditional encoder adds W y to its output: q(z | x, y) = f(x) + W y, for any encoder network
        self.label_in = nn.Linear(self.num_classes, encoder_out, bias=False) if self.num_classes else None
        if encoder is not None or decoder is not None:
            self._check_own_nets(encoder_out)
        self.prior = build_prior(cfg.latent_dim, cfg, self.shape)

    @staticmethod
    def _classes(cfg: ModelConfig) -> int:
        if not cfg.conditional:
            return 0
        if cfg.num_classes is None:
            raise ConfigError("model.conditional=true needs model.num_classes; training fills it in from the labels")
        return cfg.num_classes

    def labels(self, y: Tensor | None, n: int) -> Tensor:
        """Labels (n,) long on the model's device, checked; a missing or bad y is a one-line error."""
        if y is None:
            raise ConfigError(
                f"this model is conditional on the class label: pass y, {n} labels in 0..{self.num_classes - 1}"
            )
        # the range check reads y on the host: a compiled step (labels checked on loading) leaves it out, no sync
        compiled = torch.compiler.is_compiling()
        out_of_range = not compiled and y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)
        if y.shape != (n,) or out_of_range:
            raise ConfigError(f"labels y must be ({n},) integers in 0..{self.num_classes - 1}, got {tuple(y.shape)}")
        return y.long().to(self.device)

    def onehot(self, y: Tensor | None, n: int) -> Tensor:
        """One-hot labels (n, K) of a conditional model; a missing or bad y is a one-line error."""
        return F.one_hot(self.labels(y, n), self.num_classes).float()

    @staticmethod
    def _net(name: str, registry: Registry[Any], role: str) -> Any:
        if name == "custom":
            raise ConfigError(
                f"this model was built with your own {role} (model.{role}=custom): pass it again, "
                f"VAE(cfg, {role}=...) or VAE.from_pretrained(folder, {role}=...)"
            )
        return registry.get(name)

    @torch.no_grad()
    def _check_own_nets(self, encoder_out: int) -> None:
        """One line naming the mismatch when a user's encoder or decoder does not fit the model's shapes."""
        c, h, w = self.shape
        try:
            out = self.encoder(torch.zeros(2, c, h, w))
        except Exception as exc:
            raise ConfigError(f"your encoder fails on images (2, {c}, {h}, {w}): {type(exc).__name__}: {exc}") from None
        if tuple(out.shape) != (2, encoder_out):
            raise ConfigError(
                f"your encoder maps images (2, {c}, {h}, {w}) to {tuple(out.shape)}; it must give (2, {encoder_out}): "
                f"a mean and a log-variance per latent dimension (model.latent_dim={self.latent_dim})"
            )
        try:
            params = self.decoder(torch.zeros(2, self.latent_dim + self.num_classes))
        except Exception as exc:
            raise ConfigError(
                f"your decoder fails on latents (2, {self.latent_dim}): {type(exc).__name__}: {exc}"
            ) from None
        want = (2, self.likelihood_channels, h, w)
        if tuple(params.shape) != want:
            raise ConfigError(
                f"your decoder maps latents (2, {self.latent_dim}) to {tuple(params.shape)}; it must give {want} "
                f"({self.likelihood_channels} channels: what the {self.cfg.likelihood!r} likelihood reads)"
            )

    @staticmethod
    def _check_shape(cfg: ModelConfig) -> tuple[int, int, int]:
        if cfg.input_shape is None:
            raise ConfigError("model.input_shape is not set; build the model from data or pass (C, H, W)")
        c, h, w = cfg.input_shape
        return c, h, w

    @property
    def dims(self) -> int:
        """Data dimensions per example (C * H * W), for bits/dim."""
        return math.prod(self.shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- the kind-specific part: every kind overrides these four -------------------------------

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """x (B, C, H, W) in [0, 1] (and labels y (B,) if conditional) -> q(z|x) with mean, logvar (B, D)."""
        return self._posterior(x, y)[0]

    def decode(self, z: Tensor, y: Tensor | None = None) -> PixelDistribution:
        """z (..., D) (and labels y, one per z, if conditional) -> p(x|z) with batch shape (...)."""
        flat = z.reshape(-1, self.latent_dim)
        if self.num_classes:  # y (B,) for z (S, B, D): the same label for every sample of an example
            labels = y if y is None or y.numel() == flat.shape[0] else y.repeat(flat.shape[0] // max(y.numel(), 1))
            flat = torch.cat([flat, self.onehot(labels, flat.shape[0])], dim=-1)
        params = self.decoder(flat)  # (N, K*C, H, W)
        return self.likelihood(params.view(*z.shape[:-1], *params.shape[1:]))

    def forward(
        self,
        x: Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
        y: Tensor | None = None,
    ) -> VAEOutput:
        """Per group q, p and S samples z, and p(x|z); `eps` (S, B, latent_dim) may be given; `y` (B,) labels."""
        q, context = self._posterior(x, y)
        z = q.mean + q.std * eps if eps is not None else q.rsample(n_samples, generator)  # (S, B, D)
        log_q = None
        if self.flow is not None:
            z0 = z
            z, log_det = self.flow(z0, context)
            log_q = q.log_prob(z0) - log_det  # change of variables: log q(z_T) = log q(z_0) - log|det|
        group = LatentGroup(q=q, p=self.prior_distribution(), z=z, log_q=log_q)
        return VAEOutput(groups=(group,), px=self.decode(z, y))

    def sample_latents(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> Tensor:
        """(n, latent_dim) draws from the prior, standard deviations scaled by `temperature` (the prior of a
        one-group model does not depend on a conditional model's labels y; a hierarchy's lower groups do)."""
        return self.prior_distribution().sample(n, generator=generator, temperature=temperature).to(self.device)

    def walk(self, x: Tensor | None = None) -> Generator[Step, Tensor, PixelDistribution]:
        """The groups one at a time, top first, for coders that choose each z themselves (bits-back).

        Yields (p, q) per group, (1, D_l) each: p is None for the standard normal prior (a
        `GaussianMixture` for a mixture prior), q is None when x is None; receives that group's z
        (1, D_l) by `send`; returns p(x | every z).
        """
        q = self.encode(x) if x is not None else None
        z = yield self.top_prior_for_coding(), q
        return self.decode(z)

    def top_prior_for_coding(self) -> GaussianMixture | None:
        """The top group's prior as `walk` yields it: None for N(0, I), else the mixture."""
        dist = self.prior_distribution()
        return dist if isinstance(dist, GaussianMixture) else None

    # --- shared by every kind -----------------------------------------------------------------

    def _posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[DiagonalGaussian, Tensor | None]:
        out = self.encoder(x)  # (B, 2D + context)
        if self.label_in is not None:
            out = out + self.label_in(self.onehot(y, x.shape[0]))
        mean, logvar, context = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        q = DiagonalGaussian(mean, self.logvar(logvar))
        return q, (context if self.context_dim else None)

    def raw_logvar(self, raw: Tensor) -> Tensor:
        """A network's scale output as a log-variance: raw itself (exp: std = exp(raw / 2)), or with
        `model.scale_param=softplus` std = softplus(raw + 0.5413), smooth and linear for large raw instead of
        exponential (Efficient-VDVAE, Hazami et al. 2022); raw = 0 is a unit scale either way."""
        if self.cfg.scale_param == "softplus":
            return 2 * torch.log(F.softplus(raw + SOFTPLUS_ONE) + 1e-6)
        return raw

    def logvar(self, raw: Tensor) -> Tensor:
        """`raw_logvar`, softly clamped to [model.logvar_min, model.logvar_max]."""
        return soft_clamp(self.raw_logvar(raw), self.cfg.logvar_min, self.cfg.logvar_max)

    def top_posterior(self) -> Callable[[Tensor], DiagonalGaussian]:
        """Images -> the top group's Gaussian posterior: what the VampPrior pushes its pseudo-inputs through."""
        return self.encode

    def prior_distribution(self) -> StandardNormal | GaussianMixture:
        """The top group's prior for this forward pass (a VampPrior runs its pseudo-inputs through the encoder)."""
        return self.prior.distribution(self.top_posterior())

    def elbo(
        self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> ElboTerms:
        """The ELBO's terms for x (B, C, H, W) (labels y if conditional); `neg_elbo` is (B,) nats."""
        return elbo_terms(self(x, n_samples, generator, y=y), x)

    @torch.no_grad()
    def log_likelihood(
        self,
        x: Tensor,
        k: int = 1000,
        chunk: int = 100,
        generator: torch.Generator | None = None,
        y: Tensor | None = None,
    ) -> Tensor:
        """Importance-sampled log p(x), (B,) nats, with q(z|x) as proposal (Burda et al. 2016, App. D).

        Samples are drawn `chunk` at a time and combined with a running logsumexp, so memory
        stays at O(chunk * B) for any k. With k = 1 this is a single-sample ELBO.
        """
        total = torch.full((x.shape[0],), -math.inf, device=x.device)
        for start in range(0, k, chunk):
            log_w = log_weights(self(x, min(chunk, k - start), generator, y=y), x)  # (S, B)
            total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        return total - math.log(k)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """n images (n, C, H, W): the likelihood's mean at z drawn from the prior at `temperature`.

        A conditional model draws class `labels` (n,); without them, classes 0, 1, ... in turn.
        """
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        return self.decode(self.sample_latents(n, temperature, generator, labels), labels).mean.clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The likelihood's mean at the posterior mean, (B, C, H, W), on x's device (the model may be on a GPU)."""
        return self.decode(self.encode(x.to(self.device), y).mean, y).mean.clamp(0, 1).to(x.device)

    @torch.no_grad()
    def classify(self, x: Tensor, k: int = 10, generator: torch.Generator | None = None) -> Tensor:
        """A conditional model as a generative classifier: argmax_y log p(x | y), (B,), importance-sampled (k)."""
        if not self.num_classes:
            raise ConfigError("classify needs a conditional model (model.conditional=true)")
        scores = torch.stack(
            [
                self.log_likelihood(x, k, generator=generator, y=torch.full((x.shape[0],), c))
                for c in range(self.num_classes)
            ]
        )  # (K, B)
        return scores.argmax(0)

    def save_pretrained(self, folder: str | Path) -> None:
        """Write `config.json` + `model.safetensors` (no pickle) to `folder`."""
        save_model(self, folder)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        map_location: str = "cpu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> VAE:
        """Load a model written by `save_pretrained`, a run directory's `model/`, or a zoo model by name
        (`vaekit zoo` lists them), with its own nets if any."""
        return load_model(folder, map_location, encoder, decoder)


KINDS.register("vae")(VAE)


def save_model(model: VAE, folder: str | Path) -> None:
    """`folder/config.json` + `folder/model.safetensors`; the weights' hash ties the two together."""
    folder = Path(folder)
    state = dict(model.state_dict())
    digest = tensors_digest({k: v.detach().contiguous().cpu() for k, v in state.items()})
    config = {"format": MODEL_FORMAT, "weights_sha256": digest, "model": dataclasses.asdict(model.cfg)}
    write_safetensors(folder / "model.safetensors", state, {"format": MODEL_FORMAT})
    atomic_write_bytes(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def load_model(
    folder: str | Path, map_location: str = "cpu", encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> VAE:
    """The model saved in `folder` (an exported model, a run directory or a zoo name), its weights' hash checked.

    Weights stored in lower precision (the zoo's fp16) are loaded into the model's fp32 parameters.
    """
    folder = zoo.resolve(folder)
    if (folder / "model").is_dir() and not (folder / "config.json").is_file():
        folder = folder / "model"  # a run directory
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"no model at {str(folder)!r}: config.json is missing; give a run directory or its model/ folder"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(config_path)!r} is not valid JSON ({exc}); re-export the model") from None
    if (
        not isinstance(config, dict)
        or config.get("format") != MODEL_FORMAT
        or not isinstance(config.get("model"), dict)
    ):
        raise CheckpointError(f"{str(config_path)!r} is not a vaekit model config (format {MODEL_FORMAT})")
    cfg = config_from_dict({"model": config["model"]})
    tensors, _ = read_safetensors(folder / "model.safetensors")
    if config.get("weights_sha256") != tensors_digest(tensors):
        raise CheckpointError(
            f"{str(folder)!r}: model.safetensors does not belong to this config.json (weights hash differs)"
        )
    model = VAE(cfg.model, encoder, decoder) if encoder is not None or decoder is not None else VAE(cfg.model)
    load_state(model, tensors, str(folder))
    return model.to(map_location)

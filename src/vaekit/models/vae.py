"""The one-group VAE, the table of model kinds, and loading a saved model of any kind.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes": an encoder to a diagonal Gaussian q(z|x), an optional
posterior flow, a registry prior, and a decoder to a likelihood p(x|z). `build_model(cfg)` builds the kind
`cfg.kind` names from `KINDS` (this file's `VAE`, or models/hierarchy.py's `TopDownVAE`); every kind runs its own
constructor over `BaseVAE`'s (models/base.py). The model returns distributions; the loss lives in `objectives`
(STYLE.md, habit 1).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit import zoo
from vaekit.config import ModelConfig, config_from_dict
from vaekit.errors import CheckpointError, ConfigError
from vaekit.models.base import MODEL_FORMAT, BaseVAE, Step, last_weight
from vaekit.models.distributions import DiagonalGaussian
from vaekit.models.hierarchy import TopDownVAE
from vaekit.models.likelihoods import PixelDistribution
from vaekit.models.nets import DECODERS, ENCODERS
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.posteriors import build_flow
from vaekit.models.priors import build_prior
from vaekit.models.vq import VQVAE
from vaekit.registry import Registry
from vaekit.storage import load_state, read_safetensors, tensors_digest


class VAE(BaseVAE):
    """`model.kind: vae`: one latent group of `model.latent_dim` over the `model.encoder` and `model.decoder` nets."""

    def __init__(self, cfg: ModelConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None) -> None:
        """Build the nets `cfg` names, or use your own: `encoder` maps x (B, C, H, W) to (B, 2 * latent_dim),
        `decoder` maps z (N, latent_dim) to the likelihood's parameters (N, P, H, W) (P: `likelihood_channels`).
        Other kinds: `build_model(cfg)`.
        """
        if cfg.kind != "vae":
            raise ConfigError(f"VAE(cfg) builds model.kind=vae; build model.kind={cfg.kind} with build_model(cfg)")
        if encoder is not None or decoder is not None:
            cfg = dataclasses.replace(
                cfg,
                encoder="custom" if encoder is not None else cfg.encoder,
                decoder="custom" if decoder is not None else cfg.decoder,
            )
        super().__init__(cfg)
        self.latent_dim = cfg.latent_dim
        self.group_dims = (cfg.latent_dim,)
        self.flow = build_flow(cfg.latent_dim, cfg)
        self.context_dim = self.flow.context_dim if self.flow is not None else 0
        decoder_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else cfg.hidden[::-1]
        encoder_out = 2 * cfg.latent_dim + self.context_dim
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

    # --- the kind-specific part: every kind overrides these four -------------------------------

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """x (B, C, H, W) in [0, 1] (and labels y (B,) if conditional) -> q(z|x) with mean, logvar (B, D)."""
        return self._posterior(x, y)[0]

    def output_layer(self) -> Tensor | None:
        return last_weight(self.decoder)

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
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, y: Tensor | None = None,
        top: Tensor | None = None,
    ) -> Tensor:
        """(n, latent_dim) draws from the prior, standard deviations scaled by `temperature` (the prior of a
        one-group model does not depend on a conditional model's labels y; a hierarchy's lower groups do); `top`:
        latents given instead (one group: the top is all of z)."""
        if top is not None:
            return top.to(self.device)
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

    # --- shared by every kind -----------------------------------------------------------------

    def _posterior(self, x: Tensor, y: Tensor | None = None) -> tuple[DiagonalGaussian, Tensor | None]:
        out = self.encoder(x)  # (B, 2D + context)
        if self.label_in is not None:
            out = out + self.label_in(self.onehot(y, x.shape[0]))
        mean, logvar, context = out.split([self.latent_dim, self.latent_dim, self.context_dim], dim=-1)
        q = DiagonalGaussian(mean, self.logvar(logvar))
        return q, (context if self.context_dim else None)

    def top_posterior(self) -> Callable[[Tensor], DiagonalGaussian]:
        """Images -> the top group's Gaussian posterior: what the VampPrior pushes its pseudo-inputs through."""
        return self.encode

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        map_location: str = "cpu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
    ) -> BaseVAE:
        """Load a model of any kind written by `save_pretrained`, a run directory's `model/`, or a zoo model by name
        (`vaekit zoo` lists them), with its own nets if any."""
        return load_model(folder, map_location, encoder, decoder)


KINDS: Registry[Callable[..., BaseVAE]] = Registry("model kind", {"vae": VAE, "hierarchical": TopDownVAE, "vq": VQVAE})


def build_model(cfg: ModelConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None) -> BaseVAE:
    """The model of kind `cfg.kind` (its own `encoder` / `decoder`: one-group models only, see `VAE`)."""
    kind = KINDS.get(cfg.kind)
    if encoder is None and decoder is None:
        return kind(cfg)
    if cfg.kind != "vae":
        raise ConfigError(
            "your own encoder and decoder plug into one-group models (model.kind=vae), not hierarchies"
        )
    return VAE(cfg, encoder, decoder)


def model_folder(run: str | Path) -> Path:
    """The folder holding a model's config.json and weights: a run directory's `model/`, an exported model's
    folder, or a zoo model's."""
    folder = zoo.resolve(run)
    if (folder / "model").is_dir() and not (folder / "config.json").is_file():
        return folder / "model"  # a run directory
    return folder


def load_model(
    folder: str | Path, map_location: str = "cpu", encoder: nn.Module | None = None, decoder: nn.Module | None = None
) -> BaseVAE:
    """The model saved in `folder` (an exported model, a run directory or a zoo name), its weights' hash checked.

    Weights stored in lower precision (the zoo's fp16) are loaded into the model's fp32 parameters.
    """
    folder = model_folder(folder)
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
    model = build_model(cfg.model, encoder, decoder)
    load_state(model, tensors, str(folder))
    return model.to(map_location)

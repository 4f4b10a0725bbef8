"""What every model kind shares: the likelihood, the labels of a conditional model, the prior's use, the ELBO,
importance-sampled likelihood, sampling, reconstruction and export.

A kind (models/vae.py: the one-group `VAE`; models/hierarchy.py: the top-down `TopDownVAE`) subclasses `BaseVAE`,
runs this constructor, builds its own networks, and implements `encode`, `decode`, `forward`, `sample_latents`,
`walk` and `top_posterior`. Every kind returns a `VAEOutput` of groups, top first, so objectives, evaluation, guards
and training treat them alike. `models/vae.py`'s `build_model(cfg)` builds the kind `cfg.kind` names.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Generator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.bounds import ElboTerms, elbo_terms, log_weights
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture, StandardNormal, soft_clamp
from vaekit.models.likelihoods import PixelDistribution, build_likelihood
from vaekit.models.outputs import VAEOutput
from vaekit.models.priors import Prior
from vaekit.storage import atomic_write_bytes, tensors_digest, write_safetensors

MODEL_FORMAT = "vaekit-model/1"
SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) = 1
# (prior, posterior) of one group, as `walk` yields: prior None = standard normal, or a mixture for the top group
Step = tuple[DiagonalGaussian | GaussianMixture | None, DiagonalGaussian | None]


def draw_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of `shape` on `like`'s device; a CPU generator draws on the CPU first."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


class BaseVAE(nn.Module):
    """A model over images of `cfg.input_shape` = (C, H, W) with pixels in [0, 1].

    `group_dims` gives the latent size of each group, top first; `latent_dim` is their sum, the
    width of the flat z that `decode` takes and `encode` describes.
    """

    group_dims: tuple[int, ...]
    latent_dim: int
    prior: Prior
    num_classes: int = 0
    label_in: nn.Linear | None  # set per instance: a class-level default would shadow the submodule under dynamo
    flow: nn.Module | None
    context_dim: int

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, h, w = self._check_shape(cfg)
        self.cfg = cfg
        self.shape = (c, h, w)
        self.likelihood = build_likelihood(self.shape, cfg)
        self.likelihood_channels = self.likelihood.param_channels(c)
        self.num_classes = self._classes(cfg)
        self.flow, self.context_dim, self.label_in = None, 0, None  # a kind with a flow or label input sets them

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

    # --- the kind-specific part: every kind implements these --------------------------------------

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """x (B, C, H, W) in [0, 1] (and labels y (B,) if conditional) -> q(z|x) with mean, logvar (B, D)."""
        raise NotImplementedError

    def decode(self, z: Tensor, y: Tensor | None = None) -> PixelDistribution:
        """z (..., D) (and labels y, one per z, if conditional) -> p(x|z) with batch shape (...)."""
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        n_samples: int = 1,
        generator: torch.Generator | None = None,
        eps: Tensor | None = None,
        y: Tensor | None = None,
    ) -> VAEOutput:
        """Per group q, p and S samples z, and p(x|z); `eps` (S, B, latent_dim) may be given; `y` (B,) labels."""
        raise NotImplementedError

    def sample_latents(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None, y: Tensor | None = None,
        top: Tensor | None = None,
    ) -> Tensor:
        """(n, latent_dim) draws from the prior, standard deviations scaled by `temperature`; `top` (n, D_top): the
        top group's latents given (an ex-post sampler's), the lower groups drawn from their priors given them."""
        raise NotImplementedError

    def walk(self, x: Tensor | None = None) -> Generator[Step, Tensor, PixelDistribution]:
        """The groups one at a time, top first, for coders that choose each z themselves (bits-back)."""
        raise NotImplementedError

    def top_posterior(self) -> Callable[[Tensor], DiagonalGaussian]:
        """Images -> the top group's Gaussian posterior: what the VampPrior pushes its pseudo-inputs through."""
        raise NotImplementedError

    def output_layer(self) -> Tensor | None:
        """The weight of the layer that makes the likelihood's parameters (the adversarial objective's adaptive
        weight compares gradients there), or None when the kind has none to offer."""
        return None

    # --- shared by every kind -----------------------------------------------------------------

    def top_prior_for_coding(self) -> GaussianMixture | None:
        """The top group's prior as `walk` yields it: None for N(0, I), else the mixture."""
        dist = self.prior_distribution()
        return dist if isinstance(dist, GaussianMixture) else None

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


def save_model(model: BaseVAE, folder: str | Path) -> None:
    """`folder/config.json` + `folder/model.safetensors`; the weights' hash ties the two together."""
    folder = Path(folder)
    state = dict(model.state_dict())
    digest = tensors_digest({k: v.detach().contiguous().cpu() for k, v in state.items()})
    config = {"format": MODEL_FORMAT, "weights_sha256": digest, "model": dataclasses.asdict(model.cfg)}
    write_safetensors(folder / "model.safetensors", state, {"format": MODEL_FORMAT})
    atomic_write_bytes(folder / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def last_weight(net: nn.Module) -> Tensor | None:
    """The weight of `net`'s last registered linear or convolutional layer (a decoder's output layer), or None."""
    layers = [m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d)]
    return layers[-1].weight if layers else None

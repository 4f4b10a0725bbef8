"""Discriminators: the second player of the adversarial objective (objectives/adversarial.py).

A discriminator maps images (B, C, H, W) in [0, 1] to logits (B, P), one per patch (P = 1 for the small one), and
the features its last hidden layer sees (B, F), which Larsen et al. (2016) measure reconstructions in. It also
keeps, as buffers, the running means of its real and fake logits that LeCam regularization anchors to (Tseng et al.
2021), so they are saved, resumed and rolled back with its weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vaekit.config.schema import AdversarialConfig
from vaekit.errors import ConfigError
from vaekit.registry import Registry

Shape = tuple[int, int, int]


class Discriminator(nn.Module):
    """`body` (images -> features), `head` (features -> logits); see the module's docstring."""

    def __init__(self, body: nn.Module, head: nn.Module, flatten_head: bool) -> None:
        super().__init__()
        self.body, self.head, self.flatten_head = body, head, flatten_head
        self.register_buffer("lecam_real", torch.zeros(()))  # running mean of the logits of real images
        self.register_buffer("lecam_fake", torch.zeros(()))  # ... and of fakes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(2 * x - 1)  # images to [-1, 1], as taming's and most GANs' discriminators see them
        logits = self.head(h.flatten(1) if self.flatten_head else h)
        return logits.flatten(1).float(), h.flatten(1).float()


def _layer(module: nn.Module, cfg: AdversarialConfig) -> nn.Module:
    nn.init.normal_(module.weight, 0.0, 0.02)  # type: ignore[arg-type]  # taming's weights_init (DCGAN's)
    return spectral_norm(module) if cfg.spectral_norm else module


def _norm(channels: int, cfg: AdversarialConfig) -> nn.Module:
    if cfg.disc_norm == "none":
        return nn.Identity()
    norm = nn.BatchNorm2d(channels)
    nn.init.normal_(norm.weight, 1.0, 0.02)
    return norm


def patch(shape: Shape, cfg: AdversarialConfig) -> Discriminator:
    """PatchGAN (Isola et al. 2017) as taming-transformers' NLayerDiscriminator: `disc_layers` stride-2 4x4
    convolutions (widths ndf, 2 ndf, ... up to 8 ndf), one stride-1 convolution, and a 1-channel 4x4 head: a logit
    per overlapping patch, so it fits any image at least 3 * 2**n pixels on a side."""
    c, h, w = shape
    n, ndf = cfg.disc_layers, cfg.disc_channels
    if min(h, w) // 2**n < 3:
        raise ConfigError(
            f"adversarial.discriminator=patch with disc_layers={n} does not fit {h}x{w} images (it needs at least "
            f"{3 * 2**n} pixels a side); lower adversarial.disc_layers or use adversarial.discriminator=small"
        )
    widths = [c] + [ndf * min(2**i, 8) for i in range(n + 1)]
    layers: list[nn.Module] = []
    for i in range(n + 1):
        stride = 2 if i < n else 1
        conv = nn.Conv2d(widths[i], widths[i + 1], 4, stride, 1, bias=i == 0 or cfg.disc_norm == "none")
        layers += [_layer(conv, cfg), *([] if i == 0 else [_norm(widths[i + 1], cfg)]), nn.LeakyReLU(0.2)]
    return Discriminator(nn.Sequential(*layers), _layer(nn.Conv2d(widths[-1], 1, 4, 1, 1), cfg), flatten_head=False)


def small(shape: Shape, cfg: AdversarialConfig) -> Discriminator:
    """For 28x28 (any size from 4 pixels): two stride-2 4x4 convolutions (ndf/2, ndf channels) and a linear head
    to one logit per image, DCGAN-style (Radford et al. 2016) at MNIST's size."""
    c, h, w = shape
    if min(h, w) < 4:
        raise ConfigError(f"adversarial.discriminator=small needs images of at least 4x4 pixels, got {h}x{w}")
    ndf = cfg.disc_channels
    body = nn.Sequential(
        _layer(nn.Conv2d(c, ndf // 2, 4, 2, 1), cfg),
        nn.LeakyReLU(0.2),
        _layer(nn.Conv2d(ndf // 2, ndf, 4, 2, 1, bias=cfg.disc_norm == "none"), cfg),
        _norm(ndf, cfg),
        nn.LeakyReLU(0.2),
    )
    return Discriminator(body, _layer(nn.Linear(ndf * (h // 4) * (w // 4), 1), cfg), flatten_head=True)


DISCRIMINATORS: Registry[Callable[[Shape, AdversarialConfig], Discriminator]] = Registry(
    "discriminator", {"patch": patch, "small": small}
)


def build_discriminator(shape: Shape, cfg: AdversarialConfig) -> Discriminator:
    """The discriminator `cfg.discriminator` names for images of `shape` (C, H, W); one-line error if it cannot."""
    if cfg.disc_channels < 2:
        raise ConfigError("adversarial.disc_channels must be >= 2")
    return DISCRIMINATORS.get(cfg.discriminator)(shape, cfg)


def tc_critic(latent_dim: int, hidden: int = 1000, layers: int = 6) -> nn.Module:
    """FactorVAE's critic over latent codes (Kim & Mnih 2018, App. A: 6 layers of 1000 units, leaky ReLU 0.2):
    (B, D) codes -> (B, 2) logits, class 0 "drawn from q(z)", class 1 "dimensions permuted"."""
    blocks: list[nn.Module] = []
    width = latent_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    return nn.Sequential(*blocks, nn.Linear(width, 2))

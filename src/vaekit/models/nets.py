"""Encoder and decoder networks: plain nn.Modules, tensors in, tensors out.

Encoders map x (B, C, H, W) to (B, 2*D) posterior parameters; decoders map z (N, D) to
(N, K*C, H, W) likelihood parameters, K given by the likelihood.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.registry import Registry

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
Shape = tuple[int, int, int]
NetFactory = Callable[..., nn.Module]
ENCODERS: Registry[NetFactory] = Registry("encoder")
DECODERS: Registry[NetFactory] = Registry("decoder")


def mlp(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers of `widths`, with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, shape: Shape, hidden: list[int], out_features: int, activation: str) -> None:
        super().__init__()
        c, h, w = shape
        self.net = mlp([c * h * w, *hidden, out_features], activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))  # (B, C*H*W) -> (B, out)


class MLPDecoder(nn.Module):
    def __init__(self, shape: Shape, hidden: list[int], in_features: int, activation: str, channels_out: int) -> None:
        super().__init__()
        _, h, w = shape
        self.out_shape = (channels_out, h, w)
        self.net = mlp([in_features, *hidden, channels_out * h * w], activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.out_shape)  # (N, D) -> (N, K*C, H, W)


def _check_divisible(shape: Shape, n_layers: int) -> tuple[int, int]:
    _, h, w = shape
    factor = 2**n_layers
    if h % factor or w % factor:
        raise ConfigError(
            f"conv nets halve the image {n_layers} times: {h}x{w} must be divisible by {factor}; "
            "use fewer entries in model.hidden"
        )
    return h // factor, w // factor


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions, each halving H and W, then a linear head."""

    def __init__(self, shape: Shape, channels: list[int], out_features: int, activation: str) -> None:
        super().__init__()
        h, w = _check_divisible(shape, len(channels))
        layers: list[nn.Module] = []
        for n_in, n_out in zip([shape[0], *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * h * w, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x).flatten(1))  # (B, C, H, W) -> (B, ch, H/2^L, W/2^L) -> (B, out)


class ConvDecoder(nn.Module):
    """A linear layer to a small feature map, then stride-2 transposed convolutions back to H x W."""

    def __init__(self, shape: Shape, channels: list[int], in_features: int, activation: str, channels_out: int) -> None:
        super().__init__()
        h, w = _check_divisible(shape, len(channels))
        self.start = (channels[0], h, w)
        self.head = nn.Sequential(nn.Linear(in_features, channels[0] * h * w), ACTIVATIONS[activation]())
        layers: list[nn.Module] = []
        widths = [*channels, channels_out]
        for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
            layers.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(ACTIVATIONS[activation]())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.head(z).view(-1, *self.start))  # (N, D) -> (N, K*C, H, W)


ENCODERS.register("mlp")(MLPEncoder)
ENCODERS.register("conv")(ConvEncoder)
DECODERS.register("mlp")(MLPDecoder)
DECODERS.register("conv")(ConvDecoder)

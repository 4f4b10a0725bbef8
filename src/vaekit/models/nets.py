"""Encoder and decoder networks: plain nn.Modules, tensors in, tensors out.

Encoders map x (B, C, H, W) to (B, 2*D) posterior parameters; decoders map z (N, D) to
(N, K*C, H, W) likelihood parameters, K given by the likelihood.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
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


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))), 3x3, no normalization (nothing leaks across the batch).

    The second convolution starts scaled by `scale` (1/sqrt(number of blocks), as VDVAE scales its
    residual branches), so a deep stack starts close to the identity.
    """

    def __init__(self, width: int, activation: str, scale: float) -> None:
        super().__init__()
        self.act = ACTIVATIONS[activation]()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(self.act(x))))


def res_stack(n: int, width: int, activation: str, scale: float) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(width, activation, scale) for _ in range(n)))


class ResNetEncoder(nn.Module):
    """A 3x3 stem, then per entry of `channels`: `blocks` residual blocks and a 2x average pool; a linear head.

    No normalization (nothing leaks across the batch); residual branches start scaled down (ResBlock).
    For 32x32 inputs, channels [64, 128, 256] end at 4x4; for 64x64, add a stage.
    """

    def __init__(self, shape: Shape, channels: list[int], out_features: int, activation: str, blocks: int = 2) -> None:
        super().__init__()
        h, w = _check_divisible(shape, len(channels))
        scale = 1 / math.sqrt(max(1, blocks * len(channels)))
        self.stem = nn.Conv2d(shape[0], channels[0], 3, padding=1)
        stages: list[nn.Module] = []
        for n_in, n_out in zip(channels, [*channels[1:], channels[-1]], strict=True):
            stages += [res_stack(blocks, n_in, activation, scale), nn.AvgPool2d(2)]
            if n_out != n_in:
                stages.append(nn.Conv2d(n_in, n_out, 1))
        self.body = nn.Sequential(*stages, ACTIVATIONS[activation]())
        self.head = nn.Linear(channels[-1] * h * w, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(self.stem(x)).flatten(1))  # (B, C, H, W) -> (B, ch, H/2^L, W/2^L) -> (B, out)


class ResNetDecoder(nn.Module):
    """A linear layer to the coarsest feature map, then per stage: 2x nearest upsampling and residual blocks."""

    def __init__(
        self, shape: Shape, channels: list[int], in_features: int, activation: str, channels_out: int, blocks: int = 2
    ) -> None:
        super().__init__()
        h, w = _check_divisible(shape, len(channels))
        scale = 1 / math.sqrt(max(1, blocks * len(channels)))
        self.start = (channels[0], h, w)
        self.head = nn.Linear(in_features, channels[0] * h * w)
        stages: list[nn.Module] = []
        for n_in, n_out in zip(channels, [*channels[1:], channels[-1]], strict=True):
            stages += [nn.Upsample(scale_factor=2.0, mode="nearest"), res_stack(blocks, n_in, activation, scale)]
            if n_out != n_in:
                stages.append(nn.Conv2d(n_in, n_out, 1))
        self.body = nn.Sequential(*stages, ACTIVATIONS[activation]())
        self.out = nn.Conv2d(channels[-1], channels_out, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.body(self.head(z).view(-1, *self.start)))  # (N, D) -> (N, K*C, H, W)


ENCODERS.register("mlp")(MLPEncoder)
ENCODERS.register("conv")(ConvEncoder)
DECODERS.register("mlp")(MLPDecoder)
DECODERS.register("conv")(ConvDecoder)
ENCODERS.register("resnet")(ResNetEncoder)
DECODERS.register("resnet")(ResNetDecoder)

"""The networks of a top-down hierarchy, as registry entries (`model.block`): `mlp` and `resconv`.

A block turns the hierarchy's five questions into layers; models/hierarchy.py asks them in order:
  bottom_up(x)              -> one deterministic feature per group, top first (computed once per x)
  initial_state(n)          -> the top-down state before the top group (None, or a learned constant)
  prior_params(l, s)        -> (N, 2 D_l): mean and log-variance of p(z_l | z_>l), for l >= 1
  posterior_params(l, s, f) -> (N, 2 D_l): the top group's posterior, or a lower group's offsets
  merge(l, s, z_l)          -> the state after group l;  output(s) -> likelihood parameters (N, K*C, H, W)
Latents are flat per group, (N, D_l); a conv group of C_l channels at h x w has D_l = C_l * h * w.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.nets import ACTIVATIONS, ResBlock, mlp, res_stack
from vaekit.registry import Registry

Shape = tuple[int, int, int]


class TopDownNet(nn.Module):
    group_dims: tuple[int, ...]
    feature_shapes: list[tuple[int, ...]]

    def bottom_up(self, x: Tensor) -> list[Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def initial_state(self, n: int, like: Tensor) -> Tensor | None:  # pragma: no cover - interface
        raise NotImplementedError

    def prior_params(self, level: int, s: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def posterior_params(self, level: int, s: Tensor | None, feature: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def merge(self, level: int, s: Tensor | None, z: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def output(self, s: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


BLOCKS: Registry[Callable[[Shape, ModelConfig, int], TopDownNet]] = Registry("block")


def _stack(widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers with `activation` after every one (hidden layers on both sides of a group)."""
    return nn.Sequential(mlp(widths, activation), ACTIVATIONS[activation]())


@BLOCKS.register("mlp")
class MLPTopDown(TopDownNet):
    """Dense layers around every group: Burda et al.'s 2-layer sizes are hidden=[200, 200], group_hidden=[100, 100].

    Bottom-up: x -> hidden -> f_1 -> group_hidden -> f_2 ... (one stack per group). Top-down:
    s_l = stack(z_{l+1}, s_{l+1}) with group_hidden widths, and below the bottom group the decoder,
    stack(z_1, s_1) with the mirrored `hidden` widths: the state s_1 is a skip connection that hands
    the upper groups' information to the decoder directly, not only through z_1.
    """

    def __init__(self, shape: Shape, cfg: ModelConfig, channels_out: int) -> None:
        super().__init__()
        c, h, w = shape
        dims = list(cfg.groups)  # top first
        n = len(dims)
        act = cfg.activation
        decoder_hidden = cfg.decoder_hidden if cfg.decoder_hidden is not None else cfg.hidden[::-1]
        ups: list[nn.Module] = [_stack([c * h * w, *cfg.hidden], act)]  # bottom first
        ups += [_stack([cfg.group_hidden[-1] if i else cfg.hidden[-1], *cfg.group_hidden], act) for i in range(n - 1)]
        self.up = nn.ModuleList(ups[::-1])  # applied bottom first, stored top first
        feature = [cfg.group_hidden[-1]] * (n - 1) + [cfg.hidden[-1]]  # width of f_l, top first
        state = [0] + [cfg.group_hidden[-1]] * (n - 1)  # width of s before group l, top first
        self.posterior = nn.ModuleList(nn.Linear(state[i] + feature[i], 2 * dims[i]) for i in range(n))
        self.prior = nn.ModuleList(nn.Linear(state[i], 2 * dims[i]) for i in range(1, n))
        merges = [_stack([dims[i] + state[i], *cfg.group_hidden], act) for i in range(n - 1)]
        merges.append(_stack([dims[-1] + state[-1], *decoder_hidden], act))
        self.merges = nn.ModuleList(merges)
        self.out = nn.Linear(decoder_hidden[-1], channels_out * h * w)
        self.out_shape = (channels_out, h, w)
        self.group_dims = tuple(dims)

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        f = x.flatten(1)
        features = []
        for up in reversed(self.up):  # bottom group's features first
            f = up(f)
            features.append(f)
        return features[::-1]

    def initial_state(self, n: int, like: Tensor) -> Tensor | None:
        return None

    def prior_params(self, level: int, s: Tensor) -> Tensor:
        return self.prior[level - 1](s)

    def posterior_params(self, level: int, s: Tensor | None, feature: Tensor) -> Tensor:
        return self.posterior[level](feature if s is None else torch.cat([s, feature], dim=-1))

    def merge(self, level: int, s: Tensor | None, z: Tensor) -> Tensor:
        return self.merges[level](z if s is None else torch.cat([z, s], dim=-1))

    def output(self, s: Tensor) -> Tensor:
        return self.out(s).view(-1, *self.out_shape)  # (N, K*C, H, W)


@BLOCKS.register("resconv")
class ResConvTopDown(TopDownNet):
    """Residual convolutions over a resolution pyramid, groups placed at `group_scales` (VDVAE/NVAE-style).

    Bottom-up: a 3x3 stem, then per resolution `res_blocks` residual blocks (features recorded)
    and a 2x average pool. Top-down: a learned constant state at the coarsest group's resolution;
    per group, 2x nearest upsampling with residual blocks when it sits finer than the last, 3x3
    heads for the prior (from s) and posterior (from s and the bottom-up feature), and the merge
    s <- ResBlock(s + conv1x1(z)). After the bottom group: upsampling back to H x W and a 1x1
    output convolution.
    """

    def __init__(self, shape: Shape, cfg: ModelConfig, channels_out: int) -> None:
        super().__init__()
        c, h, w = shape
        top = max(cfg.group_scales)
        if h % top or w % top:
            raise ConfigError(f"model.group_scales reach 1/{top}: the image's {h}x{w} must be divisible by {top}")
        levels = int(math.log2(top)) + 1  # resolutions H / 2^j, j = 0 .. levels - 1
        width, act, r = cfg.width, cfg.activation, cfg.res_blocks
        scale = 1 / math.sqrt(max(1, 2 * r * levels + len(cfg.groups)))
        self.stem = nn.Conv2d(c, width, 3, padding=1)
        self.up = nn.ModuleList(res_stack(r, width, act, scale) for _ in range(levels))
        self.down = nn.ModuleList(res_stack(r, width, act, scale) for _ in range(levels))  # top-down, per level
        self.level = [int(math.log2(f)) for f in cfg.group_scales]  # per group, top first
        self.state = nn.Parameter(torch.zeros(1, width, h // top, w // top))
        chans = list(cfg.groups)
        self.prior = nn.ModuleList(nn.Conv2d(width, 2 * ch, 3, padding=1) for ch in chans)
        self.posterior = nn.ModuleList(nn.Conv2d(2 * width, 2 * ch, 3, padding=1) for ch in chans)
        self.z_in = nn.ModuleList(nn.Conv2d(ch, width, 1) for ch in chans)
        self.merges = nn.ModuleList(ResBlock(width, act, scale) for _ in chans)
        self.out = nn.Sequential(ACTIVATIONS[act](), nn.Conv2d(width, channels_out, 1))
        self.act = act
        self.latent_shapes = [(ch, h >> lv, w >> lv) for ch, lv in zip(chans, self.level, strict=True)]
        self.group_dims = tuple(math.prod(s) for s in self.latent_shapes)
        self.levels = levels
        self.width_px = w

    def bottom_up(self, x: Tensor) -> list[Tensor]:
        f = self.stem(x)
        by_level = []
        for j, blocks in enumerate(self.up):
            if j:
                f = F.avg_pool2d(f, 2)
            f = blocks(f)
            by_level.append(f)
        return [by_level[lv] for lv in self.level]

    def initial_state(self, n: int, like: Tensor) -> Tensor | None:
        return self.state.expand(n, -1, -1, -1)

    def _level_of(self, s: Tensor) -> int:
        return int(math.log2(self.width_px // s.shape[-1]))

    def _to(self, level: int, s: Tensor) -> Tensor:
        current, target = self._level_of(s), self.level[level]
        while current > target:
            current -= 1
            s = self.down[current](F.interpolate(s, scale_factor=2.0, mode="nearest"))
        return s

    def prior_params(self, level: int, s: Tensor) -> Tensor:
        s = self._to(level, s)
        return self.prior[level](s).flatten(1)  # (N, 2*C_l, h, w) -> (N, 2 D_l): mean channels, then logvar

    def posterior_params(self, level: int, s: Tensor | None, feature: Tensor) -> Tensor:
        assert s is not None
        s = self._to(level, s)
        return self.posterior[level](torch.cat([s, feature], dim=1)).flatten(1)

    def merge(self, level: int, s: Tensor | None, z: Tensor) -> Tensor:
        assert s is not None
        s = self._to(level, s)
        return self.merges[level](s + self.z_in[level](z.view(-1, *self.latent_shapes[level])))

    def output(self, s: Tensor) -> Tensor:
        current = self._level_of(s)
        while current > 0:
            current -= 1
            s = self.down[current](F.interpolate(s, scale_factor=2.0, mode="nearest"))
        return self.out(s)

"""dSprites' factor grid, drawn procedurally (`dsprites-like`), and the original file when a user has it (`dsprites`).

dSprites (Matthey et al. 2017, deepmind/dsprites-dataset) is every combination of 6 factors, the last varying
fastest: color (1 value), shape (square, ellipse, heart), scale (6 values in [0.5, 1]), orientation (40 values over
[0, 2 pi], both ends included), posX and posY (32 values each in [0, 1]): 737,280 binary 64x64 images, with
`latents_values` and `latents_classes` arrays (737,280 x 6) in that order. `dsprites-like` keeps that grid, its
order and those arrays exactly, and draws each image on demand from its factors (nothing is stored: the grid as
bytes would be 3 GB). What differs from the original's pixels, so every number on it is named dSprites-like:

- each shape is drawn from its own formula, rasterized at pixel centres without anti-aliasing: a square of side
  16 s px, an ellipse with semi-axes 10 s and 5 s px, and the heart curve (x^2 + y^2 - 1)^3 <= x^2 y^3 scaled to
  about 18 s px (the original's heart outline is its own bitmap);
- the shape's centre is at 10 + 44 pos px on each axis (posX across, posY down), rotated by the orientation
  counter-clockwise about it;
- so edges, sizes and positions differ from the original's by a pixel or two.

Splits: `train` is the whole grid; `test` a fixed-seed draw of 10,000 grid images (dSprites has no held-out split:
this one measures fit, not generalization). Labels are the shape (3 classes); `Dataset.factors` holds the five
varying factors' classes (shape, scale, orientation, posX, posY) for the disentanglement metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaekit.errors import DataError

NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
SIZES = (1, 3, 6, 40, 32, 32)
N_IMAGES = math.prod(SIZES)  # 737,280
BASES = tuple(math.prod(SIZES[i + 1 :]) for i in range(len(SIZES)))  # (737280, 245760, 40960, 1024, 32, 1)
FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
TEST_SIZE, TEST_SEED = 10_000, 20170101
SIDE = 64


def factor_values() -> list[Tensor]:
    """The values of each factor, in dSprites' order (float64)."""
    return [
        torch.ones(1, dtype=torch.float64),
        torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
        torch.linspace(0.5, 1.0, 6, dtype=torch.float64),
        torch.linspace(0.0, 2 * math.pi, 40, dtype=torch.float64),
        torch.linspace(0.0, 1.0, 32, dtype=torch.float64),
        torch.linspace(0.0, 1.0, 32, dtype=torch.float64),
    ]


def latents_classes(index: Tensor) -> Tensor:
    """(B, 6) int64 factor classes of grid images `index` (B,): the mixed-radix digits of the index."""
    index = index.long()
    return torch.stack([(index // base) % size for base, size in zip(BASES, SIZES, strict=True)], dim=1)


def latents_values(classes: Tensor) -> Tensor:
    """(B, 6) float64 factor values of classes (B, 6)."""
    return torch.stack([values[classes[:, k]] for k, values in enumerate(factor_values())], dim=1)


def grid_index(classes: Tensor) -> Tensor:
    """(B,) the grid index of factor classes (B, 6): the inverse of `latents_classes`."""
    return (classes.long() * torch.tensor(BASES)).sum(1)


WINDOW = 28  # pixels drawn around each centre: every shape, at every angle, lies within 14 px of it


def render(classes: Tensor) -> Tensor:
    """(B, 1, 64, 64) uint8 in {0, 255}: the images of factor classes (B, 6) (the module's docstring). Each shape is
    evaluated on a window around its centre only, then placed on the canvas."""
    values = latents_values(classes).float()
    scale, angle = values[:, 2, None, None], values[:, 3, None, None]
    centre = 10.0 + 44.0 * values[:, 4:6]  # (B, 2) x, y in pixels
    origin = centre.floor().long() - WINDOW // 2  # (B, 2) the window's first column and row
    offsets = torch.arange(WINDOW)
    cols, rows = origin[:, 0, None] + offsets, origin[:, 1, None] + offsets  # (B, W) each
    dx = (cols.float() + 0.5 - centre[:, 0, None])[:, None, :]  # (B, 1, W) across
    dy = -(rows.float() + 0.5 - centre[:, 1, None])[:, :, None]  # (B, W, 1) up
    inside = _inside(classes[:, 1, None, None], dx, dy, scale, angle)  # (B, W, W)
    on_canvas = ((rows >= 0) & (rows < SIDE))[:, :, None] & ((cols >= 0) & (cols < SIDE))[:, None, :]
    flat = (rows.clamp(0, SIDE - 1)[:, :, None] * SIDE + cols.clamp(0, SIDE - 1)[:, None, :]).flatten(1)
    canvas = torch.zeros(classes.shape[0], SIDE * SIDE, dtype=torch.uint8)
    canvas.scatter_reduce_(1, flat, (inside & on_canvas).flatten(1).to(torch.uint8), reduce="amax")
    return (canvas * 255).view(-1, 1, SIDE, SIDE)


def _inside(shape: Tensor, dx: Tensor, dy: Tensor, scale: Tensor, angle: Tensor) -> Tensor:
    """Whether each pixel (dx, dy from the centre, y up) lies in the shape, rotated by `angle` and scaled."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # the pixel in the shape's own frame
    square = (u.abs() <= 8.0 * scale) & (v.abs() <= 8.0 * scale)
    ellipse = (u / (10.0 * scale)) ** 2 + (v / (5.0 * scale)) ** 2 <= 1.0
    hx, hy = u / (8.0 * scale), v / (8.0 * scale) + 0.1  # the heart curve spans about [-1.14, 1.14] x [-1, 1.2]
    heart = (hx**2 + hy**2 - 1.0) ** 3 - hx**2 * hy**3 <= 0.0
    return torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))


class SpriteGrid:
    """The dSprites grid's images (N, 1, 64, 64) uint8, drawn when indexed; `index` picks grid images (a split)."""

    lazy = True  # not a tensor: the feed gathers it on the host

    def __init__(self, index: Tensor | None = None) -> None:
        self.index = index if index is not None else torch.arange(N_IMAGES)
        self.shape = torch.Size((len(self.index), 1, SIDE, SIDE))
        self.dtype = torch.uint8

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: Tensor | int) -> Tensor:
        picked = self.index[torch.as_tensor(index).reshape(-1)]
        return render(latents_classes(picked))

    def take(self, index: Tensor) -> SpriteGrid:
        """A lazy subset (a split, a long-tailed set) without drawing it."""
        return SpriteGrid(self.index[index])

    def factors(self) -> Tensor:
        """(N, 5) int64 classes of the varying factors (color, constant, left out)."""
        return latents_classes(self.index)[:, 1:]


def test_index() -> Tensor:
    """The grid images of the test split: a fixed-seed draw of 10,000."""
    return torch.randperm(N_IMAGES, generator=torch.Generator().manual_seed(TEST_SEED))[:TEST_SIZE].sort().values


def load_like(split: str, data_dir: str | Path | None = None) -> tuple[SpriteGrid, Tensor, Tensor]:
    """dsprites-like's (images, labels = shape, factors) for `split` (train: the grid; test: 10,000 of it)."""
    grid = SpriteGrid(test_index() if split == "test" else None)
    factors = grid.factors()
    return grid, factors[:, 0].clone(), factors


def load_original(path: Path, split: str) -> tuple[Tensor, Tensor, Tensor]:
    """The original `dsprites_ndarray_*.npz` (keys imgs, latents_classes; metadata is not read): (images, labels =
    shape, factors) of `split`, the images 0/255 uint8 (N, 1, 64, 64)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            imgs, classes = archive["imgs"], archive["latents_classes"]
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{str(path)!r} is not a dSprites .npz with imgs and latents_classes ({exc})") from None
    if imgs.ndim != 3 or classes.shape != (imgs.shape[0], 6):
        raise DataError(f"{str(path)!r}: imgs {imgs.shape} and latents_classes {classes.shape} do not match dSprites'")
    images = torch.from_numpy((imgs.astype(np.uint8) * 255)[:, None])
    factors = torch.from_numpy(classes.astype(np.int64))[:, 1:]
    if split == "test":
        index = test_index() if imgs.shape[0] == N_IMAGES else torch.arange(min(TEST_SIZE, imgs.shape[0]))
        images, factors = images[index], factors[index]
    return images, factors[:, 0].clone(), factors

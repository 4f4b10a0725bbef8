"""dsprites-like: dSprites' factor grid and order, drawn on demand, and the original file's loader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.data import dsprites as ds
from vaekit.data.datasets import load_dataset
from vaekit.errors import DataError

# deepmind/dsprites-dataset's metadata: latents_sizes, latents_names, and latents_bases as its README computes them
PUBLISHED_SIZES = [1, 3, 6, 40, 32, 32]
PUBLISHED_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")


def test_the_factor_grid_and_order_are_dsprites_published_ones() -> None:
    sizes = np.array(PUBLISHED_SIZES)
    bases = np.concatenate((sizes[::-1].cumprod()[::-1][1:], np.array([1])))  # the README's latents_bases
    assert tuple(PUBLISHED_SIZES) == ds.SIZES and ds.NAMES == PUBLISHED_NAMES and ds.N_IMAGES == 737_280
    assert list(ds.BASES[1:]) == bases.tolist()[1:] and ds.BASES[0] == 737_280
    values = ds.factor_values()
    torch.testing.assert_close(values[2], torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9, 1.0], dtype=torch.float64))
    assert values[3][0] == 0 and values[3][-1].item() == pytest.approx(2 * math.pi) and len(values[3]) == 40
    assert values[4][-1] == 1 and values[5][1].item() == pytest.approx(1 / 31) and values[1].tolist() == [1, 2, 3]
    # posY fastest: image 1 differs from image 0 in posY alone, image 32 in posX, 1024 in orientation, ...
    for base, factor in zip(bases.tolist()[1:], range(1, 6), strict=True):
        classes = ds.latents_classes(torch.tensor([base]))[0].tolist()
        assert classes == [1 if k == factor else 0 for k in range(6)]
    index = torch.randint(0, ds.N_IMAGES, (1000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(ds.grid_index(ds.latents_classes(index)), index)
    last = ds.latents_values(ds.latents_classes(torch.tensor([ds.N_IMAGES - 1])))[0]
    torch.testing.assert_close(last, torch.tensor([1.0, 3.0, 1.0, 2 * math.pi, 1.0, 1.0], dtype=torch.float64))


def test_images_are_drawn_whole_and_grow_with_scale() -> None:
    index = torch.randint(0, ds.N_IMAGES, (2000,), generator=torch.Generator().manual_seed(1))
    classes = ds.latents_classes(index)
    images = ds.render(classes)
    assert images.shape == (2000, 1, 64, 64) and set(images.unique().tolist()) == {0, 255}
    assert (images.flatten(1).amax(1) == 255).all()  # no image is empty
    old = ds.WINDOW
    try:
        ds.WINDOW = 64  # the whole canvas: the window never cuts a shape off
        assert torch.equal(ds.render(classes), images)
    finally:
        ds.WINDOW = old
    area = (images > 0).flatten(1).sum(1).float()
    for shape in range(3):
        small = area[(classes[:, 1] == shape) & (classes[:, 2] == 0)].mean()
        large = area[(classes[:, 1] == shape) & (classes[:, 2] == 5)].mean()
        assert large / small == pytest.approx(4.0, rel=0.2)  # scale 1 against 0.5: twice the side, 4x the area


def test_dsprites_like_loads_lazily_with_factors_and_a_test_split() -> None:
    train, test = load_dataset("dsprites-like"), load_dataset("dsprites-like", "test")
    assert len(train) == 737_280 and len(test) == 10_000 and train.shape == (1, 64, 64)
    assert train.factors is not None and train.factors.shape == (737_280, 5)
    assert train.labels is not None and torch.equal(train.labels, train.factors[:, 0])
    part = train.subset(torch.arange(100, 110))
    assert isinstance(part.images, ds.SpriteGrid) and torch.equal(part.factors, train.factors[100:110])  # type: ignore[arg-type]
    torch.testing.assert_close(part.batch(torch.arange(10)), train.batch(torch.arange(100, 110)))
    with pytest.raises(DataError, match="binary already"):
        load_dataset("binarized-dsprites-like")


def test_the_original_file_format_loads_as_dsprites(tmp_path: Path) -> None:
    index = torch.arange(0, ds.N_IMAGES, 7919)[:40]
    classes = ds.latents_classes(index)
    imgs = (ds.render(classes)[:, 0] // 255).numpy().astype(np.uint8)
    np.savez_compressed(tmp_path / ds.FILE, imgs=imgs, latents_classes=classes.numpy(),
                        latents_values=ds.latents_values(classes).numpy())
    data = load_dataset("dsprites", data_dir=tmp_path)
    assert len(data) == 40 and data.factors is not None and torch.equal(data.factors, classes[:, 1:])
    torch.testing.assert_close(data.batch(torch.arange(40)), ds.render(classes).float() / 255)
    with pytest.raises(DataError, match="dsprites not found"):
        load_dataset("dsprites", data_dir=tmp_path / "nowhere")

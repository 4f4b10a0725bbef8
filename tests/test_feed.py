"""The training feed (data/feed.py): every placement gives the host path's batches bit for bit on the CPU,
mid-epoch starts line up, labels follow their images, and training is the same run in every placement.
The CUDA side (uint8 set on the GPU, pinned double buffering on a side stream) runs in tests/test_gpu.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.config import load_config
from vaekit.data.datasets import Dataset, load_dataset
from vaekit.data.feed import Feed, choose_placement
from vaekit.errors import ConfigError, VaekitError
from vaekit.training.loop import train

PLACEMENTS = ("host", "device", "pinned")


def _set(binarize: str = "dynamic", hflip: bool = True, noise: float = 0.1) -> Dataset:
    images = torch.randint(0, 256, (50, 1, 6, 5), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    labels = torch.arange(50) % 7
    return Dataset("made", "train", images, labels, binarize=binarize, hflip=hflip, noise=noise)


def _epoch(feed: Feed, first: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    order = torch.randperm(50, generator=torch.Generator().manual_seed(11))
    torch.manual_seed(5)  # the conversion's draws come from the global generator, as in training
    return list(feed.epoch(order, 8, first, 7))  # 7 steps: the last batch has 2 images


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_every_placement_gives_the_host_batches_bit_for_bit(placement: str) -> None:
    data = _set()
    order = torch.randperm(50, generator=torch.Generator().manual_seed(11))
    torch.manual_seed(5)
    expected = [data.batch(order[b * 8 : (b + 1) * 8]) for b in range(7)]  # the loop's path before the feed
    got = _epoch(Feed(data, torch.device("cpu"), placement))
    assert [len(i) for i, _, _ in got] == [8] * 6 + [2]
    for (index, x, y), want, b in zip(got, expected, range(7), strict=True):
        assert torch.equal(index, order[b * 8 : (b + 1) * 8])
        assert x.dtype == torch.float32 and torch.equal(x, want), (placement, b)
        assert y is not None and torch.equal(y, data.labels[index])  # type: ignore[index]
    assert {float(v) for v in torch.cat([x.flatten() for _, x, _ in got]).unique()} <= {0.0, 1.0}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_mid_epoch_start_continues_the_same_batches(placement: str) -> None:
    # Resume after step 3 of an epoch: the order is the same and batches 3.. are the same images.
    data = _set(binarize="none", hflip=False, noise=0.0)  # no draws: the images alone must line up
    cpu = torch.device("cpu")
    full, tail = _epoch(Feed(data, cpu, placement)), _epoch(Feed(data, cpu, placement), 3)
    assert len(tail) == 4
    for (i, x, y), (j, x2, y2) in zip(full[3:], tail, strict=True):
        assert torch.equal(i, j) and torch.equal(x, x2) and y is not None and y2 is not None and torch.equal(y, y2)


def test_unlabelled_sets_give_no_labels() -> None:
    data = replace(_set(), labels=None)
    assert all(y is None for _, _, y in _epoch(Feed(data, torch.device("cpu"), "device")))
    assert all(y is None for _, _, y in _epoch(Feed(_set(), torch.device("cpu"), "host", labels=False)))


def test_auto_placement_and_its_errors(tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    assert choose_placement(_set(), cpu) == "host"
    assert choose_placement(_set(), cpu, "device") == "device"
    with pytest.raises(VaekitError, match="not one of auto, device, pinned, host"):
        choose_placement(_set(), cpu, "gpu")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    lazy = load_dataset(str(folder), "all", lazy=True)
    assert choose_placement(lazy, cpu) == "host"
    with pytest.raises(VaekitError, match="lazily read folder"):
        choose_placement(lazy, cpu, "device")
    with pytest.raises(ConfigError, match="train.data_placement"):
        load_config(None, ["train.data_placement=gpu"])


def test_training_is_the_same_run_in_every_placement(tmp_path: Path) -> None:
    path = tmp_path / "tiny.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.random((96, 8, 8)) * 255).astype(np.uint8))
    weights = {}
    for placement in PLACEMENTS:
        cfg = load_config(None, [f"data.name={path}", "data.val_size=0", "model.hidden=[16]", "model.latent_dim=3",
                                 "train.batch_size=32", "train.steps=9", "train.tensorboard=false",
                                 "guard.ema_decay=0.9", "data.hflip=true", f"train.data_placement={placement}",
                                 "train.device=cpu"])  # on a GPU the draws come from its generator (test_gpu.py)
        weights[placement] = train(cfg, tmp_path / placement, quiet=True).model.state_dict()
    for placement in ("device", "pinned"):
        for key, value in weights["host"].items():
            assert torch.equal(weights[placement][key], value), (placement, key)

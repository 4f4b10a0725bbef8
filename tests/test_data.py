"""Data loaders on files the tests create, plus the real MNIST copy the repo carries."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from conftest import REPO, needs_fashion, write_idx
from vaekit.data import idx
from vaekit.data.datasets import array_to_images, load_dataset
from vaekit.errors import DataError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_from_the_repo_copy() -> None:
    train = load_dataset("mnist", "train", data_dir=REPO / "data" / "mnist")
    test = load_dataset("mnist", "test", data_dir=REPO / "data" / "mnist")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels is not None and test.labels is not None
    assert torch.bincount(train.labels).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == MNIST_TEST_COUNTS


def test_lookup_order_prefers_vaekit_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mnist").symlink_to(REPO / "data" / "mnist")
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    assert idx.find_folder(idx.MNIST, None) == tmp_path / "mnist"
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "empty"))
    assert idx.find_folder(idx.MNIST, None) == REPO / "data" / "mnist"


def test_missing_builtin_offline_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"fashion-mnist not found; put train-images-idx3-ubyte.gz.* in "):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def test_checksum_mismatch_is_reported(tmp_path: Path) -> None:
    for pair in idx.MNIST.files.values():
        for file in pair:
            (tmp_path / file.name).write_bytes((REPO / "data" / "mnist" / file.name).read_bytes())
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, dtype=np.uint8))
    with pytest.raises(DataError, match="fails its checksum"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_idx_parsing_and_corruption(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(idx.read_idx(write_idx(tmp_path / "a.gz", array)), array)
    np.testing.assert_array_equal(idx.read_idx(write_idx(tmp_path / "a.idx", array, compress=False)), array)
    good = (tmp_path / "a.gz").read_bytes()
    (tmp_path / "trunc.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="truncated or not gzip"):
        idx.read_idx(tmp_path / "trunc.gz")
    raw = gzip.decompress(good)
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DataError, match="header says"):
        idx.read_idx(tmp_path / "short.gz")
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    with pytest.raises(DataError, match="bad magic"):
        idx.read_idx(tmp_path / "magic.gz")
    with pytest.raises(DataError, match="checksum"):
        idx.read_idx(tmp_path / "a.gz", content_md5="0" * 32)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=64))
def test_parse_idx_never_crashes_on_garbage(blob: bytes) -> None:
    try:
        out = idx.parse_idx(blob, "fuzz")
    except DataError:
        return
    assert isinstance(out, np.ndarray)


def test_binarized_test_split_is_one_fixed_draw_and_train_is_dynamic() -> None:
    a = load_dataset("binarized-mnist", "test")
    b = load_dataset("binarized-mnist", "test")
    assert torch.equal(a.images, b.images)
    assert set(a.images.unique().tolist()) == {0, 255}
    train = load_dataset("binarized-mnist", "train")
    index = torch.arange(256)
    x1, x2 = train.batch(index), train.batch(index)
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(x1, x2)  # resampled on every draw
    # The draw is unbiased: mean of binarized pixels matches mean grey level (CI over 256 * 784 pixels).
    grey = train.images[index].float().div(255)
    assert abs(x1.mean().item() - grey.mean().item()) < 4 * (grey.mean().item() / (256 * 784)) ** 0.5 + 1e-3


def test_validation_split_is_a_fixed_partition() -> None:
    train = load_dataset("mnist", "train", val_size=5000)
    val = load_dataset("mnist", "val", val_size=5000)
    assert len(train) == 55000 and len(val) == 5000
    assert train.labels is not None and val.labels is not None
    assert int(train.labels.sum() + val.labels.sum()) == int(load_dataset("mnist").labels.sum())  # type: ignore[union-attr]
    with pytest.raises(DataError, match="val_size"):
        load_dataset("mnist", "val")


def test_npy_npz_and_image_folder(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    np.savez(tmp_path / "x.npz", x=images, y=np.arange(5))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i}.png")
    for source in ("x.npy", "x.npz", "imgs"):
        data = load_dataset(str(tmp_path / source))
        assert data.images.shape == (5, 1, 8, 8)
        np.testing.assert_array_equal(data.images[:, 0].numpy(), images)
    assert load_dataset(str(tmp_path / "x.npz")).labels.tolist() == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    rgb = np.random.default_rng(1).random((3, 4, 4, 3)).astype(np.float32)  # NHWC floats in [0, 1]
    np.save(tmp_path / "rgb.npy", rgb)
    assert load_dataset(str(tmp_path / "rgb.npy")).images.shape == (3, 3, 4, 4)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: np.save(p / "d.npy", np.full((2, 4, 4), np.nan, dtype=np.float32)), "NaN"),
        (lambda p: np.save(p / "d.npy", np.zeros((2, 4), dtype=np.uint8)), "is not images"),
        (lambda p: np.save(p / "d.npy", np.zeros((0, 4, 4), dtype=np.uint8)), "holds no images"),
        (lambda p: np.save(p / "d.npy", np.full((2, 4, 4), 300.0)), "use uint8 or floats"),
        (lambda p: (p / "d.npy").write_bytes(b"not numpy"), "not a readable .npy"),
        (lambda p: np.save(p / "d.npy", np.array(["a", "b"])), "not numeric"),
    ],
)
def test_bad_arrays(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    make(tmp_path)
    with pytest.raises(DataError, match=fragment):
        load_dataset(str(tmp_path / "d.npy"))


def test_bad_folders_and_names(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no PNG or JPEG"):
        load_dataset(str(tmp_path / "empty"))
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((4, 4), 40000, dtype=np.uint16)).save(deep / "a.png")
    with pytest.raises(DataError, match="not 8-bit"):
        load_dataset(str(deep))
    with pytest.raises(DataError, match="unknown data set 'mnistt'"):
        load_dataset("mnistt")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("mnist", "dev")
    np.savez(tmp_path / "lab.npz", x=np.zeros((3, 4, 4), dtype=np.uint8), y=np.arange(2))
    with pytest.raises(DataError, match="labels have shape"):
        load_dataset(str(tmp_path / "lab.npz"))


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6))))
def test_uint8_arrays_round_trip(array: np.ndarray) -> None:
    images = array_to_images(array, "prop")
    assert images.shape == (array.shape[0], 1, *array.shape[1:])
    np.testing.assert_array_equal(images[:, 0].numpy(), array)


@needs_fashion
def test_fashion_mnist_loads_with_balanced_labels() -> None:
    data = load_dataset("fashion-mnist", "test")
    assert data.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.labels).tolist() == [1000] * 10  # type: ignore[arg-type]

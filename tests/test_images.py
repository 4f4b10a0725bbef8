"""Colour and larger images: the CIFAR-10 readers, image-folder layouts and policies, held-out user data, flips."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA
from vaekit.data import cifar
from vaekit.data.datasets import has_split, load_dataset
from vaekit.errors import DataError

JPEG_TAR = SHARED_DATA / "cifar10-jpeg" / cifar.JPEG_FILE
needs_cifar_jpeg = pytest.mark.skipif(
    not JPEG_TAR.is_file(), reason="cifar10-jpeg is not on disk (needs ../shared/data/cifar10-jpeg beside the checkout)"
)


def _batch(rng: np.random.Generator, n: int) -> bytes:
    entry = {b"batch_label": b"made by the tests", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    return pickle.dumps(entry, protocol=2)


def make_cifar_tarball(folder: Path, n: int = 7, evil: bool = False) -> Path:
    """A cifar-10-python.tar.gz in the original's layout: cifar-10-batches-py/data_batch_1..5, test_batch."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cifar.CIFAR10_FILE
    with tarfile.open(path, "w:gz") as tar:
        for name in [*cifar.BATCHES["train"], *cifar.BATCHES["test"]]:
            payload = _batch(rng, n)
            if evil and name == "test_batch":
                payload = pickle.dumps(os.system, protocol=2)  # a global that is not numpy's: must be refused
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_cifar10_reads_the_python_tarball_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_cifar_tarball(tmp_path / "cifar10")
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(path.read_bytes()).hexdigest())
    train = load_dataset("cifar10", "train", data_dir=tmp_path / "cifar10")
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "cifar10")
    assert train.images.shape == (35, 3, 32, 32) and test.images.shape == (7, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels is not None and int(train.labels.max()) <= 9
    # the first row of data_batch_1 is R, G, B planes of 32 x 32, row-major
    with tarfile.open(path) as tar:
        f = tar.extractfile("cifar-10-batches-py/data_batch_1")
        assert f is not None
        first = pickle.loads(f.read())[b"data"][0]
    assert torch.equal(train.images[0, 1, 0], torch.from_numpy(first[1024:1056]))


def test_cifar10_wrong_md5_truncated_and_foreign_pickles_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_cifar_tarball(tmp_path / "a")
    with pytest.raises(DataError, match=r"fails its checksum \(MD5 .*should be c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / cifar.CIFAR10_FILE).write_bytes(path.read_bytes()[:3000])
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(path.read_bytes()[:3000]).hexdigest())
    with pytest.raises(DataError, match="is truncated or not the CIFAR-10 python tarball"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "b")
    evil = make_cifar_tarball(tmp_path / "c", evil=True)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(evil.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"refers to (posix|os|nt)\.system, which a CIFAR-10 batch never does"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "c")


def test_cifar10_offline_says_where_to_put_the_tarball(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cifar10 not found; put cifar-10-python.tar.gz in "):
        load_dataset("cifar10", "train", data_dir=tmp_path)


@needs_cifar_jpeg
def test_cifar10_jpeg_decodes_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    test = load_dataset("cifar10-jpeg", "test")
    assert test.images.shape == (10000, 3, 32, 32) and test.labels is not None
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    cached = list((tmp_path / "vaekit" / "cifar10-jpeg").glob("decoded-test-*.npz"))
    assert len(cached) == 1
    again = load_dataset("cifar10-jpeg", "test")
    assert torch.equal(again.images, test.images)
    import PIL

    if PIL.__version__.startswith("13."):  # shared/data/README.md: the MD5 of Pillow 13's decoding, (N, 32, 32, 3)
        digest = hashlib.md5(test.images.permute(0, 2, 3, 1).contiguous().numpy().tobytes()).hexdigest()
        assert digest == "a085fc7e64a3745bfb901013e5654098"


def _png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_class_subfolders_give_labels_nested_files_included(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "cats" / f"{i}.png", (8, 8), seed=i)
    _png(tmp_path / "dogs" / "deeper" / "a.jpg", (8, 8), seed=9)
    data = load_dataset(str(tmp_path), "all")
    assert data.images.shape == (4, 3, 8, 8) and data.labels is not None
    assert data.labels.tolist() == [0, 0, 0, 1]  # classes in sorted name order


def test_mixed_sizes_are_refused_naming_files_or_resized_and_cropped(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (8, 8))
    _png(tmp_path / "b.png", (12, 10))
    with pytest.raises(DataError, match=r"differ in size .*b.png' is 10x12\); set data.image_size"):
        load_dataset(str(tmp_path), "all")
    data = load_dataset(str(tmp_path), "all", image_size=6)
    assert data.images.shape == (2, 3, 6, 6)


def test_mixed_modes_colour_wins_unless_channels_say_otherwise(tmp_path: Path) -> None:
    _png(tmp_path / "grey.png", (8, 8), mode="L")
    _png(tmp_path / "colour.png", (8, 8))
    assert load_dataset(str(tmp_path), "all").images.shape == (2, 3, 8, 8)
    grey = load_dataset(str(tmp_path), "all", channels=1)
    assert grey.images.shape == (2, 1, 8, 8)


def test_a_corrupt_jpeg_names_itself(tmp_path: Path) -> None:
    _png(tmp_path / "good.png", (8, 8))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"bad.jpg' is not a readable image"):
        load_dataset(str(tmp_path), "all")


def test_split_folders_have_their_own_test_split(tmp_path: Path) -> None:
    for split, n in (("train", 30), ("test", 5)):
        for i in range(n):
            _png(tmp_path / split / ("a" if i % 2 else "b") / f"{i}.png", (8, 8), seed=i)
    assert has_split(str(tmp_path), "test")
    train = load_dataset(str(tmp_path), "train", val_size=None)
    test = load_dataset(str(tmp_path), "test")
    assert len(train) == 30 and len(test) == 5 and train.val_size == 0  # a test split: nothing carved by default


def test_user_data_is_held_out_from_by_default(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8))
    train = load_dataset(str(tmp_path / "d.npy"), "train", val_size=None)
    val = load_dataset(str(tmp_path / "d.npy"), "val", val_size=None)
    assert (len(train), len(val), train.val_size) == (190, 10, 10)  # 5%, a fixed-seed draw
    assert torch.equal(val.images, load_dataset(str(tmp_path / "d.npy"), "val", val_size=None).images)
    assert len(load_dataset(str(tmp_path / "d.npy"), "all")) == 200


def test_hflip_flips_training_batches_only_and_is_a_function_of_the_rng(tmp_path: Path) -> None:
    from dataclasses import replace

    data = replace(load_dataset("mnist", "test").subset(torch.arange(64)), hflip=True)
    a = data.batch(torch.arange(64), torch.Generator().manual_seed(0))
    b = data.batch(torch.arange(64), torch.Generator().manual_seed(0))
    plain = replace(data, hflip=False).batch(torch.arange(64))
    flipped = [(a[i] == plain[i].flip(-1)).all().item() and not (a[i] == plain[i]).all().item() for i in range(64)]
    assert torch.equal(a, b) and 16 < sum(flipped) < 48
    assert all(flipped[i] or torch.equal(a[i], plain[i]) for i in range(64))


def test_eval_scores_a_user_folder_whole_and_a_run_on_its_validation_split(tmp_path: Path) -> None:
    for i in range(60):
        _png(tmp_path / "photos" / f"{i:02d}.png", (8, 8), seed=i)
    for i in range(7):
        _png(tmp_path / "other" / f"{i}.png", (8, 8), seed=100 + i)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vaekit"]
    trained = subprocess.run([*cmd, "train", "--data", str(tmp_path / "photos"), "--run-dir", str(run), "--steps",
                              "5", "--set", "model.hidden=[16]", "--set", "model.likelihood=discretized-logistic",
                              "--quiet", "--json"], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["test"]["split"] == "val"  # the held-out score of user data
    own = subprocess.run([*cmd, "eval", str(run), "--json"], capture_output=True, text=True, timeout=300)
    other = subprocess.run([*cmd, "eval", str(run), "--data", str(tmp_path / "other"), "--json"],
                           capture_output=True, text=True, timeout=300)
    assert own.returncode == 0 and other.returncode == 0, (own.stderr, other.stderr)
    assert (json.loads(own.stdout)["split"], json.loads(own.stdout)["n"]) == ("val", 3)
    assert (json.loads(other.stdout)["split"], json.loads(other.stdout)["n"]) == ("all", 7)


def _rgb_pixel(k: int = 3, seed: int = 0):  # type: ignore[no-untyped-def]
    from vaekit.models.likelihoods import RGBMixturePixels

    g = torch.Generator().manual_seed(seed)
    return RGBMixturePixels(
        logits=torch.randn(k, 1, 1, generator=g),
        loc=0.6 * torch.randn(k, 3, 1, 1, generator=g),
        log_scale=-1.5 + 0.5 * torch.randn(k, 3, 1, 1, generator=g),
        coeffs=torch.tanh(torch.randn(k, 3, 1, 1, generator=g)),
    )


def _all_pixels(r: int) -> torch.Tensor:
    """Every (G, B) for red level r: (65536, 3, 1, 1) in [0, 1]."""
    gb = torch.cartesian_prod(torch.arange(256), torch.arange(256)).float()
    return torch.cat([torch.full((65536, 1), float(r)), gb], dim=1).div(255).view(-1, 3, 1, 1)


@torch.no_grad()
def test_rgb_mixture_sums_to_one_over_256_cubed_values_and_samples_have_its_mean() -> None:
    # Every one of the 256^3 values of one pixel, enumerated: the probabilities sum to 1, and their
    # expectation is what 40,000 samples average to, within 4 standard errors.
    px = _rgb_pixel(k=2, seed=1)
    total, exact = torch.zeros((), dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for r in range(256):
        x = _all_pixels(r)
        p = px.log_prob(x).double().exp()
        total += p.sum()
        exact += (p[:, None] * x.view(-1, 3).double()).sum(0)
    assert abs(total.item() - 1) < 1e-4, total
    n = 40000
    expanded = type(px)(*(t.expand(n, *t.shape) for t in (px.logits, px.loc, px.log_scale, px.coeffs)))
    draws = expanded.sample(torch.Generator().manual_seed(0)).view(n, 3).double()
    se = draws.std(0) / n**0.5
    assert ((draws.mean(0) - exact).abs() < 4 * se).all(), (draws.mean(0), exact, se)


def test_rgb_mixture_coding_probabilities_multiply_to_the_pixel_probability() -> None:
    px = _rgb_pixel(seed=2)
    x = torch.tensor([[[[40.0]], [[200.0]], [[128.0]]]]) / 255  # (1, 3, 1, 1)
    levels = (x * 255).round().long().view(3)
    chained = sum(torch.log(px.channel_bin_probs(x, c)[..., levels[c]]).sum() for c in range(3))
    torch.testing.assert_close(chained, px.log_prob(x)[0], rtol=1e-4, atol=1e-4)
    for c in range(3):
        torch.testing.assert_close(px.channel_bin_probs(x, c).sum(-1), torch.ones(1, 1, 1))


def _colour_model(tmp_path: Path):  # type: ignore[no-untyped-def]
    from vaekit.config import load_config
    from vaekit.models.vae import build_model

    torch.manual_seed(0)
    cfg = load_config("cifar", ["model.input_shape=[3, 8, 8]", "model.hidden=[8]", "model.res_blocks=1",
                                "model.latent_dim=4", "model.mixture_components=2"])
    model = build_model(cfg.model)
    model.save_pretrained(tmp_path / "m")
    return model


def test_colour_png_folder_and_nhwc_array_compress_bit_exactly(tmp_path: Path) -> None:
    from vaekit.apps.compress.files import compress_file, decompress_file

    _colour_model(tmp_path)
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "pngs").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "pngs" / f"c{i}.png")
    np.save(tmp_path / "a.npy", images)
    for source, restored in (("pngs", "pngs-back"), ("a.npy", "b.npy")):
        stats = compress_file(tmp_path / "m", tmp_path / source, tmp_path / f"{source}.vkz", verify=True)
        assert stats["verified"] and stats["n"] == 3
        decompress_file(tmp_path / f"{source}.vkz", tmp_path / restored)
    for i, im in enumerate(images):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "pngs-back" / f"c{i}.png")), im)
    back = np.load(tmp_path / "b.npy")
    assert back.shape == images.shape and back.dtype == np.uint8 and np.array_equal(back, images)


def test_colour_code_length_tracks_the_negative_elbo(tmp_path: Path) -> None:
    from vaekit.apps.compress import bbans

    model = _colour_model(tmp_path)
    images = np.random.default_rng(6).integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)
    words = bbans.encode_images(model, images, bbans.KIND_8BIT)
    with torch.no_grad():
        x = torch.from_numpy(images).float() / 255
        nats = model.elbo(x, n_samples=64).neg_elbo.mean().item()
    bits = (words.size - bbans.seed_words(model)) * 32 / len(images)
    assert abs(bits - nats / np.log(2)) / (nats / np.log(2)) < 0.05, (bits, nats / np.log(2))
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_8BIT, images.shape), images)


@pytest.mark.parametrize("preset", ["cifar", "cifar-hvae"])
def test_colour_presets_train_a_few_steps_and_sample_in_colour(preset: str, tmp_path: Path) -> None:
    from vaekit.config import load_config
    from vaekit.training.loop import train

    rng = np.random.default_rng(1)
    np.save(tmp_path / "c.npy", rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8))
    small = ["model.hidden=[8, 8, 8]", "model.res_blocks=1", "model.mixture_components=2"]
    if preset == "cifar-hvae":
        small = ["model.width=8", "model.groups=[2, 2]", "model.group_scales=[4, 2]", "model.mixture_components=2"]
    cfg = load_config(preset, [f"data.name={tmp_path / 'c.npy'}", "train.steps=20", "train.batch_size=16",
                               "guard.ema_decay=0", "optim.lr_warmup_steps=0",
                               "train.samples=4", "train.eval_batch_size=20", *small])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.test is not None and np.isfinite(result.test.neg_elbo) and result.test.split == "val"
    assert result.test.bits_per_dim < 9.0  # uniform noise: 8 bits/dim at best, ~9-10 for an untrained model
    samples = result.model.sample(4, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 32, 32)
    assert (tmp_path / "run" / "samples" / "samples.png").is_file()
    with Image.open(tmp_path / "run" / "samples" / "samples.png") as grid:
        assert grid.mode == "RGB"


@pytest.mark.parametrize("preset", ["cifar", "cifar-hvae"])
def test_colour_presets_train_at_64x64_from_a_class_folder_of_mixed_sizes(preset: str, tmp_path: Path) -> None:
    """The networks take 64x64 as well as 32x32: a user's folder of 64x64 and 72x80 JPEGs, resized and cropped."""
    from vaekit.config import load_config
    from vaekit.training.loop import train

    for i in range(24):
        _png(tmp_path / "pets" / ("cat" if i % 2 else "dog") / f"{i}.jpg", (64, 64) if i % 3 else (72, 80), seed=i)
    small = ["model.hidden=[4, 8, 8, 8]", "model.res_blocks=1", "model.mixture_components=2", "model.latent_dim=8"]
    if preset == "cifar-hvae":
        small = ["model.width=8", "model.groups=[2, 2]", "model.group_scales=[8, 4]", "model.mixture_components=2"]
    cfg = load_config(preset, [f"data.name={tmp_path / 'pets'}", "data.image_size=64", "train.steps=4",
                               "train.batch_size=8", "guard.ema_decay=0", "optim.lr_warmup_steps=0",
                               "train.samples=2", "train.eval_batch_size=8", *small])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.test is not None and np.isfinite(result.test.neg_elbo)
    assert result.model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 3, 64, 64)
    x = load_dataset(str(tmp_path / "pets"), "all", image_size=64).batch(torch.arange(2))
    assert result.model.reconstruct(x).shape == (2, 3, 64, 64)
    if preset == "cifar":  # `vaekit eval RUN --data FOLDER` resizes a mixed-size folder as the run's training did
        scored = subprocess.run([sys.executable, "-m", "vaekit", "eval", str(tmp_path / "run"), "--data",
                                 str(tmp_path / "pets"), "--json"], capture_output=True, text=True, timeout=300)
        assert scored.returncode == 0, scored.stderr
        assert (json.loads(scored.stdout)["split"], json.loads(scored.stdout)["n"]) == ("all", 24)

"""Lossless compression: exact round trips, the container's defences, and the code length."""

from __future__ import annotations

import dataclasses
import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import write_idx
from vaekit.apps.compress import bbans
from vaekit.apps.compress.container import parse
from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.apps.compress.latents import LATENT_BITS, LEGACY_LATENT_BITS
from vaekit.cli.main import main
from vaekit.config import ModelConfig
from vaekit.errors import DataError
from vaekit.models.likelihoods import DiscretizedLogistic, LogisticMixture
from vaekit.models.vae import VAE, build_model


def _model(likelihood: str, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return build_model(ModelConfig(hidden=[32], latent_dim=3, likelihood=likelihood, input_shape=[1, 6, 6]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 6), p=st.floats(0.0, 1.0))
def test_binary_round_trip(seed: int, n: int, p: float) -> None:
    model = _model("bernoulli")
    images = (np.random.default_rng(seed).random((n, 1, 6, 6)) < p).astype(np.uint8)
    words = bbans.encode_images(model, images, bbans.KIND_BINARY)
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_BINARY, images.shape), images)


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "logistic-mixture"])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 6))
def test_8bit_round_trip(likelihood: str, seed: int, n: int) -> None:
    model = _model(likelihood)
    images = np.random.default_rng(seed).integers(0, 256, (n, 1, 6, 6), dtype=np.uint8)
    words = bbans.encode_images(model, images, bbans.KIND_8BIT)
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_8BIT, images.shape), images)


def test_discretized_logistic_bins_match_log_prob() -> None:
    lik = DiscretizedLogistic((1, 2, 2), ModelConfig())
    params = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    px = lik(params * torch.tensor([0.5, 1.0]).view(1, 2, 1, 1))  # loc, log-scale
    probs = px.bin_probs()  # (3, 1, 2, 2, 256)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 1, 2, 2))
    for level in (0, 1, 77, 128, 254, 255):
        x = torch.full((3, 1, 2, 2), level / 255)
        expected = torch.log(probs[..., level]).flatten(1).sum(-1)
        # log_prob uses the density at the bin centre where a bin's mass is under 1e-5 (float32 differences of
        # two CDFs near 1 lose their digits there), so far-out bins agree to 1e-3, not to float precision
        torch.testing.assert_close(px.log_prob(x), expected, rtol=1e-3, atol=1e-3)


def test_logistic_mixture_is_the_weighted_sum_of_its_components() -> None:
    k = 3
    lik = LogisticMixture((1, 2, 2), ModelConfig(mixture_components=k))
    params = torch.randn(4, 3 * k, 2, 2, generator=torch.Generator().manual_seed(1))
    px = lik(params)
    probs = px.bin_probs()  # (4, 1, 2, 2, 256)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 1, 2, 2))
    logits, loc, log_scale = params.view(4, 3, k, 1, 2, 2).unbind(1)
    weights = torch.softmax(logits, dim=1)
    for level in (0, 3, 128, 255):
        x = torch.full((4, 1, 2, 2), level / 255)
        single = torch.stack([DiscretizedLogistic((1, 2, 2), ModelConfig())(
            torch.cat([loc[:, j], log_scale[:, j].clamp(min=-7)], dim=1)).bin_probs()[..., level] for j in range(k)], 1)
        expected = torch.log((weights * single).sum(1)).flatten(1).sum(-1)
        torch.testing.assert_close(px.log_prob(x), expected, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(torch.log(probs[..., level]).flatten(1).sum(-1), expected, rtol=1e-4, atol=1e-4)
    draws = torch.stack([px.sample(torch.Generator().manual_seed(i)) for i in range(2000)])  # (2000, 4, 1, 2, 2)
    levels = (draws * 255).round().long()
    assert levels.min() >= 0 and levels.max() <= 255
    empirical_mean = (levels.float() / 255).mean(0)
    exact_mean = (probs * torch.arange(256) / 255).sum(-1)
    assert (empirical_mean - exact_mean).abs().max() < 5 * 0.5 / math.sqrt(2000)  # 5 sigma, pixel std <= 0.5


@pytest.fixture
def run(tmp_path: Path) -> Path:
    model = _model("discretized-logistic")
    model.save_pretrained(str(tmp_path / "m"))
    return tmp_path / "m"


def test_files_round_trip_in_every_format(run: Path, tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    write_idx(tmp_path / "a-idx3-ubyte.gz", images)
    (tmp_path / "pngs").mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / "pngs" / f"img{i}.png")
    for source, restored in (("a.npy", "b.npy"), ("a-idx3-ubyte.gz", "b-idx3-ubyte.gz"), ("pngs", "pngs-back")):
        stats = compress_file(run, tmp_path / source, tmp_path / f"{source}.vkz", verify=True)
        assert stats["verified"] and stats["n"] == 5
        decompress_file(tmp_path / f"{source}.vkz", tmp_path / restored)
    back = np.load(tmp_path / "b.npy")
    assert back.shape == images.shape and back.dtype == np.uint8 and np.array_equal(back, images)  # (N, H, W) back
    raw = gzip.decompress((tmp_path / "b-idx3-ubyte.gz").read_bytes())
    assert raw == gzip.decompress((tmp_path / "a-idx3-ubyte.gz").read_bytes())  # the IDX bytes, exactly
    for i, im in enumerate(images):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "pngs-back" / f"img{i}.png")), im)


@pytest.mark.parametrize("shape", [(4, 6, 6), (4, 1, 6, 6), (4, 6, 6, 1)])
def test_npy_round_trip_keeps_shape_and_dtype(run: Path, tmp_path: Path, shape: tuple[int, ...]) -> None:
    images = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    compress_file(run, tmp_path / "a.npy", tmp_path / "a.vkz", verify=True)
    decompress_file(tmp_path / "a.vkz", tmp_path / "b.npy")
    back = np.load(tmp_path / "b.npy")
    assert back.shape == shape and back.dtype == np.uint8 and np.array_equal(back, images)


def test_version_1_files_still_decode(run: Path, tmp_path: Path) -> None:
    # version 1 coded the latents on buckets of equal prior mass; a file written that way still decompresses
    images = np.random.default_rng(3).integers(0, 256, (4, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    compress_file(run, tmp_path / "a.npy", tmp_path / "a.vkz")
    new = parse((tmp_path / "a.vkz").read_bytes(), "a.vkz")
    assert new.version == 2 and new.latent_bits == LATENT_BITS
    model = VAE.from_pretrained(str(run))
    old_words = bbans.encode_images(model, images[:, None], bbans.KIND_8BIT, version=1)
    assert not np.array_equal(old_words, new.words)  # another code for the same images
    old = dataclasses.replace(new, words=old_words, version=1, latent_bits=LEGACY_LATENT_BITS)
    (tmp_path / "old.vkz").write_bytes(old.to_bytes())
    decompress_file(tmp_path / "old.vkz", tmp_path / "b.npy")
    assert np.array_equal(np.load(tmp_path / "b.npy"), images)
    odd = dataclasses.replace(new, latent_bits=14)  # bits that no version uses
    (tmp_path / "odd.vkz").write_bytes(odd.to_bytes())
    with pytest.raises(DataError, match="invalid header"):
        decompress_file(tmp_path / "odd.vkz", tmp_path / "c.npy")


@pytest.mark.parametrize("version", [1, 2])
def test_code_length_tracks_the_negative_elbo(version: int) -> None:
    # Code length per image converges to the -ELBO in bits (plus the ANS seed overhead, amortized), with the
    # latents on equal-mass buckets (version 1) or on equal-width quantized Gaussians (version 2).
    model = _model("bernoulli", seed=3)
    images = (np.random.default_rng(5).random((300, 1, 6, 6)) < 0.2).astype(np.uint8)
    words = bbans.encode_images(model, images, bbans.KIND_BINARY, version=version)
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_BINARY, images.shape, version), images)
    with torch.no_grad():
        neg_elbo = model.elbo(torch.from_numpy(images).float(), n_samples=64).neg_elbo.mean().item()
    bits_per_image = (words.size - bbans.seed_words(model)) * 32 / len(images)
    assert abs(bits_per_image - neg_elbo / math.log(2)) / (neg_elbo / math.log(2)) < 0.05


def _container(run: Path, tmp_path: Path) -> bytes:
    np.save(tmp_path / "a.npy", np.random.default_rng(1).integers(0, 256, (3, 6, 6), dtype=np.uint8))
    compress_file(run, tmp_path / "a.npy", tmp_path / "a.vkz")
    return (tmp_path / "a.vkz").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_containers_never_crash_or_hang(run: Path, tmp_path: Path, data: st.DataObject) -> None:
    good = _container(run, tmp_path) if not (tmp_path / "a.vkz").exists() else (tmp_path / "a.vkz").read_bytes()
    blob = bytearray(good)
    action = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if action == "flip":
        for pos in data.draw(st.lists(st.integers(0, len(blob) - 1), min_size=1, max_size=4)):
            blob[pos] ^= data.draw(st.integers(1, 255))
    elif action == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif action == "extend":
        blob += data.draw(st.binary(min_size=1, max_size=16))
    else:
        start = data.draw(st.integers(0, len(blob)))
        blob[start:start] = data.draw(st.binary(min_size=1, max_size=8))
    assume(bytes(blob) != good)  # two flips of one byte can cancel out
    (tmp_path / "bad.vkz").write_bytes(bytes(blob))
    out = tmp_path / "restored.npy"
    out.unlink(missing_ok=True)
    with pytest.raises(DataError):
        decompress_file(tmp_path / "bad.vkz", out, run)
    assert not out.exists()


def test_crc_guards_even_a_consistent_looking_payload(run: Path, tmp_path: Path) -> None:
    blob = bytearray(_container(run, tmp_path))
    blob[-1] ^= 1
    with pytest.raises(DataError, match="corrupted"):
        parse(bytes(blob), "x")
    assert zlib.crc32(b"") == 0  # (the CRC covers header and body; see container.py)


def test_other_model_and_wrong_data_are_refused(run: Path, tmp_path: Path) -> None:
    _container(run, tmp_path)
    other = _model("discretized-logistic", seed=9)
    other.save_pretrained(str(tmp_path / "other"))
    with pytest.raises(DataError, match="another model"):
        decompress_file(tmp_path / "a.vkz", tmp_path / "x.npy", tmp_path / "other")
    binary = _model("bernoulli")
    binary.save_pretrained(str(tmp_path / "bin"))
    with pytest.raises(DataError, match="not binary"):
        compress_file(tmp_path / "bin", tmp_path / "a.npy", tmp_path / "b.vkz")
    gauss = _model("gaussian")
    gauss.save_pretrained(str(tmp_path / "g"))
    with pytest.raises(Exception, match="cannot code pixels exactly"):
        compress_file(tmp_path / "g", tmp_path / "a.npy", tmp_path / "c.vkz")


def test_cli_round_trip_and_errors(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = (np.random.default_rng(2).random((4, 6, 6)) < 0.5).astype(np.uint8) * 255
    np.save(tmp_path / "bin.npy", images)
    model = _model("bernoulli")
    model.save_pretrained(str(tmp_path / "bm"))
    assert main(["compress", str(tmp_path / "bin.npy"), "--model", str(tmp_path / "bm"), "-o",
                 str(tmp_path / "bin.vkz"), "--verify"]) == 0
    assert "(verified)" in capsys.readouterr().out
    assert main(["decompress", str(tmp_path / "bin.vkz"), "-o", str(tmp_path / "back.npy")]) == 0  # model hint
    back = np.load(tmp_path / "back.npy")
    assert back.shape == images.shape and np.array_equal(back, images)  # (N, H, W) in, (N, H, W) out
    (tmp_path / "junk.vkz").write_bytes(b"VKZ1" + b"\0" * 10)
    (tmp_path / "keep.npy").write_bytes(b"precious")
    assert main(["decompress", str(tmp_path / "junk.vkz"), "-o", str(tmp_path / "keep.npy")]) == 2
    assert (tmp_path / "keep.npy").read_bytes() == b"precious"
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

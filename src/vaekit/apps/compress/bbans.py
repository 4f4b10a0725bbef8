"""Bits-back ANS coding of images with a VAE (Townsend, Bird & Barber 2019, "BB-ANS").

Per image, encoding (on an ANS stack): pop z from q(z|x), push x with p(x|z), push z with p(z).
Decoding runs the same steps backwards, so the bits "borrowed" to pick z are returned, and the
expected code length is the model's -ELBO. Latents are discretized into K buckets of equal prior
mass (so the prior over buckets is uniform); z is the prior quantile at a bucket's centre.

Encoder and decoder must compute bit-identical probabilities: the codec runs the networks on one
image at a time with one thread, and the container carries a probe hash of the decoder's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator

import constriction
import numpy as np
import torch
from torch import Tensor

from vaekit.errors import VaekitError
from vaekit.models.likelihoods import (
    BernoulliPixels,
    DiscretizedLogisticPixels,
    LogisticMixturePixels,
    RGBMixturePixels,
)
from vaekit.models.vae import VAE

LATENT_BITS = 12  # K = 4096 buckets per latent dimension
SEED_WORDS = 16  # initial random words on the stack: bits to borrow for the first image
KIND_BINARY, KIND_8BIT = 0, 1  # symbols: 0/1 per pixel, or 0..255 per pixel


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """One thread, no autograd: the same arithmetic when encoding and when decoding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(threads)


def check_codable(model: VAE) -> None:
    """Refuse, in one line, a model whose latents this coder cannot discretize exactly."""
    if model.flow is not None:
        raise VaekitError(
            f"a {model.cfg.posterior!r} posterior flow has no density at arbitrary z, which bits-back coding needs; "
            "compress with a model trained with model.posterior=gaussian"
        )
    if len(model.group_dims) > 1 or model.cfg.prior != "standard-normal":
        raise VaekitError(
            "this version codes one-group models with the standard-normal prior; "
            f"this model has {len(model.group_dims)} group(s) and a {model.cfg.prior!r} prior"
        )


def kind_for(model: VAE) -> int:
    check_codable(model)
    name = model.cfg.likelihood
    if name == "bernoulli":
        return KIND_BINARY
    if name in ("discretized-logistic", "logistic-mixture", "rgb-logistic-mixture"):
        return KIND_8BIT
    raise VaekitError(
        f"a {name!r} likelihood cannot code pixels exactly; train with model.likelihood=bernoulli "
        "(binary images) or model.likelihood=discretized-logistic or logistic-mixture (8-bit images)"
    )


def probe_hash(model: VAE) -> bytes:
    """SHA-256 of the decoder's output on fixed latents: differs where this machine's arithmetic does."""
    with deterministic():
        z = torch.linspace(-2, 2, 4 * model.latent_dim).reshape(4, model.latent_dim)
        px = model.decode(z)
        out = torch.cat([getattr(px, f.name).flatten() for f in dataclasses.fields(px)])  # type: ignore[arg-type]
    return hashlib.sha256(out.numpy().tobytes()).digest()


class _Buckets:
    """K equal-mass buckets of N(0, 1): edges (K+1,) and centres (K,) in float64."""

    def __init__(self, bits: int) -> None:
        k = 2**bits
        p = torch.arange(k + 1, dtype=torch.float64) / k
        self.edges = torch.special.ndtri(p)  # -inf ... +inf
        self.centres = torch.special.ndtri((torch.arange(k, dtype=torch.float64) + 0.5) / k)
        self.k = k

    def posterior_probs(self, mean: Tensor, std: Tensor) -> np.ndarray:
        """q(bucket | x) for each latent dimension, (D, K) float64."""
        cdf = torch.special.ndtr((self.edges[None, :] - mean[:, None].double()) / std[:, None].double())
        return torch.diff(cdf, dim=1).clamp(min=0).numpy()


def _pixel_model(px: object, kind: int) -> tuple[object, np.ndarray]:
    if kind == KIND_BINARY:
        assert isinstance(px, BernoulliPixels)
        return constriction.stream.model.Bernoulli(perfect=False), torch.sigmoid(px.logits.double()).flatten().numpy()
    assert isinstance(px, DiscretizedLogisticPixels | LogisticMixturePixels)
    probs = px.bin_probs().double().reshape(-1, 256).clamp(min=0)
    return constriction.stream.model.Categorical(perfect=False), probs.numpy()


_CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def _channel_probs(px: RGBMixturePixels, x: Tensor, channel: int) -> np.ndarray:
    """P(level | earlier channels) of one channel's pixels, (H*W, 256) float64."""
    return px.channel_bin_probs(x, channel).double().reshape(-1, 256).clamp(min=0).numpy()


def encode_images(model: VAE, images: np.ndarray, kind: int) -> np.ndarray:
    """Compress uint8 symbols (N, C, H, W) (0/1 when binary, 0..255 when 8-bit) into ANS words (uint32)."""
    buckets = _Buckets(LATENT_BITS)
    seed = np.random.default_rng(0).integers(0, 2**32, SEED_WORDS, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder(seed)
    q_model = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(buckets.k)
    model.eval()
    with deterministic():
        for image in images:
            x = _to_model_input(image, kind)
            q = model.encode(x)
            idx = coder.decode(q_model, buckets.posterior_probs(q.mean[0], q.std[0]))  # borrow bits: z ~ q(z|x)
            z = buckets.centres[idx].float()[None]
            px = model.decode(z)
            if isinstance(px, RGBMixturePixels):  # B, then G, then R on the stack: decoding pops R first
                for c in (2, 1, 0):
                    probs = _channel_probs(px, x, c)
                    coder.encode_reverse(image[c].reshape(-1).astype(np.int32), _CATEGORICAL, probs)
            else:
                family, params = _pixel_model(px, kind)
                coder.encode_reverse(image.reshape(-1).astype(np.int32), family, params)
            coder.encode_reverse(idx.astype(np.int32), prior)
    return coder.get_compressed()


def decode_images(model: VAE, words: np.ndarray, kind: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The inverse of `encode_images`: uint8 symbols (N, C, H, W)."""
    n, c, h, w = shape
    buckets = _Buckets(LATENT_BITS)
    coder = constriction.stream.stack.AnsCoder(words)
    q_model = constriction.stream.model.Categorical(perfect=False)
    prior = constriction.stream.model.Uniform(buckets.k)
    out = np.empty(shape, dtype=np.uint8)
    model.eval()
    with deterministic():
        for i in reversed(range(n)):
            idx = coder.decode(prior, model.latent_dim)
            z = buckets.centres[idx].float()[None]
            px = model.decode(z)
            if isinstance(px, RGBMixturePixels):  # each channel's probabilities read only the channels before it
                x = torch.zeros(1, c, h, w)
                for channel in range(3):
                    values = np.asarray(coder.decode(_CATEGORICAL, _channel_probs(px, x, channel)))
                    x[0, channel] = torch.from_numpy(values.astype(np.float32).reshape(h, w) / 255.0)
                image = (x[0].numpy() * 255.0).round().astype(np.uint8)
            else:
                family, params = _pixel_model(px, kind)
                symbols = np.asarray(coder.decode(family, params))
                image = symbols.astype(np.uint8).reshape(c, h, w)
            q = model.encode(_to_model_input(image, kind))
            coder.encode_reverse(idx.astype(np.int32), q_model, buckets.posterior_probs(q.mean[0], q.std[0]))
            out[i] = image
    return out


def _to_model_input(symbols: np.ndarray, kind: int) -> Tensor:
    """(C, H, W) symbols -> (1, C, H, W) model input in [0, 1]."""
    scale = 1.0 if kind == KIND_BINARY else 255.0
    return torch.from_numpy(symbols.astype(np.float32) / scale)[None]

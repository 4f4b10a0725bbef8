"""Bits-back ANS coding of images with a VAE (Townsend, Bird & Barber 2019, "BB-ANS").

Per image, encoding (on an ANS stack): pop z from q(z|x), push x with p(x|z), push z with p(z).
Decoding runs the same steps backwards, so the bits "borrowed" to pick z are returned, and the
expected code length is the model's -ELBO. Each latent dimension, in the units of its prior
(z' = (z - mu_p) / sigma_p), is discretized into K = 2^12 buckets of equal width on [-8, 8]; z' is a
bucket's centre, and both q and p are Gaussians quantized onto those buckets by constriction's
`QuantizedGaussian` (evaluated lazily in Rust, so no (D, K) table is built: container version 2).
Version 1 files used K = 4096 buckets of equal prior mass (the prior uniform over them, q's
probabilities a (D, K) table per image: ~1 s per image for a hierarchy with 5,000 latents); they
still decode.

A mixture prior (`mog`, `vamp`) does not factorize over dimensions, so its component k is coded as
one more latent (bits-back with an auxiliary variable): pop k from q(k | x) = p(k | z = E_q[z]),
then z on the buckets of component k's Gaussian; push z uniform on them, then k with the mixture
weights. The cost over the -ELBO is KL(q(k | x) || p(k | z)), small when the components are apart.

A hierarchy codes every group the same way, top first (Kingma et al. 2019, "Bit-Swap", and
Townsend et al. 2020, "HiLLoC", do the same with other orders): pop z_L from q(z_L | x), then each
z_l from q(z_l | x, z_>l) on the buckets of its conditional prior p(z_l | z_>l) = N(mu, sigma^2)
(equal mass under it: edges mu + sigma * Phi^-1(i / K)), push x, then push z_1 ... z_L, each
uniform over its buckets. The decoder pops z_L first, so every conditional prior it needs is
computed from groups it has already decoded.

Encoder and decoder must compute bit-identical probabilities: the codec runs the networks on one
image at a time with one thread, and the container carries a probe hash of the decoder's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
from collections.abc import Iterator
from typing import Any

import constriction
import numpy as np
import torch
from torch import Tensor

from vaekit.apps.compress.latents import CATEGORICAL as _CATEGORICAL
from vaekit.apps.compress.latents import Latents, latents_for
from vaekit.errors import VaekitError
from vaekit.models.base import BaseVAE
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture
from vaekit.models.likelihoods import (
    BernoulliPixels,
    DiscretizedLogisticPixels,
    LogisticMixturePixels,
    RGBMixturePixels,
)

SEED_WORDS = 16  # initial random words on the stack, plus SEED_BITS_PER_LATENT for each latent dimension
SEED_BITS_PER_LATENT = 24  # enough to borrow the first image's z from (its q has at most ~12 bits per dimension)
KIND_BINARY, KIND_8BIT = 0, 1  # symbols: 0/1 per pixel, or 0..255 per pixel


def seed_words(model: BaseVAE) -> int:
    """The random words the stack starts with: the first image pops its z from them (BB-ANS's "initial bits").

    Too few and the first pops run the stack dry: with 16 words, a model of 150 latents paid ~17,000 bits
    for its first image and a 5,376-latent hierarchy far more. They are part of the file (a one-time cost);
    decoding does not need to know how many there were.
    """
    return SEED_WORDS + math.ceil(model.latent_dim * SEED_BITS_PER_LATENT / 32)


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


def check_codable(model: BaseVAE) -> None:
    """Refuse, in one line, a model whose latents this coder cannot discretize exactly."""
    if model.flow is not None:
        raise VaekitError(
            f"a {model.cfg.posterior!r} posterior flow has no density at arbitrary z, which bits-back coding needs; "
            "compress with a model trained with model.posterior=gaussian"
        )
    if model.num_classes:
        raise VaekitError(
            "a conditional model (model.conditional=true) codes an image only given its label; compress with an "
            "unconditional model"
        )


def kind_for(model: BaseVAE) -> int:
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


def probe_hash(model: BaseVAE) -> bytes:
    """SHA-256 of the decoder's output on fixed latents (and a hierarchy's conditional priors): it differs
    where this machine's arithmetic does."""
    with deterministic():
        z = torch.linspace(-2, 2, 4 * model.latent_dim).reshape(4, model.latent_dim)
        px = model.decode(z)
        parts = [getattr(px, f.name).flatten() for f in dataclasses.fields(px)]  # type: ignore[arg-type]
        top = model.top_prior_for_coding()
        if top is not None:  # a mixture prior's components are part of the code
            parts += [top.mean.flatten(), top.logvar.flatten(), top.log_weights.flatten()]
        if len(model.group_dims) > 1:
            walk, offset = model.walk(None), 0
            step = next(walk)
            for dims in model.group_dims:
                p, _ = step
                if p is not None:
                    parts += [p.mean.flatten(), p.logvar.flatten()]
                try:
                    step = walk.send(z[:1, offset : offset + dims])
                except StopIteration:
                    break
                offset += dims
        out = torch.cat(parts)
    return hashlib.sha256(out.numpy().tobytes()).digest()


def _pixel_model(px: object, kind: int) -> tuple[object, np.ndarray]:
    if kind == KIND_BINARY:
        assert isinstance(px, BernoulliPixels)
        return constriction.stream.model.Bernoulli(perfect=False), torch.sigmoid(px.logits.double()).flatten().numpy()
    assert isinstance(px, DiscretizedLogisticPixels | LogisticMixturePixels)
    probs = px.bin_probs().double().reshape(-1, 256).clamp(min=0)
    return constriction.stream.model.Categorical(perfect=False), probs.numpy()


def _channel_probs(px: RGBMixturePixels, x: Tensor, channel: int) -> np.ndarray:
    """P(level | earlier channels) of one channel's pixels, (H*W, 256) float64."""
    return px.channel_bin_probs(x, channel).double().reshape(-1, 256).clamp(min=0).numpy()


def _standardized(q: DiagonalGaussian, p: DiagonalGaussian | None) -> tuple[Tensor, Tensor]:
    """q's mean and std (D,) in the units of its prior's buckets: (m_q - m_p) / s_p and s_q / s_p."""
    if p is None:
        return q.mean[0], q.std[0]
    sp = p.std[0].double()
    return (q.mean[0].double() - p.mean[0].double()) / sp, q.std[0].double() / sp


def _component_probs(mixture: GaussianMixture, q: DiagonalGaussian) -> np.ndarray:
    """q(k | x) = p(k | z = E_q[z]), (1, K) float64: which mixture component the posterior sits in."""
    logits = mixture.log_weights.double() + _component_log_probs(mixture, q.mean[0].double())
    return torch.softmax(logits, dim=0).clamp(min=0).numpy()[None]


def _component_log_probs(mixture: GaussianMixture, z: Tensor) -> Tensor:
    mean, logvar = mixture.mean.double(), mixture.logvar.double()
    return -0.5 * (math.log(2 * math.pi) + logvar + (z[None] - mean) ** 2 * torch.exp(-logvar)).sum(-1)  # (K,)


def _component(mixture: GaussianMixture, k: int) -> DiagonalGaussian:
    return DiagonalGaussian(mixture.mean[k : k + 1], mixture.logvar[k : k + 1])


def _weights(mixture: GaussianMixture) -> np.ndarray:
    return torch.softmax(mixture.log_weights.double(), dim=0).clamp(min=0).numpy()[None]


def _z(latents: Latents, idx: np.ndarray, p: DiagonalGaussian | None) -> Tensor:
    """The latent (1, D) at the buckets' centres, back in z's units."""
    c = latents.values(idx)
    if p is None:
        return c.float()[None]
    return (p.mean[0].double() + p.std[0].double() * c).float()[None]


def _push_pixels(coder: Any, px: object, x: Tensor, image: np.ndarray, kind: int) -> None:
    if isinstance(px, RGBMixturePixels):  # B, then G, then R on the stack: decoding pops R first
        for c in (2, 1, 0):
            coder.encode_reverse(image[c].reshape(-1).astype(np.int32), _CATEGORICAL, _channel_probs(px, x, c))
    else:
        family, params = _pixel_model(px, kind)
        coder.encode_reverse(image.reshape(-1).astype(np.int32), family, params)


def _pop_pixels(coder: Any, px: object, kind: int, shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = shape
    if isinstance(px, RGBMixturePixels):  # each channel's probabilities read only the channels before it
        x = torch.zeros(1, c, h, w)
        for channel in range(3):
            values = np.asarray(coder.decode(_CATEGORICAL, _channel_probs(px, x, channel)))
            x[0, channel] = torch.from_numpy(values.astype(np.float32).reshape(h, w) / 255.0)
        return np.asarray((x[0].numpy() * 255.0).round().astype(np.uint8))
    family, params = _pixel_model(px, kind)
    return np.asarray(coder.decode(family, params)).astype(np.uint8).reshape(c, h, w)


def encode_images(model: BaseVAE, images: np.ndarray, kind: int, version: int = 2) -> np.ndarray:
    """Compress uint8 symbols (N, C, H, W) (0/1 when binary, 0..255 when 8-bit) into ANS words (uint32).

    `version` picks the latents' discretization (2, the default; 1 is kept to test the old files' decoder).
    """
    latents = latents_for(version)
    seed = np.random.default_rng(0).integers(0, 2**32, seed_words(model), dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder(seed)
    model.eval()
    with deterministic():
        for image in images:
            x = _to_model_input(image, kind)
            walk = model.walk(x)
            step, picked = next(walk), []
            while True:
                p, q = step
                assert q is not None
                k = None
                if isinstance(p, GaussianMixture):  # the component first, as one more latent
                    k = int(coder.decode(_CATEGORICAL, _component_probs(p, q))[0])
                    p = _component(p, k)
                idx = latents.pop_q(coder, *_standardized(q, p))  # borrow: z ~ q
                picked.append((k, idx, step[0]))
                try:
                    step = walk.send(_z(latents, idx, p))
                except StopIteration as done:
                    px = done.value
                    break
            _push_pixels(coder, px, x, image, kind)
            for k, idx, prior_l in reversed(picked):  # bottom group first: the decoder pops the top group first
                latents.push_p(coder, idx)
                if k is not None:
                    assert isinstance(prior_l, GaussianMixture)
                    coder.encode_reverse(np.array([k], dtype=np.int32), _CATEGORICAL, _weights(prior_l))
    return coder.get_compressed()


def decode_images(
    model: BaseVAE, words: np.ndarray, kind: int, shape: tuple[int, int, int, int], version: int = 2
) -> np.ndarray:
    """The inverse of `encode_images`: uint8 symbols (N, C, H, W)."""
    n, c, h, w = shape
    latents = latents_for(version)
    coder = constriction.stream.stack.AnsCoder(words)
    out = np.empty(shape, dtype=np.uint8)
    model.eval()
    with deterministic():
        for i in reversed(range(n)):
            walk = model.walk(None)
            step, picked, zs = next(walk), [], []
            for dims in model.group_dims:
                p, _ = step
                k = None
                if isinstance(p, GaussianMixture):
                    k = int(coder.decode(_CATEGORICAL, _weights(p))[0])
                    p = _component(p, k)
                idx = latents.pop_p(coder, dims)
                picked.append((k, idx))
                zs.append(_z(latents, idx, p))
                try:
                    step = walk.send(zs[-1])
                except StopIteration as done:
                    px = done.value
            image = _pop_pixels(coder, px, kind, (c, h, w))
            walk = model.walk(_to_model_input(image, kind))  # the posteriors, now that x is known
            posteriors = []
            step = next(walk)
            for (k, _), z in zip(picked, zs, strict=True):
                p, q = step
                assert q is not None
                component = None
                if isinstance(p, GaussianMixture):
                    assert k is not None
                    component = _component_probs(p, q)
                    p = _component(p, k)
                posteriors.append((_standardized(q, p), component))
                try:
                    step = walk.send(z)
                except StopIteration:
                    break
            for (k, idx), ((mean, std), component) in zip(reversed(picked), reversed(posteriors), strict=True):
                latents.push_q(coder, idx, mean, std)  # give the borrowed bits back
                if k is not None:
                    assert component is not None
                    coder.encode_reverse(np.array([k], dtype=np.int32), _CATEGORICAL, component)
            out[i] = image
    return out


def _to_model_input(symbols: np.ndarray, kind: int) -> Tensor:
    """(C, H, W) symbols -> (1, C, H, W) model input in [0, 1]."""
    scale = 1.0 if kind == KIND_BINARY else 255.0
    return torch.from_numpy(symbols.astype(np.float32) / scale)[None]

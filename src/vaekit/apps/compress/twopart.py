"""Lossless two-part coding of images with a VQ model (container version 3): no bits-back needed.

A VQ model's posterior is a point mass on the encoder's code grid c(x), so an image costs
-log2 p(c(x)) bits for its codes, coded by the code prior in raster order, plus -log2 p(x | c(x)) for its pixels,
coded by the decoder's likelihood given the codes: the model's two-part code length, its -ELBO, to within the ANS
coder's overhead. On the ANS stack, per batch of images: push each image's pixels, then the code grids position by
position from the last; the decoder pops the grids from the first position, then the pixels, and reverses the batch
order.

Encoder and decoder must compute bit-identical probabilities: the code prior's probabilities at a position are
computed, on both sides, from the same batch of grids holding the codes before that position and zeros after (what
the decoder has at that point), with one thread (`bbans.deterministic`); the pixels' from the decoder run on one
image at a time at the code vectors looked up from the codebook.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import constriction
import numpy as np
import torch
from torch import Tensor

from vaekit.apps.compress import bbans
from vaekit.apps.compress.bbans import _pop_pixels, _push_pixels, _to_model_input, deterministic
from vaekit.apps.compress.latents import CATEGORICAL
from vaekit.errors import VaekitError
from vaekit.models.base import BaseVAE
from vaekit.models.code_priors import PixelCNNPrior
from vaekit.models.vq import VQVAE

BATCH = 64  # images whose code grids go through the code prior together (both sides use the same batches)


def require_vq(model: BaseVAE) -> VQVAE:
    if not isinstance(model, VQVAE):
        raise VaekitError("this file holds a VQ model's two-part code; decompress it with the VQ model it names")
    return model


def _batches(n: int) -> Iterator[slice]:
    for start in range(0, n, BATCH):
        yield slice(start, min(start + BATCH, n))


def _position_probs(model: VQVAE, grids: Tensor, position: int) -> np.ndarray:
    """P(code at `position` | the codes before it), (B, K) float64, from grids (B, h, w) holding zeros from
    `position` on (the decoder's state there)."""
    if isinstance(model.code_prior, PixelCNNPrior):
        i, j = divmod(position, model.grid[1])
        logits = model.code_prior.logits(grids)[:, :, i, j].double()
        return torch.softmax(logits, dim=-1).clamp(min=0).numpy()
    return np.full((grids.shape[0], model.num_codes), 1.0 / model.num_codes)


def _masked(codes: Tensor, position: int) -> Tensor:
    """Grids (B, h, w) with the codes at `position` and after set to 0."""
    flat = codes.flatten(1).clone()
    flat[:, position:] = 0
    return flat.view_as(codes)


def encode_images(model: BaseVAE, images: np.ndarray, kind: int) -> np.ndarray:
    """uint8 symbols (N, C, H, W) (0/1 when binary, 0..255 when 8-bit) -> ANS words (uint32)."""
    vq = require_vq(model)
    coder = constriction.stream.stack.AnsCoder()  # an empty stack: nothing is borrowed
    vq.eval()
    positions = vq.grid[0] * vq.grid[1]
    with deterministic():
        for rows in _batches(images.shape[0]):
            x = torch.cat([_to_model_input(image, kind) for image in images[rows]])
            codes = vq.encode(x).indices  # (B, h, w)
            for image, grid in zip(images[rows], codes, strict=True):
                px = vq.decode(vq.latents_of(grid[None]))
                _push_pixels(coder, px, _to_model_input(image, kind), image, kind)
            for position in reversed(range(positions)):
                probs = _position_probs(vq, _masked(codes, position), position)
                symbols = codes.flatten(1)[:, position].numpy().astype(np.int32)
                coder.encode_reverse(symbols, CATEGORICAL, probs)
    return coder.get_compressed()


def decode_images(model: BaseVAE, words: np.ndarray, kind: int, shape: tuple[int, int, int, int]) -> np.ndarray:
    """The inverse of `encode_images`: uint8 symbols (N, C, H, W)."""
    vq = require_vq(model)
    n, c, h, w = shape
    coder = constriction.stream.stack.AnsCoder(words)
    out = np.empty(shape, dtype=np.uint8)
    vq.eval()
    with deterministic():
        for rows in reversed(list(_batches(n))):
            size = rows.stop - rows.start
            codes = torch.zeros(size, *vq.grid, dtype=torch.long)
            for position in range(vq.grid[0] * vq.grid[1]):
                probs = _position_probs(vq, codes, position)  # codes hold zeros from `position` on
                decoded = np.asarray(coder.decode(CATEGORICAL, probs), dtype=np.int64)
                codes.view(size, -1)[:, position] = torch.from_numpy(decoded)
            for b in reversed(range(size)):
                px = vq.decode(vq.latents_of(codes[b][None]))
                out[rows.start + b] = _pop_pixels(coder, px, kind, (c, h, w))
    return out


def probe_hash(model: BaseVAE) -> bytes:
    """bbans' probe of the decoder, and the code prior's logits on a fixed grid: they differ where this machine's
    arithmetic does."""
    vq = require_vq(model)
    with deterministic():
        grid = (torch.arange(vq.grid[0] * vq.grid[1]) % vq.num_codes).view(1, *vq.grid)
        logits = vq.code_prior.logits(grid) if isinstance(vq.code_prior, PixelCNNPrior) else torch.zeros(1)
    return hashlib.sha256(bbans.probe_hash(vq) + logits.numpy().tobytes()).digest()


def code_length_bits(model: BaseVAE, images: np.ndarray, kind: int) -> dict[str, float]:
    """The model's two-part code length of `images` (its -ELBO), in bits: the codes' and the pixels'."""
    vq, code_bits, pixel_bits = require_vq(model), 0.0, 0.0
    vq.eval()
    with torch.no_grad():
        for rows in _batches(images.shape[0]):
            terms = vq.elbo(torch.cat([_to_model_input(image, kind) for image in images[rows]]))
            code_bits += float(terms.kl.double().sum()) / math.log(2)
            pixel_bits -= float(terms.log_px.double().sum()) / math.log(2)
    return {"code_bits": code_bits, "pixel_bits": pixel_bits}

"""Walks through latent space: interpolation, traversals, the latent map, encode/decode.

Pure functions of a model and tensors; the CLI writes what they return.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.models.base import BaseVAE


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between z0 and z1 (D,) at fractions t (T,) -> (T, D).

    Under a standard normal prior most mass sits near the sphere of radius sqrt(D); slerp stays
    near it where a straight line cuts through the low-density middle (White 2016).
    """
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-4:  # (anti)parallel endpoints: the straight line is the same path
        return lerp(z0, z1, t)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def lerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """(D,), (D,), (T,) -> (T, D)."""
    return z0 + t[:, None] * (z1 - z0)


@torch.no_grad()
def interpolate(model: BaseVAE, x0: Tensor, x1: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Decoded linear and spherical paths between the posterior means of x0 and x1 (1, C, H, W).

    Returns (images (2, steps, C, H, W): row 0 linear, row 1 spherical; latents (2, steps, D)).
    """
    z0, z1 = model.encode(x0).mean[0], model.encode(x1).mean[0]
    t = torch.linspace(0, 1, steps)
    z = torch.stack([lerp(z0, z1, t), slerp(z0, z1, t)])  # (2, T, D)
    return model.decode(z).mean.clamp(0, 1), z


def dims_by_kl(kl_per_dim: Tensor, limit: int) -> list[int]:
    """Latent dimensions ordered by their average KL, most informative first, at most `limit`."""
    return torch.argsort(kl_per_dim, descending=True)[:limit].tolist()


@torch.no_grad()
def traverse(model: BaseVAE, x: Tensor | None, dims: list[int], values: Tensor) -> Tensor:
    """Sweep each of `dims` over `values` from the posterior mean of x (1, C, H, W), or from z = 0.

    Returns images (len(dims), len(values), C, H, W).
    """
    base = model.encode(x).mean[0] if x is not None else torch.zeros(model.latent_dim)
    z = base.repeat(len(dims), len(values), 1)  # (K, V, D)
    for row, d in enumerate(dims):
        z[row, :, d] = values
    return model.decode(z).mean.clamp(0, 1)


@torch.no_grad()
def encode_dataset(
    model: BaseVAE, data: Dataset, batch_size: int = 1000, sample: bool = False, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Posterior means (or one sample each) and log-variances of every example, (N, D) each; a VQ model's posterior
    is a point mass on its code vectors (log-variance -inf)."""
    gen = torch.Generator().manual_seed(seed)
    zs, logvars = [], []
    for x in data.batches(batch_size):
        q = model.encode(x)
        zs.append(q.rsample(1, gen)[0] if sample else q.mean)
        logvars.append(getattr(q, "logvar", torch.full_like(q.mean, -math.inf)))
    return torch.cat(zs), torch.cat(logvars)


@torch.no_grad()
def manifold(model: BaseVAE, n: int = 20) -> Tensor:
    """For a 2-d latent: decoded images on an n x n grid of prior quantiles, (n*n, C, H, W).

    The grid is uniform in probability, mapped through the normal's inverse CDF (Kingma & Welling
    2014, Fig. 4), so it covers the prior evenly.
    """
    if model.latent_dim != 2:
        raise ValueError("the manifold grid needs a 2-d latent")
    p = torch.linspace(0.5 / n, 1 - 0.5 / n, n)
    q = math.sqrt(2) * torch.erfinv(2 * p - 1)  # normal quantiles
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row = high z_2
    return model.decode(torch.stack([zx, zy], dim=-1).reshape(-1, 2)).mean.clamp(0, 1)


def project_2d(z: Tensor) -> tuple[Tensor, str]:
    """(N, D) -> (N, 2): the latents themselves when D <= 2, else their first two principal components."""
    if z.shape[1] == 1:
        return torch.cat([z, torch.zeros_like(z)], dim=1), "z"
    if z.shape[1] == 2:
        return z, "z"
    centred = z - z.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, "PCA"

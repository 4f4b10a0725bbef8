"""Distribution math against torch.distributions and closed forms."""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from vaekit.config import ModelConfig
from vaekit.models.distributions import DiagonalGaussian, StandardNormal, soft_clamp
from vaekit.models.likelihoods import Bernoulli, Gaussian


def _q(b: int = 5, d: int = 3, seed: int = 0) -> DiagonalGaussian:
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(b, d, generator=g), torch.randn(b, d, generator=g))


def test_kl_matches_torch_distributions() -> None:
    q = _q()
    ours = StandardNormal(3).kl_per_dim(q)
    ref = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(torch.zeros(3), torch.ones(3)))
    torch.testing.assert_close(ours, ref)


def test_posterior_log_prob_matches_torch() -> None:
    q = _q()
    z = q.rsample(4)  # (S, B, D)
    ref = D.Independent(D.Normal(q.mean, q.std), 1).log_prob(z)
    torch.testing.assert_close(q.log_prob(z), ref)
    torch.testing.assert_close(
        StandardNormal(3).log_prob(z), D.Independent(D.Normal(0.0, torch.ones(3)), 1).log_prob(z)
    )


def test_rsample_moments_within_confidence_interval() -> None:
    q = DiagonalGaussian(torch.tensor([[1.5, -2.0]]), torch.log(torch.tensor([[0.25, 4.0]])))
    z = q.rsample(40_000, torch.Generator().manual_seed(1))[:, 0]  # (S, D)
    se = q.std[0] / math.sqrt(z.shape[0])
    assert ((z.mean(0) - q.mean[0]).abs() < 4 * se).all()
    assert ((z.var(0) / q.std[0] ** 2 - 1).abs() < 0.05).all()


def test_rsample_is_differentiable() -> None:
    mean = torch.zeros(2, 3, requires_grad=True)
    logvar = torch.zeros(2, 3, requires_grad=True)
    DiagonalGaussian(mean, logvar).rsample(2).sum().backward()
    assert mean.grad is not None and logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_soft_clamp_bounds_and_identity_in_the_middle() -> None:
    far = soft_clamp(torch.tensor([-1e4, 1e4]), -12.0, 8.0)
    assert far[0] >= -12.0 and far[1] <= 8.0
    x = torch.linspace(-40, 30, 701, requires_grad=True)
    y = soft_clamp(x, -12.0, 8.0)
    assert y.min() > -12.0 and y.max() < 8.0
    y.sum().backward()
    assert x.grad is not None and (x.grad > 0).all()  # unlike a hard clamp, no dead gradient past the bounds
    mid = torch.tensor([-2.0, -1.0, 0.0])
    torch.testing.assert_close(soft_clamp(mid, -12.0, 8.0), mid, atol=0.03, rtol=0)


def test_bernoulli_likelihood_matches_torch() -> None:
    logits = torch.randn(2, 4, 1, 3, 3)
    x = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5))
    px = Bernoulli((1, 3, 3), ModelConfig())(logits)
    ref = D.Independent(D.Bernoulli(logits=logits), 3).log_prob(x.expand_as(logits))
    torch.testing.assert_close(px.log_prob(x), ref)


def test_gaussian_likelihood_matches_torch_with_floor() -> None:
    cfg = ModelConfig(likelihood="gaussian", gaussian_scale="pixel", min_scale=0.01)
    lik = Gaussian((1, 3, 3), cfg)
    with torch.no_grad():
        lik.raw_scale.fill_(-50.0)  # softplus -> ~0: the floor must hold
    loc = torch.rand(4, 1, 3, 3)
    x = torch.rand(4, 1, 3, 3)
    px = lik(loc)
    assert torch.allclose(px.scale, torch.full_like(px.scale, 0.01))
    ref = D.Independent(D.Normal(loc, px.scale.expand_as(loc)), 3).log_prob(x)
    torch.testing.assert_close(px.log_prob(x), ref)

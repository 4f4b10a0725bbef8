"""The ELBO, free bits, the IW bound and the importance-sampled likelihood against closed forms."""

from __future__ import annotations

import math

import torch
from torch import distributions as D

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.bounds import ElboTerms, bits_per_dim, iw_bound
from vaekit.models.distributions import DiagonalGaussian, StandardNormal
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.vae import VAE, build_model
from vaekit.objectives import Batch, Knobs, Nets
from vaekit.objectives.elbo import Elbo, weighted_kl


def test_neg_elbo_is_minus_log_px_plus_kl_and_the_loss_weighs_the_kl_by_beta() -> None:
    log_px = torch.tensor([-100.0, -120.0])
    kl = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    terms = ElboTerms(log_px, (kl,), (2,))
    torch.testing.assert_close(terms.neg_elbo, torch.tensor([103.0, 127.0]))
    assert weighted_kl(terms).item() == 5.0
    elbo = Elbo(ObjectiveConfig())
    out = VAEOutput((LatentGroup(DiagonalGaussian(torch.zeros(2, 2), torch.zeros(2, 2)), StandardNormal(2),
                                 torch.zeros(1, 2, 2)),), _FixedLogProb(log_px))

    def forward(x: torch.Tensor, **_: object) -> VAEOutput:
        return out

    for beta in (1.0, 2.0):
        loss = elbo.loss("model", Nets(None, forward), Batch(torch.zeros(2, 1, 1, 1)), Knobs(kl_weight=beta))  # type: ignore
        assert loss.loss.item() == 110.0 + beta * 0.0  # this posterior equals the prior: KL 0
        torch.testing.assert_close(loss.score, torch.tensor([100.0, 120.0]))


class _FixedLogProb:
    def __init__(self, log_px: torch.Tensor) -> None:
        self.log_px = log_px

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_px.unsqueeze(0)  # (S = 1, B)


def test_free_bits_stop_the_gradient_below_the_threshold() -> None:
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0]], requires_grad=True)  # dim 0 mean 0.2 < 0.5, dim 1 mean 3
    weighted_kl(ElboTerms(torch.zeros(2), (kl,), (2,)), free_bits=0.5).backward()
    assert kl.grad is not None
    assert (kl.grad[:, 0] == 0).all()
    assert (kl.grad[:, 1] > 0).all()
    value = weighted_kl(ElboTerms(torch.zeros(2), (kl.detach(),), (2,)), free_bits=0.5).item()
    assert math.isclose(value, 0.5 + 3.0)


def test_iw_bound_of_one_sample_is_the_sample() -> None:
    log_w = torch.randn(1, 7)
    torch.testing.assert_close(iw_bound(log_w), log_w[0])
    log_w = torch.log(torch.tensor([[1.0], [3.0]]))
    torch.testing.assert_close(iw_bound(log_w), torch.log(torch.tensor([2.0])))


def test_bits_per_dim() -> None:
    assert math.isclose(bits_per_dim(784 * math.log(2), 784), 1.0)


def _ppca_model(seed: int = 0) -> tuple[VAE, torch.Tensor, torch.Tensor, float]:
    """A linear Gaussian VAE (probabilistic PCA) with a deliberately imperfect linear encoder."""
    torch.manual_seed(seed)
    cfg = ModelConfig(hidden=[], latent_dim=2, likelihood="gaussian", input_shape=[1, 2, 2], min_scale=1e-3)
    model = build_model(cfg)
    dec = model.decoder.net[0]
    w, b = dec.weight.detach(), dec.bias.detach()  # (4, 2), (4,)
    scale = float(torch.nn.functional.softplus(model.likelihood.raw_scale.detach()) + 1e-3)
    cov = w @ w.T + scale**2 * torch.eye(4)
    # Exact posterior mean, then a proposal wider than the true posterior: IS has real variance.
    post_cov = torch.linalg.inv(torch.eye(2) + w.T @ w / scale**2)
    enc = model.encoder.net[0]
    with torch.no_grad():
        enc.weight.zero_()
        enc.weight[:2] = post_cov @ w.T / scale**2
        enc.bias[:2] = -(post_cov @ w.T / scale**2) @ b
        enc.bias[2:] = torch.log(post_cov.diagonal()) + 0.7
    return model, b, cov, scale


def test_importance_sampled_log_likelihood_matches_ppca_closed_form() -> None:
    model, b, cov, _ = _ppca_model()
    x = torch.randn(6, 1, 2, 2) * 0.5 + 0.5
    exact = D.MultivariateNormal(b, cov).log_prob(x.flatten(1))  # (B,)
    runs = torch.stack(
        [model.log_likelihood(x, k=2000, chunk=300, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    )  # (R, B)
    mean, se = runs.mean(0), runs.std(0) / math.sqrt(runs.shape[0])
    assert (runs.std(0) > 0).all()  # the proposal is not exact, so this is a real test
    assert ((mean - exact).abs() < 4 * se + 2e-3).all(), (mean, exact, se)


def test_k1_bound_equals_the_elbo_on_average() -> None:
    model, _, _, _ = _ppca_model(1)
    x = torch.rand(4, 1, 2, 2)
    g = torch.Generator().manual_seed(3)
    k1 = torch.stack([model.log_likelihood(x, k=1, generator=g) for _ in range(4000)])  # (R, B)
    with torch.no_grad():
        elbo = -model.elbo(x, n_samples=20_000, generator=g).neg_elbo  # analytic KL, MC log p(x|z)
    se = k1.std(0) / math.sqrt(k1.shape[0])
    assert ((k1.mean(0) - elbo).abs() < 4 * se + 1e-3).all(), (k1.mean(0), elbo, se)
    big_k = model.log_likelihood(x, k=500, generator=g)
    assert (big_k >= elbo - 1e-3).all()  # the bound tightens with k

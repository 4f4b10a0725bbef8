"""The ELBO, free bits, the IW bound and the importance-sampled likelihood against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from vaekit.config import ModelConfig, ObjectiveConfig, load_config
from vaekit.errors import ConfigError
from vaekit.models.bounds import ElboTerms, bits_per_dim, elbo_terms, iw_bound, log_weights
from vaekit.models.distributions import DiagonalGaussian, StandardNormal
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.vae import VAE, build_model
from vaekit.objectives import Batch, Knobs, Nets, build_objective
from vaekit.objectives.elbo import Elbo, weighted_kl
from vaekit.objectives.iwae import k_sample_bound

HVAE = ["model.kind=hierarchical", "model.groups=[6, 10]", "model.hidden=[32]", "model.group_hidden=[16]"]


def _model(overrides: list[str]) -> VAE:
    torch.manual_seed(0)
    return build_model(load_config("burda", [*overrides, "model.input_shape=[1, 28, 28]"]).model)  # type: ignore


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


def _ppca(latent: int, exact_posterior: bool) -> VAE:
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[], latent_dim=latent, likelihood="gaussian", input_shape=[1, 2, 2]))
    w, b = model.decoder.net[0].weight.detach(), model.decoder.net[0].bias.detach()
    s2 = float(torch.nn.functional.softplus(model.likelihood.raw_scale.detach()) + model.cfg.min_scale) ** 2
    post_cov = torch.linalg.inv(torch.eye(latent) + w.T @ w / s2)
    with torch.no_grad():
        enc = model.encoder.net[0]
        enc.weight.zero_()
        enc.weight[:latent] = post_cov @ w.T / s2
        enc.bias[:latent] = -(post_cov @ w.T / s2) @ b
        # soft_clamp is the identity only approximately: undo it so logvar is exact
        target = torch.log(post_cov.diagonal()) + (0.0 if exact_posterior else 0.8)
        lo, hi = model.cfg.logvar_min, model.cfg.logvar_max
        mid, half = (hi + lo) / 2, (hi - lo) / 2
        enc.bias[latent:] = mid + half * torch.atanh((target - mid) / half)
    return model


def test_dreg_keeps_the_value_and_the_decoder_gradient() -> None:
    model = _ppca(2, exact_posterior=False)
    x = torch.rand(3, 1, 2, 2)
    grads = {}
    for dreg in (False, True):
        model.zero_grad()
        out = model(x, n_samples=8, generator=torch.Generator().manual_seed(1))
        loss = -k_sample_bound(out, x, dreg=dreg).mean()
        loss.backward()
        grads[dreg] = (loss.detach(), [p.grad.clone() for p in model.decoder.parameters()],  # type: ignore[union-attr]
                       model.encoder.net[0].weight.grad.clone())  # type: ignore[union-attr]
    torch.testing.assert_close(grads[False][0], grads[True][0])
    for a, b in zip(grads[False][1], grads[True][1], strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(grads[False][2], grads[True][2])


def test_dreg_encoder_gradient_vanishes_at_the_exact_posterior() -> None:
    # With q(z|x) = p(z|x), log w = log p(x) for every z: DReG's encoder gradient is exactly zero,
    # while the standard IWAE estimator still carries its score-function noise (Tucker et al. 2019).
    model = _ppca(1, exact_posterior=True)
    x = torch.rand(4, 1, 2, 2)
    out = model(x, n_samples=16, generator=torch.Generator().manual_seed(2))
    log_w = log_weights(out, x)
    assert (log_w - log_w[0]).abs().max() < 1e-4  # the posterior really is exact
    norms = {}
    for dreg in (False, True):
        model.zero_grad()
        out = model(x, n_samples=16, generator=torch.Generator().manual_seed(2))
        (-k_sample_bound(out, x, dreg=dreg).mean()).backward()
        norms[dreg] = model.encoder.net[0].bias.grad.norm().item()  # type: ignore[union-attr]
    assert norms[True] < 1e-4 < norms[False]


def test_iwae_with_k1_is_exactly_the_single_sample_elbo() -> None:
    model = _ppca(2, exact_posterior=False)
    x = torch.rand(6, 1, 2, 2)
    out = model(x, n_samples=1, generator=torch.Generator().manual_seed(4))
    z = out.z
    elbo = out.px.log_prob(x) + model.prior_distribution().log_prob(z) - out.q.log_prob(z)  # (1, B): log p(x|z) - MC KL
    for dreg in (False, True):
        torch.testing.assert_close(-k_sample_bound(out, x, dreg=dreg).mean(), -elbo.mean(), rtol=0, atol=0)


def test_bigger_k_gives_a_bound_no_worse_on_average() -> None:
    model = _ppca(2, exact_posterior=False)
    x = torch.rand(5, 1, 2, 2)
    g = torch.Generator().manual_seed(0)
    means, ses = [], []
    for k in (1, 5, 50):
        runs = torch.stack([model.log_likelihood(x, k=k, generator=g).mean() for _ in range(300)])
        means.append(runs.mean().item())
        ses.append(runs.std().item() / math.sqrt(runs.shape[0]))
    for i in range(2):
        assert means[i + 1] > means[i] - 3 * math.hypot(ses[i], ses[i + 1]), (means, ses)
    assert means[2] > means[0]  # strictly tighter here: the proposal is too wide


def test_free_bits_per_group_stop_a_small_groups_gradient() -> None:
    model = _model(HVAE)
    x = torch.rand(4, 1, 28, 28).round()
    terms = elbo_terms(model(x, generator=torch.Generator().manual_seed(0)), x)
    per_group = terms.kl_per_group.mean(0)
    threshold = float(per_group.max()) + 1.0  # above both groups: the KL term has no gradient
    loss = -terms.log_px.mean() + weighted_kl(terms, free_bits_group=threshold)
    assert math.isclose(loss.item(), -terms.log_px.mean().item() + 2 * threshold, rel_tol=1e-6)


def test_dreg_is_refused_where_it_is_not_valid() -> None:
    for overrides in (HVAE, ["model.posterior=iaf"]):
        cfg = load_config(None, [*overrides, "objective.name=dreg", "objective.iw_samples=3"])
        with pytest.raises(ConfigError, match="dreg needs a one-group Gaussian posterior"):
            build_objective(cfg)


def test_kl_balancing_follows_nvae() -> None:
    from vaekit.models.bounds import ElboTerms
    from vaekit.objectives.elbo import kl_balance_coefficients

    kl = torch.tensor([[1.0, 10.0], [3.0, 30.0]])  # (B, L): group 0 carries 2 nats, group 1 20 nats
    c = kl_balance_coefficients(kl, (4, 8))
    raw = torch.tensor([2.01, 20.01]) / torch.tensor([1.0, 2.0]) * 22.02  # |KL| mean + 0.01, / alpha, * total
    torch.testing.assert_close(c, raw / raw.mean())
    terms = ElboTerms(torch.zeros(2), (kl[:, 0], kl[:, 1]), (4, 8))
    torch.testing.assert_close(weighted_kl(terms, balance=True), (c * kl.mean(0)).sum())
    torch.testing.assert_close(weighted_kl(terms, group_weights=[0.5, 1.0]), 0.5 * 2.0 + 20.0 * torch.ones(()))

"""The family objectives against their formulas: MMD against a direct double sum, the TC estimators against the exact
total correlation of a small discrete distribution, DIP's covariances against torch.cov, RAE's regularizers against
autograd, the annealed capacity, and each loss against its terms assembled by hand."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch

from vaekit.config import load_config
from vaekit.models.bounds import elbo_terms
from vaekit.models.vae import build_model
from vaekit.objectives import Batch, Knobs, Nets, build_objective
from vaekit.objectives.beta_tcvae import log_weights, tc_decomposition
from vaekit.objectives.dip_vae import dip_covariance, dip_penalty
from vaekit.objectives.wae import mmd2


def _direct_mmd(a: torch.Tensor, b: torch.Tensor, kind: str, scales: list[float]) -> float:
    def k(u: torch.Tensor, v: torch.Tensor) -> float:
        d2 = float(((u - v) ** 2).sum())
        total = 0.0
        for s in scales:
            c = 2.0 * u.shape[0] * s
            total += c / (c + d2) if kind == "imq" else math.exp(-d2 / c)
        return total

    n, m = len(a), len(b)
    qq = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pp = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    qp = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return qq + pp - 2 * qp


@pytest.mark.parametrize("kind", ["imq", "rbf"])
def test_mmd_is_the_direct_double_sum_and_near_zero_for_one_distribution(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=gen) + 1.0, torch.randn(5, 3, generator=gen)
    scales = [0.5, 1.0, 2.0]
    assert mmd2(a, b, kind, scales).item() == pytest.approx(_direct_mmd(a, b, kind, scales), rel=1e-5)
    # unbiased: over many draws from one distribution the mean is 0 within its interval, and a shift is far above
    same = torch.stack([mmd2(torch.randn(32, 4, generator=gen), torch.randn(32, 4, generator=gen), kind)
                        for _ in range(300)])
    assert abs(same.mean().item()) < 4 * same.std().item() / math.sqrt(300)
    shifted = mmd2(torch.randn(32, 4, generator=gen) + 2.0, torch.randn(32, 4, generator=gen), kind)
    assert shifted.item() > same.mean().item() + 10 * same.std().item()


def test_stratified_weights_have_1_over_n_on_the_diagonal_and_rows_summing_to_one() -> None:
    w = log_weights(64, 60_000, "stratified").double().exp()
    torch.testing.assert_close(w.diagonal(), torch.full((64,), 1 / 60_000, dtype=torch.float64))
    torch.testing.assert_close(w.sum(1), torch.ones(64, dtype=torch.float64))
    assert w[5, 6].item() == pytest.approx((60_000 - 63) / (60_000 * 63)) and w[63, 0].item() == w[5, 6].item()
    assert log_weights(8, 100, "weighted").exp().allclose(torch.full((8, 8), 1 / 800))


def _discrete_codes(n: int, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """n codes on a 2 x 2 grid drawn from a correlated distribution, and that distribution's exact TC (nats)."""
    p = torch.tensor([0.4, 0.1, 0.1, 0.4])  # cells (0,0), (0,1), (1,0), (1,1): marginals uniform, TC > 0
    cells = torch.multinomial(p, n, replacement=True, generator=gen)
    grid = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    exact = sum(float(pk) * math.log(float(pk) / 0.25) for pk in p)  # sum p log p / (p_1 p_2)
    return grid[cells], exact


def test_the_stratified_tc_estimate_is_the_exact_total_correlation() -> None:
    """Posteriors N(code, 0.01^2) around codes on a grid: q(z) is the grid distribution blurred, whose TC is the
    discrete one's. Random batches of 128 from N = 512 codes: the mean estimate within its 99.9% interval plus the
    log-of-a-ratio bias bound (Jensen; the rarest cell's count in a batch has relative sd about 0.28)."""
    gen = torch.Generator().manual_seed(0)
    codes, exact = _discrete_codes(512, gen)
    logvar = torch.full_like(codes, 2 * math.log(0.01))
    estimates = []
    for _ in range(200):
        idx = torch.randperm(512, generator=gen)[:128]
        mean = codes[idx]
        z = mean + 0.01 * torch.randn(mean.shape, generator=gen)
        _, tc, _ = tc_decomposition(z, mean, logvar[idx], log_weights(128, 512, "stratified"))
        estimates.append(tc.mean())
    est = torch.stack(estimates)
    half_width = 3.3 * est.std().item() / math.sqrt(len(est)) + 0.5 * 0.28**2
    assert abs(est.mean().item() - exact) < half_width, (est.mean().item(), exact)
    assert est.mean().item() > 0.1


def test_the_weighted_estimate_is_offset_by_d_minus_1_log_n_where_posteriors_overlap() -> None:
    gen = torch.Generator().manual_seed(1)
    codes, exact = _discrete_codes(4096, gen)
    logvar = torch.full_like(codes, 2 * math.log(0.01))
    estimates = []
    for _ in range(50):
        idx = torch.randperm(4096, generator=gen)[:256]
        z = codes[idx] + 0.01 * torch.randn(codes[idx].shape, generator=gen)
        estimates.append(tc_decomposition(z, codes[idx], logvar[idx], log_weights(256, 4096, "weighted"))[1].mean())
    offset = (2 - 1) * math.log(4096)  # D = 2: the joint's -log N against the marginals' -2 log N
    assert torch.stack(estimates).mean().item() == pytest.approx(exact + offset, abs=0.1)


def test_mi_tc_and_dwkl_add_up_to_the_monte_carlo_kl() -> None:
    gen = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(16, 5, generator=gen), 0.3 * torch.randn(16, 5, generator=gen)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(16, 5, generator=gen)
    mi, tc, dwkl = tc_decomposition(z, mean, logvar, log_weights(16, 1000, "stratified"))
    q, p = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)), torch.distributions.Normal(0.0, 1.0)
    torch.testing.assert_close(mi + tc + dwkl, (q.log_prob(z) - p.log_prob(z)).sum(-1), rtol=1e-5, atol=1e-4)


def test_dip_covariances_and_penalty() -> None:
    gen = torch.Generator().manual_seed(3)
    mean, logvar = torch.randn(50, 4, generator=gen), torch.randn(50, 4, generator=gen)
    cov_i = dip_covariance(mean, logvar, "i")
    torch.testing.assert_close(cov_i, torch.cov(mean.T, correction=0))
    torch.testing.assert_close(dip_covariance(mean, logvar, "ii"), cov_i + torch.diag(logvar.exp().mean(0)))
    want = 2.0 * sum(float(cov_i[a, b]) ** 2 for a, b in itertools.product(range(4), range(4)) if a != b)
    want += 7.0 * sum((float(cov_i[a, a]) - 1) ** 2 for a in range(4))
    assert dip_penalty(cov_i, 2.0, 7.0).item() == pytest.approx(want, rel=1e-5)


def _model_and_batch(objective: str, extra: list[str]):  # type: ignore[no-untyped-def]
    cfg = load_config(None, ["model.hidden=[16]", "model.latent_dim=3", "model.input_shape=[1, 6, 6]",
                             f"objective.name={objective}", *extra])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    x = (torch.rand(8, 1, 6, 6, generator=torch.Generator().manual_seed(4)) < 0.4).float()
    return cfg, model, x


def _loss(cfg, model, x, eps=None, step: int = 0):  # type: ignore[no-untyped-def]
    out = build_objective(cfg).loss("model", Nets(model, lambda inputs, **kw: model(inputs, **kw)),
                                    Batch(x, eps=eps), Knobs(cfg.objective.beta, step=step))
    assert out is not None
    return out


@pytest.mark.parametrize("reg", ["l2", "gp"])
def test_rae_is_reconstruction_plus_code_norm_plus_decoder_regularizer(reg: str) -> None:
    cfg, model, x = _model_and_batch("rae", [f"objective.decoder_reg={reg}", "objective.latent_l2=0.5",
                                             "objective.decoder_reg_weight=0.25"])
    out = _loss(cfg, model, x)
    z = model.encode(x).mean.detach().requires_grad_(True)
    px = model.decode(z)
    rec = -px.log_prob(x).mean()
    if reg == "l2":
        penalty = sum(p.pow(2).sum() for p in model.decoder.parameters())
    else:
        (grad,) = torch.autograd.grad(px.mean.sum(), z, create_graph=True)
        penalty = grad.pow(2).sum(-1).mean()
    want = rec + 0.5 * 0.5 * z.pow(2).sum(-1).mean() + 0.25 * penalty
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert cfg.objective.name == "rae" and out.score.shape == (8,)


def test_wae_and_info_vae_losses_are_their_terms() -> None:
    cfg, model, x = _model_and_batch("info-vae", ["objective.info_alpha=0.25", "objective.mmd_weight=3"])
    eps = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(9)
    out = _loss(cfg, model, x, eps)
    fwd = model(x, eps=eps)
    terms = elbo_terms(fwd, x)
    torch.manual_seed(9)
    mmd = mmd2(fwd.groups[0].z[0], torch.randn(8, 3), "imq", cfg.objective.mmd_scales)  # the same prior draws
    want = -terms.log_px.mean() + 0.75 * terms.kl.mean() + (0.25 + 3 - 1) * mmd
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    cfg, model, x = _model_and_batch("wae-mmd", ["objective.mmd_weight=3", "objective.mmd_kernel=rbf"])
    torch.manual_seed(9)
    out = _loss(cfg, model, x)
    z = model.encode(x).mean
    torch.manual_seed(9)
    want = -model.decode(z).log_prob(x).mean() + 3 * mmd2(z, torch.randn(8, 3), "rbf", cfg.objective.mmd_scales)
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_beta_tcvae_weighs_its_three_terms_and_needs_the_data_set_size() -> None:
    cfg, model, x = _model_and_batch("beta-tcvae", ["objective.beta=6", "objective.tc_alpha=2",
                                                    "objective.tc_gamma=0.5", "objective.dataset_size=1000"])
    eps = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(6))
    out = _loss(cfg, model, x, eps)
    mi, tc, dwkl = out.terms["mi"], out.terms["tc"], out.terms["dwkl"]
    want = -out.terms["log_px"].mean() + 2 * mi.mean() + 6 * tc.mean() + 0.5 * dwkl.mean()
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    cfg, model, x = _model_and_batch("beta-tcvae", [])
    with pytest.raises(Exception, match="dataset_size"):
        _loss(cfg, model, x)


def test_annealed_capacity_rises_to_its_maximum_and_the_loss_is_gamma_times_the_gap() -> None:
    cfg, model, x = _model_and_batch("annealed-vae", ["objective.capacity_max=20", "objective.capacity_steps=100",
                                                      "objective.capacity_gamma=30"])
    eps = torch.randn(1, 8, 3, generator=torch.Generator().manual_seed(7))
    terms = elbo_terms(model(x, eps=eps), x)
    for step, c in ((0, 0.0), (50, 10.0), (100, 20.0), (500, 20.0)):
        out = _loss(cfg, model, x, eps, step)
        want = -terms.log_px.mean() + 30 * (terms.kl.mean() - c).abs()
        assert out.loss.item() == pytest.approx(want.item(), rel=1e-5), step
        assert out.terms["capacity"][0].item() == c


def test_where_each_posterior_stands_alone_the_stratified_tc_is_log_n() -> None:
    """Codes spread apart (posterior sd 1e-6, spacing ~1/128 in a batch): q(z) is N narrow bumps, its joint and
    its marginals
    each 1/N at a sample, so its TC is log N for D = 2. The stratified weights give log N; the matrix that fills
    column 0 instead of the diagonal weighs the own posterior 1/M and gives about log M, and the weighted
    estimator log(N B)."""
    gen = torch.Generator().manual_seed(2)
    n, b = 512, 128
    codes = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    logvar = torch.full_like(codes, 2 * math.log(1e-6))
    idx = torch.randperm(n, generator=gen)[:b]
    z = codes[idx] + 1e-6 * torch.randn(b, 2, generator=gen, dtype=torch.float64)

    def tc(log_w: torch.Tensor) -> float:
        return tc_decomposition(z, codes[idx], logvar[idx], log_w.double())[1].mean().item()

    stratified, weighted = tc(log_weights(b, n, "stratified")), tc(log_weights(b, n, "weighted"))
    assert stratified == pytest.approx(math.log(n), abs=0.05)
    assert weighted == pytest.approx(math.log(n * b), abs=0.05)
    m = b - 1
    column = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    column.view(-1)[:: m + 1] = 1.0 / n  # the published matrix: steps of B walk down column 0
    column.view(-1)[1 :: m + 1] = (n - m) / (n * m)
    published = tc(column.log())
    assert published == pytest.approx(math.log(m), abs=0.1) and abs(published - math.log(n)) > 1


def test_training_fills_in_the_data_set_size(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from vaekit.training.loop import train

    cfg = load_config(None, ["objective.name=beta-tcvae", "model.hidden=[16]", "model.latent_dim=3",
                             "train.steps=3", "train.tensorboard=false", "train.samples=4", "data.imbalance=100"])
    train(cfg, tmp_path / "r", quiet=True)
    saved = load_config(str(tmp_path / "r" / "config.yaml"))
    assert saved.objective.dataset_size == 13_449  # the long-tailed MNIST split it trained on


def test_permuted_codes_keep_each_dimension_and_break_the_joint() -> None:
    from vaekit.objectives.factor_vae import permute_dims

    z = torch.arange(40.0).view(20, 2)
    z[:, 1] = z[:, 0]  # perfectly correlated
    p = permute_dims(z, torch.Generator().manual_seed(0))
    for d in range(2):
        assert sorted(p[:, d].tolist()) == sorted(z[:, d].tolist())
    assert (p[:, 0] != p[:, 1]).sum() > 15


def _critic_setup():  # type: ignore[no-untyped-def]
    from vaekit.models.discriminators import tc_critic

    cfg, model, x = _model_and_batch("factor-vae", ["objective.critic_hidden=32", "objective.critic_layers=2",
                                                    "objective.factor_gamma=5"])
    torch.manual_seed(1)
    critic = tc_critic(3, 32, 2)
    nets = Nets(model, lambda inputs, **kw: model(inputs, **kw), {"critic": critic})
    return cfg, model, x, critic, nets


def test_the_critic_gradient_stops_at_the_codes_and_the_tc_term_reaches_the_encoder() -> None:
    cfg, model, x, critic, nets = _critic_setup()
    objective, batch = build_objective(cfg), Batch(x, eps=torch.randn(1, 8, 3))
    model_out = objective.loss("model", nets, batch, Knobs(1.0))
    assert model_out is not None and "codes" in batch.memo and not batch.memo["codes"].requires_grad
    with_tc = torch.autograd.grad(model_out.loss, list(model.encoder.parameters()))
    no_tc = build_objective(replace(cfg, objective=replace(cfg.objective, factor_gamma=0.0)))
    plain = no_tc.loss("model", nets, Batch(x, eps=batch.eps), Knobs(1.0))
    assert plain is not None
    without = torch.autograd.grad(plain.loss, list(model.encoder.parameters()))
    assert any(not torch.allclose(a, b) for a, b in zip(with_tc, without, strict=True))  # TC reaches the encoder
    critic_out = objective.loss("critic", nets, batch, Knobs(1.0))
    assert critic_out is not None
    grads = torch.autograd.grad(critic_out.loss, [*model.parameters(), *critic.parameters()], allow_unused=True)
    n_model = len(list(model.parameters()))
    assert all(g is None for g in grads[:n_model])  # nothing reaches the VAE
    assert all(g is not None for g in grads[n_model:])
    # the TC term of the model's loss is gamma * mean(logit_0 - logit_1) of the critic at the codes
    with torch.no_grad():
        logits = critic(batch.memo["codes"])
    torch.testing.assert_close(model_out.terms["tc"], logits[:, 0] - logits[:, 1])


@pytest.mark.parametrize(("correlated", "low", "high"), [(True, 0.85, 1.01), (False, 0.3, 0.7)])
def test_the_critic_tells_correlated_codes_from_permuted_ones(correlated: bool, low: float, high: float) -> None:
    cfg, _, x, critic, nets = _critic_setup()
    objective = build_objective(cfg)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(2)
    accuracy = []
    for _ in range(300):
        z = torch.randn(128, 3, generator=gen)
        if correlated:
            z[:, 1] = z[:, 0] + 0.05 * torch.randn(128, generator=gen)
        out = objective.loss("critic", nets, Batch(x, memo={"codes": z}), Knobs(1.0))
        assert out is not None
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        accuracy.append(out.terms["critic_accuracy"].mean().item())
    assert low < sum(accuracy[-50:]) / 50 < high

"""The model family: one-group equality with vaekit 0.1.0, KL and density references, the registry contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.distributions as D

from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.diagnostics import group_collapse_warnings
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.blocks import BLOCKS
from vaekit.models.bounds import elbo_terms, log_weights
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture, gaussian_kl
from vaekit.models.posteriors import IAF, MADE, POSTERIORS
from vaekit.models.priors import PRIORS
from vaekit.models.vae import VAE, build_model
from vaekit.objectives.iwae import k_sample_bound
from vaekit.training.loop import train

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["v1_mlp", "v1_conv_mixture"])
def test_one_group_model_gives_the_numbers_of_vaekit_0_1(name: str) -> None:
    # Made by tests/fixtures/make_v1_reference.py with the flat one-latent VAE of commit 11beb27.
    model = VAE.from_pretrained(FIXTURES / name)
    ref = safetensors.torch.load_file(str(FIXTURES / f"{name}_reference.safetensors"))
    x, eps = ref["x"], ref["eps"]
    out = model(x, n_samples=3, eps=eps)
    terms = elbo_terms(out, x)
    assert len(out.groups) == 1 and terms.closed_form == (True,)
    # The same arithmetic as 0.1.0, up to the order of float32 sums, which differs between CPUs (the fixtures
    # were made on one machine; on an AVX-512 EPYC one log-weight of ~1600 came out one ulp apart): 1e-6
    # relative allows that and nothing else (one nat anywhere would be 6e-4).
    same = {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(terms.log_px, ref["log_px"], **same)
    torch.testing.assert_close(terms.kl_per_dim, ref["kl_per_dim"], **same)
    torch.testing.assert_close(log_weights(out, x).detach(), ref["log_w"], **same)
    torch.testing.assert_close(-k_sample_bound(out, x).mean().detach().reshape(1), ref["iwae"], **same)
    nll = model.log_likelihood(x, k=20, chunk=7, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(nll, ref["nll"], **same)
    torch.testing.assert_close(model.reconstruct(x), ref["recon"], **same)


def _model(overrides: list[str]) -> VAE:
    torch.manual_seed(0)
    return build_model(load_config("burda", [*overrides, "model.input_shape=[1, 28, 28]"]).model)


HVAE = ["model.kind=hierarchical", "model.groups=[6, 10]", "model.hidden=[32]", "model.group_hidden=[16]"]


def test_gaussian_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g))
    p = DiagonalGaussian(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g))
    expected = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(p.mean, p.std))
    torch.testing.assert_close(gaussian_kl(q, p), expected)


def test_lower_group_kl_closed_form_matches_monte_carlo() -> None:
    # The bottom group's closed-form KL given the top sample, against log q(z) - log p(z) over many
    # draws of z_1 with the top sample held fixed: within 4 standard errors.
    model = _model(HVAE)
    x = load_dataset("binarized-mnist", "test").batch(torch.arange(4))
    with torch.no_grad():
        out = model(x, n_samples=1, generator=torch.Generator().manual_seed(0))
        bottom = out.groups[1]
        closed = gaussian_kl(bottom.q, bottom.p).sum(-1)[0]  # (B,)
        z = bottom.q.rsample(20000, torch.Generator().manual_seed(1))[:, 0]  # (N, B, D): fixed top sample
        q = DiagonalGaussian(bottom.q.mean[0], bottom.q.logvar[0])
        p = DiagonalGaussian(bottom.p.mean[0], bottom.p.logvar[0])
        samples = q.log_prob(z) - p.log_prob(z)  # (N, B)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((samples.mean(0) - closed).abs() < 4 * se + 1e-4).all(), (samples.mean(0), closed, se)
    terms = elbo_terms(out, x)
    assert terms.closed_form == (True, True)
    torch.testing.assert_close(terms.kl_groups[1].sum(-1), closed)


def test_mixture_log_density_is_an_explicit_logsumexp() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    log_weights_ = torch.log_softmax(torch.randn(7, generator=g), 0)
    z = 3 * torch.randn(2, 4, 5, generator=g)
    comps = D.Independent(D.Normal(mean, torch.exp(0.5 * logvar)), 1)
    expected = torch.logsumexp(comps.log_prob(z.unsqueeze(-2)) + log_weights_, dim=-1)  # (2, 4)
    torch.testing.assert_close(GaussianMixture(mean, logvar, log_weights_).log_prob(z), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_learned_prior_log_density_against_its_components(prior: str) -> None:
    model = _model([f"model.prior={prior}", "model.prior_components=6", "model.latent_dim=4"])
    dist = model.prior_distribution()
    assert isinstance(dist, GaussianMixture) and dist.mean.shape == (6, 4)
    if prior == "vamp":  # the components are the encoder's posteriors of the pseudo-inputs
        q = model.encode(torch.sigmoid(model.prior.pseudo_logits))
        torch.testing.assert_close(dist.mean, q.mean)
    z = torch.randn(3, 4)
    explicit = torch.logsumexp(
        torch.stack([DiagonalGaussian(dist.mean[k], dist.logvar[k]).log_prob(z) for k in range(6)])
        + dist.log_weights[:, None],
        dim=0,
    )
    torch.testing.assert_close(dist.log_prob(z), explicit, rtol=1e-5, atol=1e-4)
    # it is a density: a Monte Carlo estimate of E_p[1] by importance sampling from N(0, 4I) is 1
    w = torch.distributions.Normal(0.0, 2.0)
    draws = 2 * torch.randn(400000, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ratio = torch.exp(dist.log_prob(draws) - w.log_prob(draws).sum(-1))
    assert abs(ratio.mean().item() - 1) < 4 * ratio.std().item() / math.sqrt(len(ratio)) + 1e-3


def test_iaf_log_determinant_matches_the_autograd_jacobian() -> None:
    torch.manual_seed(0)
    flow = IAF(dim=5, context_dim=3, hidden=24, steps=3)
    z0, h = torch.randn(5), torch.randn(3)
    jac = torch.autograd.functional.jacobian(lambda z: flow(z[None, None], h[None])[0][0, 0], z0)
    _, log_det = flow(z0[None, None], h[None])
    torch.testing.assert_close(log_det[0, 0], torch.linalg.slogdet(jac).logabsdet, rtol=1e-5, atol=1e-5)


def test_made_is_autoregressive() -> None:
    torch.manual_seed(0)
    made = MADE(dim=6, context=2, hidden=30)
    jac = torch.autograd.functional.jacobian(
        lambda z: torch.cat(made(z[None], torch.zeros(1, 2))).flatten(), torch.randn(6)
    )
    m_jac, s_jac = jac[:6], jac[6:]
    assert torch.equal(torch.triu(m_jac) != 0, torch.zeros(6, 6, dtype=torch.bool))  # output d sees only z_<d
    assert torch.equal(torch.triu(s_jac) != 0, torch.zeros(6, 6, dtype=torch.bool))
    assert (torch.tril(m_jac, -1) != 0).sum() > 0


def test_hierarchy_uses_one_noise_stream_and_given_eps() -> None:
    model = _model(HVAE)
    x = torch.rand(3, 1, 28, 28)
    eps = torch.randn(2, 3, model.latent_dim, generator=torch.Generator().manual_seed(4))
    a = elbo_terms(model(x, eps=eps), x).neg_elbo
    b = elbo_terms(model(x, eps=eps), x).neg_elbo
    assert torch.equal(a, b)
    c = elbo_terms(model(x, n_samples=2, generator=torch.Generator().manual_seed(4)), x).neg_elbo
    assert torch.equal(a, c)  # the generator draws exactly the (S, B, sum D_l) tensor
    out = model(x, eps=eps)
    assert [g.z.shape for g in out.groups] == [(2, 3, 6), (2, 3, 10)]


def test_group_collapse_warning_names_the_group_and_the_remedy() -> None:
    found = group_collapse_warnings([0.01, 3.2, 12.0])
    assert len(found) == 1 and "top group carries 0.010 nats" in found[0] and "free_bits_group" in found[0]
    assert group_collapse_warnings([1.0, 0.02])[0].startswith("group 2 of 2 from the top carries 0.020")


def test_hierarchy_config_errors_are_one_line() -> None:
    with pytest.raises(ConfigError, match="needs model.groups"):
        load_config(None, ["model.kind=hierarchical"])
    with pytest.raises(ConfigError, match="one downsampling factor per group"):
        load_config(None, ["model.kind=hierarchical", "model.groups=[4, 4]", "model.block=resconv"])
    with pytest.raises(ConfigError, match="applies to one-group models"):
        load_config(None, ["model.kind=hierarchical", "model.groups=[4]", "model.posterior=iaf"])
    with pytest.raises(ConfigError, match="unknown prior 'nope'; valid: mog, standard-normal, vamp"):
        _model(["model.prior=nope"])


# --- the contract: every prior, posterior and block trains, reloads, and bounds its NLL -------

CONTRACT = {
    **{f"prior={name}": [f"model.prior={name}", "model.prior_components=8"] for name in PRIORS.names()},
    **{f"posterior={name}": [f"model.posterior={name}"] for name in POSTERIORS.names()},
    "block=mlp": [*HVAE, "model.block=mlp"],
    "block=mlp prior=vamp": [*HVAE, "model.prior=vamp", "model.prior_components=8"],
    "block=resconv": [
        "model.kind=hierarchical",
        "model.block=resconv",
        "model.groups=[2, 2]",
        "model.group_scales=[4, 2]",
        "model.width=8",
        "model.res_blocks=1",
    ],
}
assert {k.split()[0] for k in CONTRACT if k.startswith("block=")} == {f"block={b}" for b in BLOCKS.names()}


@pytest.fixture(scope="module")
def binary_digits(tmp_path_factory: pytest.TempPathFactory) -> str:
    images = load_dataset("binarized-mnist", "test").images[:400, 0].numpy()  # the fixed binarized draw, 0/1
    path = tmp_path_factory.mktemp("data") / "digits.npy"
    np.save(path, images.astype(np.uint8) * 255)
    return str(path)


@pytest.mark.parametrize("entry", list(CONTRACT))
def test_every_registry_entry_trains_reloads_and_bounds_its_nll(entry: str, binary_digits: str, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            f"data.name={binary_digits}",
            "data.val_size=100",
            "model.hidden=[32]",
            "model.latent_dim=6",
            "train.batch_size=32",
            "train.steps=50",
            "train.samples=4",
            "train.eval_batch_size=100",
            *CONTRACT[entry],
        ],
    )
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.steps == 50
    val = load_dataset(binary_digits, "val", val_size=100)
    scored = evaluate(result.model, val, iw_samples=64)
    assert math.isfinite(scored.neg_elbo) and scored.neg_elbo < 543.0  # below an untrained model's ~550 nats
    assert scored.nll is not None and scored.nll <= scored.neg_elbo, (scored.nll, scored.neg_elbo)
    assert len(scored.kl_per_group) == len(result.model.group_dims)
    loaded = VAE.from_pretrained(tmp_path / "run")
    assert type(loaded) is type(result.model)
    x = val.batch(torch.arange(8))
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(loaded.reconstruct(x), result.model.reconstruct(x))
    assert torch.equal(
        loaded.elbo(x, 2, gen()).neg_elbo, result.model.elbo(x, 2, gen()).neg_elbo
    )
    assert torch.equal(loaded.sample(4, 0.7, gen()), result.model.sample(4, 0.7, gen()))


# --- every model kind: exact resume with IWAE, a KL schedule, free bits and EMA; bf16 ------------

KIND_CASES = {
    "hierarchical mlp": HVAE,
    "hierarchical resconv": CONTRACT["block=resconv"],
    "iaf": ["model.posterior=iaf"],
    "vamp": ["model.prior=vamp", "model.prior_components=8"],
    "hierarchical stabilized": [  # every deep-model stabilizer at once
        *HVAE, "objective.kl_balance=true", "objective.group_warmup_steps=[20, 10]", "objective.spectral_reg=0.01",
        "model.scale_param=softplus", "model.posterior_offset_max=3.0",
    ],
}


def _kind_cfg(data: str, case: str, extra: list[str]):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"data.name={data}", "data.val_size=100", "model.hidden=[32]", "model.latent_dim=6",
            "train.batch_size=32", "train.epochs=3", "train.checkpoint_every=7", "train.keep_checkpoints=50",
            "train.samples=4", "guard.ema_decay=0.9", "objective.kl_schedule=linear", "objective.kl_warmup_steps=20",
            "objective.free_bits_group=0.2", *KIND_CASES[case], *extra,
        ],
    )


@pytest.mark.parametrize("case", list(KIND_CASES))
def test_every_kind_resumes_exactly_with_iwae_schedules_and_ema(case: str, binary_digits: str, tmp_path: Path) -> None:
    iwae = ["objective.name=iwae", "objective.iw_samples=2"]
    full = train(_kind_cfg(binary_digits, case, iwae), tmp_path / "full", quiet=True)
    train(_kind_cfg(binary_digits, case, [*iwae, "train.steps=14"]), tmp_path / "part", quiet=True)
    resumed = train(_kind_cfg(binary_digits, case, iwae), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps == 30
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("case", list(KIND_CASES))
def test_every_kind_trains_in_bf16_close_to_fp32(case: str, binary_digits: str, tmp_path: Path) -> None:
    fp32 = train(_kind_cfg(binary_digits, case, []), tmp_path / "a", quiet=True)
    bf16 = train(_kind_cfg(binary_digits, case, ["train.precision=bf16"]), tmp_path / "b", quiet=True)
    val = load_dataset(binary_digits, "val", val_size=100)
    a, b = evaluate(fp32.model, val).neg_elbo, evaluate(bf16.model, val).neg_elbo
    assert math.isfinite(b) and abs(a - b) / a < 0.03, (a, b)


# --- bits-back over every group ----------------------------------------------------------------


@pytest.mark.parametrize("block", ["mlp", "resconv"])
def test_hierarchy_codes_bit_exactly_at_about_its_negative_elbo(block: str) -> None:
    from vaekit.apps.compress import bbans

    extra = HVAE if block == "mlp" else CONTRACT["block=resconv"]
    model = _model([*extra, "model.likelihood=logistic-mixture", "model.mixture_components=2"])
    images = load_dataset("mnist", "test").images[:12].numpy()
    words = bbans.encode_images(model, images, bbans.KIND_8BIT)
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_8BIT, images.shape), images)
    with torch.no_grad():
        nats = model.elbo(torch.from_numpy(images).float() / 255, n_samples=64).neg_elbo
    # what the last 8 images add to the file, against their -ELBO
    head = bbans.encode_images(model, images[:4], bbans.KIND_8BIT)
    bits = (words.size - head.size) * 32 / 8
    expected = nats[4:].mean().item() / math.log(2)
    assert abs(bits - expected) / expected < 0.05, (bits, expected)
    # and the first ones too: the stack starts with enough random words (counted apart, a one-time cost) to
    # borrow their z from; with 16 words the first images of a many-latent model popped from a dry stack and
    # cost many times their -ELBO (a 150-latent hvae: ~17,000 bits for its first binarized digit)
    first = (head.size - bbans.seed_words(model)) * 32
    expected = nats[:4].sum().item() / math.log(2)
    assert abs(first - expected) / expected < 0.1, (first, expected)


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_mixture_priors_code_their_component_first_bit_exactly(prior: str) -> None:
    from vaekit.apps.compress import bbans

    model = _model([f"model.prior={prior}", "model.prior_components=4", "model.latent_dim=6",
                    "model.likelihood=logistic-mixture", "model.mixture_components=2"])
    images = load_dataset("mnist", "test").images[:10].numpy()
    words = bbans.encode_images(model, images, bbans.KIND_8BIT)
    assert np.array_equal(bbans.decode_images(model, words, bbans.KIND_8BIT, images.shape), images)
    head = bbans.encode_images(model, images[:3], bbans.KIND_8BIT)
    with torch.no_grad():
        x = torch.from_numpy(images[3:]).float() / 255
        nats = model.elbo(x, n_samples=64).neg_elbo.mean().item()
    bits = (words.size - head.size) * 32 / 7
    # the component costs KL(q(k|x) || p(k|z)) on top of the -ELBO: small, and never a saving
    assert -0.02 < (bits - nats / math.log(2)) / (nats / math.log(2)) < 0.05, (bits, nats / math.log(2))


def test_flows_are_refused_by_the_coder_in_one_line() -> None:
    from vaekit.apps.compress import bbans
    from vaekit.errors import VaekitError

    with pytest.raises(VaekitError, match="'iaf' posterior flow has no density at arbitrary z"):
        bbans.kind_for(_model(["model.posterior=iaf"]))


# --- deep-model stabilizers ----------------------------------------------------------------------


def test_spectral_penalty_estimates_the_largest_singular_values() -> None:
    from vaekit.training.regularizers import SpectralPenalty

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Conv2d(3, 4, 3))
    penalty = SpectralPenalty(net, 0.1)
    for _ in range(200):
        value = penalty()
    exact = sum(torch.linalg.matrix_norm(p.detach().flatten(1), 2) for n, p in net.named_parameters() if "weight" in n)
    torch.testing.assert_close(value.detach(), 0.1 * exact, rtol=1e-4, atol=1e-5)
    value.backward()
    assert net[0].weight.grad is not None and net[1].weight.grad is not None


def test_softplus_scales_and_a_bounded_posterior_offset() -> None:
    model = _model([*HVAE, "model.scale_param=softplus", "model.posterior_offset_max=0.5"])
    assert torch.allclose(model.raw_logvar(torch.zeros(3)), torch.zeros(3), atol=1e-5)  # raw 0: unit scale
    big = model.raw_logvar(torch.tensor([30.0]))
    assert math.isclose(float(torch.exp(0.5 * big)), 30.5413, rel_tol=1e-3)  # linear, not exponential
    out = model(torch.rand(4, 1, 28, 28), n_samples=2)
    bottom = out.groups[1]
    assert ((bottom.q.mean - bottom.p.mean).abs() < 0.5).all()
    assert ((bottom.q.logvar - bottom.p.logvar).abs() < 0.5 + 1e-4).all()


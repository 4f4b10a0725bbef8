"""Latent groups hold any posterior and prior with the `Posterior` / `PriorDistribution` methods (models/outputs.py):
the Gaussians' exact KL and pairwise densities against references, and a categorical kind written here, in the test,
trained, evaluated, saved and reloaded by the unchanged trainer, evaluation and guards (issue 40, point 4)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from vaekit.config import ModelConfig, load_config
from vaekit.evaluation.diagnostics import mutual_information
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.base import BaseVAE
from vaekit.models.bounds import elbo_terms
from vaekit.models.distributions import DiagonalGaussian, GaussianMixture, StandardNormal
from vaekit.models.likelihoods import PixelDistribution
from vaekit.models.outputs import LatentGroup, VAEOutput
from vaekit.models.vae import KINDS, load_model
from vaekit.training.loop import train

K = 4  # classes per categorical variable


def _gaussian(b: int, d: int, seed: int) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen))


def test_gaussian_kl_is_exact_against_torch_distributions() -> None:
    q, p = _gaussian(5, 3, 0), _gaussian(5, 3, 1)
    torch_q = Normal(q.mean, q.std)
    exact_p = q.kl(p)
    exact_std = q.kl(StandardNormal(3))
    assert exact_p is not None and exact_std is not None
    torch.testing.assert_close(exact_p, kl_divergence(torch_q, Normal(p.mean, p.std)))
    torch.testing.assert_close(exact_std, kl_divergence(torch_q, Normal(torch.zeros(5, 3), torch.ones(5, 3))))
    mixture = GaussianMixture(torch.zeros(2, 3), torch.zeros(2, 3), torch.log(torch.tensor([0.5, 0.5])))
    assert q.kl(mixture) is None  # no closed form: the bounds estimate it by Monte Carlo


def test_cross_log_prob_is_every_sample_against_every_posterior() -> None:
    q, z = _gaussian(6, 4, 2), torch.randn(9, 4, generator=torch.Generator().manual_seed(3))
    want = Independent(Normal(q.mean, q.std), 1).log_prob(z[:, None, :])  # (9, 6) by broadcasting
    torch.testing.assert_close(q.cross_log_prob(z), want.double(), rtol=1e-5, atol=1e-5)


def test_mutual_information_over_batches_equals_one_posterior() -> None:
    q = _gaussian(288, 3, 4)  # parts of 96 x 3 draws: torch's CPU normal_ transforms 16 at a time, so the split
    # draws the same numbers as the whole only when each part is a multiple of 16 draws
    parts = [DiagonalGaussian(m, lv) for m, lv in zip(q.mean.split(96), q.logvar.split(96), strict=True)]
    whole = mutual_information(q, torch.Generator().manual_seed(0), limit=250)
    split = mutual_information(parts, torch.Generator().manual_seed(0), limit=250)
    assert whole == pytest.approx(split, abs=1e-9)


# --- a categorical kind, written as a user or the VQ issue would, touching no vaekit module --------------------


class OneHotCategorical:
    """D categorical variables of K classes each; z is their one-hot codes, flattened to (..., D * K)."""

    def __init__(self, logits: Tensor) -> None:
        self.log_probs = logits.log_softmax(-1)  # (..., D, K)

    @property
    def mean(self) -> Tensor:
        return self.log_probs.exp().flatten(-2)

    def rsample(self, n_samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """One-hot draws forward, the probabilities' gradient backward (straight-through)."""
        probs = self.log_probs.exp()
        idx = torch.multinomial(probs.detach().reshape(-1, K), n_samples, replacement=True, generator=generator)
        hard = F.one_hot(idx.T.reshape(n_samples, *probs.shape[:-1]), K).to(probs.dtype)  # (S, ..., D, K)
        return (hard + probs - probs.detach()).flatten(-2)

    def log_prob(self, z: Tensor) -> Tensor:
        return (z.unflatten(-1, (-1, K)) * self.log_probs).sum((-1, -2))

    def cross_log_prob(self, z: Tensor) -> Tensor:
        return z.double() @ self.log_probs.flatten(-2).double().T

    def kl(self, prior: object) -> Tensor | None:
        """KL to the uniform prior per (variable, class) coordinate: p log(p K), summing to the exact KL."""
        if not isinstance(prior, UniformCategorical):
            return None
        return (self.log_probs.exp() * (self.log_probs + math.log(K))).flatten(-2)

    def detach(self) -> OneHotCategorical:
        return OneHotCategorical(self.log_probs.detach())


class UniformCategorical:
    def __init__(self, variables: int) -> None:
        self.variables = variables

    def log_prob(self, z: Tensor) -> Tensor:
        return z.new_full(z.shape[:-1], -self.variables * math.log(K))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return F.one_hot(torch.randint(K, (n, self.variables), generator=generator), K).float().flatten(-2)


class CategoricalVAE(BaseVAE):
    """`model.latent_dim` categorical variables of K classes over small MLPs."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        c, h, w = self.shape
        self.variables, self.latent_dim = cfg.latent_dim, cfg.latent_dim * K
        self.group_dims = (self.latent_dim,)
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, self.latent_dim))
        self.decoder = nn.Sequential(nn.Linear(self.latent_dim, 32), nn.ReLU(),
                                     nn.Linear(32, self.likelihood_channels * h * w))

    def encode(self, x: Tensor, y: Tensor | None = None) -> OneHotCategorical:  # type: ignore[override]
        return OneHotCategorical(self.encoder(x).unflatten(-1, (self.variables, K)))

    def decode(self, z: Tensor, y: Tensor | None = None) -> PixelDistribution:
        return self.likelihood(self.decoder(z).view(*z.shape[:-1], self.likelihood_channels, *self.shape[1:]))

    def forward(self, x: Tensor, n_samples: int = 1, generator: torch.Generator | None = None,
                eps: Tensor | None = None, y: Tensor | None = None) -> VAEOutput:
        q = self.encode(x)
        z = q.rsample(n_samples, generator)
        return VAEOutput(groups=(LatentGroup(q=q, p=UniformCategorical(self.variables), z=z),), px=self.decode(z))

    def sample_latents(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
                       y: Tensor | None = None, top: Tensor | None = None) -> Tensor:
        return UniformCategorical(self.variables).sample(n, generator).to(self.device)


@pytest.fixture
def categorical_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS._entries, "categorical", CategoricalVAE)


@pytest.fixture
def tiny(tmp_path: Path) -> str:
    path = tmp_path / "tiny.npy"
    np.save(path, (np.random.default_rng(0).random((256, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return str(path)


def test_a_categorical_kind_trains_evaluates_and_reloads(categorical_kind: None, tiny: str, tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.name={tiny}", "data.val_size=0", "train.batch_size=32", "train.steps=60",
                             "train.log_every=10", "train.samples=4", "train.tensorboard=false",
                             "model.kind=categorical", "model.latent_dim=3"])
    result = train(cfg, tmp_path / "run", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert result.steps == 60 and all(np.isfinite(r["neg_elbo"]) for r in train_rows)
    assert not any(r["kind"] == "rollback" for r in rows)
    assert train_rows[-1]["neg_elbo"] < train_rows[0]["neg_elbo"]  # it learns
    x = torch.from_numpy(np.load(tiny)[:64]).float().div(255).unsqueeze(1)
    q = result.model.encode(x)
    terms = elbo_terms(result.model(x), x)
    exact = kl_divergence(Categorical(logits=q.log_probs), Categorical(logits=torch.zeros(64, 3, K))).sum(-1)
    torch.testing.assert_close(terms.kl, exact)  # the exact KL, through the bounds' generic path
    assert terms.closed_form == (True,)
    loaded = load_model(tmp_path / "run")
    assert isinstance(loaded, CategoricalVAE)
    for (k, a), b in zip(result.model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    from vaekit.data.datasets import load_dataset
    ev = evaluate(loaded, load_dataset(tiny, "all"), batch_size=64)
    assert np.isfinite(ev.neg_elbo) and ev.kl_estimate == ["closed-form"]
    assert ev.mutual_info is not None and 0 <= ev.mutual_info <= 3 * math.log(K) + 0.05  # I(x; z) <= H(z)

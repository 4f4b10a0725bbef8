"""The disentanglement metrics on oracles: the true factors as the code score at the top, random codes near chance or
zero, a permuted and rescaled oracle the same as the oracle; MIG about 0.90 on dSprites' grid; one-line errors."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from vaekit.data.datasets import Dataset, load_dataset
from vaekit.errors import DataError
from vaekit.evaluation.disentanglement import FactorData, dci, mig, score_codes, table_codes

SIZES = (3, 4, 5, 6)  # a small full factor grid, each combination 4 times


@pytest.fixture(scope="module")
def grid() -> Dataset:
    factors = torch.tensor(list(itertools.product(*[range(s) for s in SIZES]))).repeat(4, 1)
    return Dataset("grid", "train", torch.zeros(len(factors), 1, 2, 2, dtype=torch.uint8), factors=factors)


@pytest.fixture(scope="module")
def oracle_scores(grid: Dataset) -> dict[str, float]:
    assert grid.factors is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return score_codes(table_codes(grid.factors.double()), grid, fast=True)


def test_the_true_factors_score_at_the_top(oracle_scores: dict[str, float]) -> None:
    s = oracle_scores
    assert s["beta_vae"] >= 0.98 and s["factor_vae"] == 1.0 and s["factor_vae_active_codes"] == 4
    assert s["mig"] > 0.9 and s["disentanglement"] > 0.95 and s["completeness"] > 0.95
    assert s["informativeness"] > 0.98 and s["modularity"] > 0.95 and s["explicitness"] > 0.9
    assert s["sap"] > 0.2 and s["mode"] == "fast"


def test_random_codes_score_near_chance(grid: Dataset) -> None:
    codes = table_codes(torch.randn(len(grid), 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = score_codes(codes, grid, fast=True)
    chance = 1 / len(SIZES)
    assert abs(s["beta_vae"] - chance) < 0.08 and abs(s["factor_vae"] - chance) < 0.08
    assert s["mig"] < 0.05 and s["disentanglement"] < 0.15 and s["sap"] < 0.05 and abs(s["explicitness"] - 0.5) < 0.06


def test_a_permuted_and_rescaled_oracle_scores_as_the_oracle(grid: Dataset, oracle_scores: dict[str, float]) -> None:
    assert grid.factors is not None
    scale = torch.tensor([0.5, 7.0, 2.0, 300.0], dtype=torch.float64)  # sds stay above FactorVAE's 0.05 prune
    permuted = (grid.factors.double() * scale)[:, [2, 0, 3, 1]] - 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = score_codes(table_codes(permuted), grid, fast=True)
    for key in ("mig", "factor_vae", "modularity"):
        assert s[key] == pytest.approx(oracle_scores[key], abs=1e-9), key  # invariant by construction
    for key in ("beta_vae", "disentanglement", "completeness", "informativeness", "explicitness"):
        assert s[key] == pytest.approx(oracle_scores[key], abs=0.03), key
    # SAP is not scale-free: disentanglement_lib's linear SVM (C = 0.01) regularizes each code's weight and intercept
    assert s["sap"] > 0.2


def test_dci_fitted_in_two_processes_equals_one() -> None:
    rng = np.random.default_rng(0)
    factors = rng.integers(0, [2, 5, 7], size=(600, 3))
    codes = factors + rng.normal(0, 0.7, size=factors.shape)
    train, test = (codes[:400], factors[:400]), (codes[400:], factors[400:])
    alone, shared = dci(train, test, jobs=1), dci(train, test, jobs=2)
    assert alone == shared  # each factor's fit is seeded; only where it runs differs
    assert alone["informativeness"] > 0.5 and alone["disentanglement"] > 0.3  # and the scores mean something


def test_the_oracle_mig_on_dsprites_grid_is_about_0_90() -> None:
    """20 equal-width bins: scale (6 values) and shape keep all their entropy, orientation (40) and positions (32)
    lose some, so MIG is about (1 + 1 + log 20 / log 40 + 2 log 20 / log 32) / 5 = 0.908."""
    data = load_dataset("dsprites-like")
    assert data.factors is not None
    index = np.random.default_rng(0).integers(0, len(data), 10_000)
    factors = data.factors.numpy()[index]
    assert mig(factors.astype(np.float64), factors) == pytest.approx(0.90, abs=0.02)


def test_data_without_factors_or_too_few_points_is_a_one_line_error(grid: Dataset) -> None:
    with pytest.raises(DataError, match="generative factors"):
        FactorData.of(load_dataset("mnist", "test"), 128)
    with pytest.raises(DataError, match="has 20 examples"):
        FactorData.of(grid.subset(torch.arange(20)), 128)
    out = subprocess.run([sys.executable, "-m", "vaekit", "eval", "mlp-mnist", "--disentanglement"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "generative factors" in out.stderr and len(out.stderr.strip().splitlines()) == 1

"""Ex-post latent samplers (apps/samplers): the GMM's draws against the fitted mixture's moments, every covariance
type, storage round trips, the two-stage VAE learning its latents, and the commands that fit and draw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.apps.samplers import draw_images, fit_sampler, load_sampler, save_sampler
from vaekit.apps.samplers.gmm import GmmSampler
from vaekit.apps.samplers.two_stage import TwoStageSampler
from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.errors import CheckpointError, ConfigError
from vaekit.training.loop import train

pytest.importorskip("sklearn")


def _two_clusters(n: int = 4000, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n // 4, 3, generator=gen) * torch.tensor([0.5, 1.0, 0.2]) + torch.tensor([3.0, 0.0, -1.0])
    b = torch.randn(3 * n // 4, 3, generator=gen) @ torch.tensor([[1.0, 0.5, 0], [0, 1.0, 0], [0, 0, 0.3]])
    return torch.cat([a, b])


def test_gmm_draws_match_the_fitted_mixtures_mean_and_covariance() -> None:
    sampler = GmmSampler.fit(_two_clusters(), components=2)
    w, mu, tril = sampler.weights, sampler.means, sampler.scale_tril
    cov_k = tril @ tril.transpose(-1, -2)
    mean = (w[:, None] * mu).sum(0)
    cov = (w[:, None, None] * (cov_k + mu[:, :, None] * mu[:, None, :])).sum(0) - mean[:, None] * mean[None, :]
    n = 40_000
    z = sampler.draw(n, torch.Generator().manual_seed(1)).double()
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 4 * se_mean).all(), (z.mean(0), mean)
    sample_cov = torch.cov(z.T)
    fourth = (((z - mean) ** 2).T @ ((z - mean) ** 2)) / n  # E[(z_i - m_i)^2 (z_j - m_j)^2]
    se_cov = ((fourth - cov**2).clamp_min(0) / n).sqrt()
    assert ((sample_cov - cov).abs() < 5 * se_cov + 1e-9).all(), (sample_cov, cov)


@pytest.mark.parametrize("covariance", ["full", "diag", "tied", "spherical"])
def test_every_covariance_type_fits_and_round_trips(covariance: str) -> None:
    sampler = GmmSampler.fit(_two_clusters(1000), components=3, covariance=covariance)
    again = GmmSampler.from_tensors(sampler.tensors(), sampler.info)
    a, b = (s.draw(50, torch.Generator().manual_seed(0)) for s in (sampler, again))
    assert torch.equal(a, b) and a.shape == (50, 3) and torch.isfinite(a).all()


def test_two_stage_vae_learns_the_latents_distribution() -> None:
    latents = _two_clusters(4000)
    sampler = TwoStageSampler.fit(latents, epochs=15)
    z = sampler.draw(4000, torch.Generator().manual_seed(0))
    assert (z.mean(0) - latents.mean(0)).abs().max() < 0.25
    assert ((z.std(0) / latents.std(0)) - 1).abs().max() < 0.25
    again = TwoStageSampler.from_tensors(sampler.tensors(), sampler.info)
    torch.testing.assert_close(again.draw(10, torch.Generator().manual_seed(3)),
                               sampler.draw(10, torch.Generator().manual_seed(3)))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("samplers")
    np.save(folder / "tiny.npy", (np.random.default_rng(0).random((300, 8, 8)) < 0.3).astype(np.uint8) * 255)
    cfg = load_config(None, [f"data.name={folder / 'tiny.npy'}", "data.val_size=0", "train.steps=30",
                             "train.batch_size=50", "model.hidden=[32]", "model.latent_dim=3",
                             "train.tensorboard=false", "train.samples=4"])
    train(cfg, folder / "run", quiet=True)
    return folder


def test_fit_save_load_and_draw_through_the_python_api(run: Path) -> None:
    from vaekit.models.vae import load_model

    model = load_model(run / "run")
    data = load_dataset(str(run / "tiny.npy"), "all")
    sampler = fit_sampler(model, data, "gmm", components=2)
    assert "3 dims" in sampler.info["fits"]
    path = save_sampler(sampler, run / "run")
    assert path.parent == run / "run" / "model"
    loaded = load_sampler(run / "run", "gmm")
    assert loaded is not None and torch.equal(loaded.tensors()["means"], sampler.tensors()["means"])
    images = draw_images(model, 5, loaded, torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert load_sampler(run / "run", "prior") is None


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True)


def test_fit_sampler_and_sample_commands(run: Path) -> None:
    out = _cli("fit-sampler", str(run / "run"), "--sampler", "two-stage", "--epochs", "2")
    assert out.returncode == 0, out.stderr
    assert (run / "run" / "model" / "sampler-two-stage.safetensors").is_file()
    out = _cli("sample", str(run / "run"), "--sampler", "two-stage", "--n", "8", "-o", str(run / "s.png"))
    assert out.returncode == 0 and (run / "s.png").is_file(), out.stderr


def test_missing_sampler_and_no_feature_network_are_one_line_errors(run: Path, tmp_path: Path) -> None:
    from vaekit.models.vae import load_model

    load_model(run / "run").save_pretrained(tmp_path / "exported")  # a model folder with no sampler fitted
    with pytest.raises(CheckpointError, match="vaekit fit-sampler .* --sampler gmm"):
        load_sampler(tmp_path / "exported", "gmm")
    with pytest.raises(ConfigError, match="unknown sampler 'gmn'; valid: gmm, two-stage"):
        load_sampler(tmp_path / "exported", "gmn")
    out = _cli("sample", str(run / "run"), "--sampler", "two-stage", "--temperature", "0.5", "-o",
               str(tmp_path / "x.png"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--temperature" in out.stderr
    out = _cli("eval", str(run / "run"), "--quality", "--samples", "100")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no shipped feature network" in out.stderr


def test_a_top_group_sampler_draws_the_top_and_the_lower_groups_from_their_priors(run: Path) -> None:
    from dataclasses import replace

    from vaekit.apps.samplers import latent_draws
    from vaekit.models.vae import build_model

    cfg = load_config(None, ["model.kind=hierarchical", "model.groups=[3, 4]", "model.group_hidden=[16]",
                             "model.hidden=[32]"]).model
    torch.manual_seed(0)
    model = build_model(replace(cfg, input_shape=[1, 8, 8])).eval()
    data = load_dataset(str(run / "tiny.npy"), "all")
    top = fit_sampler(model, data, "gmm", groups="top", components=2)
    assert top.info["groups"] == "top" and "(3 dims)" in top.info["fits"]
    draws = latent_draws(model, top)(6, torch.Generator().manual_seed(1))
    assert draws.shape == (6, 7)
    torch.testing.assert_close(draws[:, :3], top.draw(6, torch.Generator().manual_seed(1)))
    folder = run / "hier"
    model.save_pretrained(folder)
    assert save_sampler(top, folder).name == "sampler-gmm-top.safetensors"
    loaded = load_sampler(folder, "gmm-top")
    assert loaded is not None and loaded.info["groups"] == "top"
    assert draw_images(model, 4, loaded, torch.Generator().manual_seed(0)).shape == (4, 1, 8, 8)
    flat = load_config(None, ["model.hidden=[32]", "model.latent_dim=3"]).model
    with pytest.raises(ConfigError, match="one latent group"):
        fit_sampler(build_model(replace(flat, input_shape=[1, 8, 8])), data, "gmm", groups="top")

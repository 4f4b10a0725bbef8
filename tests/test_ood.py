"""Out-of-distribution scores: each method against its definition, the background model's noise, the CLI."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.apps.score import code_length_nats, ood_scores, score, typical_entropy, typicality
from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.errors import VaekitError
from vaekit.models.vae import VAE, build_model


def _model() -> VAE:
    torch.manual_seed(0)
    cfg = load_config("mlp", ["model.hidden=[32]", "model.latent_dim=4", "model.input_shape=[1, 28, 28]"])
    return build_model(cfg.model)


def test_complexity_subtracts_the_png_code_length_in_nats() -> None:
    model, data = _model(), load_dataset("mnist", "test").subset(torch.arange(6))
    buffer = io.BytesIO()
    Image.fromarray(data.images[2, 0].numpy()).save(buffer, format="PNG", optimize=True, compress_level=9)
    assert math.isclose(float(code_length_nats(data)[2]), 8 * len(buffer.getvalue()) * math.log(2), rel_tol=1e-6)
    expected = score(model, data) - code_length_nats(data)
    torch.testing.assert_close(ood_scores(model, data, "complexity"), expected)
    assert (code_length_nats(data, "webp") > 0).all()


def test_ratio_is_the_difference_of_two_models_and_needs_its_background() -> None:
    model, data = _model(), load_dataset("mnist", "test").subset(torch.arange(6))
    torch.manual_seed(1)
    background = build_model(model.cfg)
    torch.testing.assert_close(ood_scores(model, data, "ratio", background=background),
                               score(model, data) - score(background, data))
    with pytest.raises(VaekitError, match="needs a background model"):
        ood_scores(model, data, "ratio")


def test_typicality_is_the_distance_to_the_training_entropy() -> None:
    nll = torch.tensor([1.0, 5.0, 3.0, 9.0])
    torch.testing.assert_close(typicality(nll, 4.0), torch.tensor([3.0, 1.0, 1.0, 5.0]))
    order = torch.randperm(4, generator=torch.Generator().manual_seed(0))  # the batches: a fixed random grouping
    torch.testing.assert_close(typicality(nll, 4.0, batch=2), (nll[order].view(2, 2).mean(1) - 4.0).abs())
    model = _model()
    train = load_dataset("mnist", "train").subset(torch.arange(300))
    assert math.isclose(typical_entropy(model, train), float(score(model, train).mean()), rel_tol=1e-5)


def test_background_noise_replaces_the_asked_fraction_of_pixels() -> None:
    from dataclasses import replace

    data = replace(load_dataset("mnist", "test").subset(torch.arange(200)), noise=0.3)
    clean = replace(data, noise=0.0).batch(torch.arange(200))
    noisy = data.batch(torch.arange(200), torch.Generator().manual_seed(0))
    changed = (noisy != clean).float().mean().item()
    assert 0.27 < changed < 0.31, changed  # 0.3, less the rare draws that hit the pixel's own level


def test_cli_scores_each_method_with_an_auroc(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "in.npy", (rng.random((120, 28, 28)) < 0.2).astype(np.uint8) * 255)
    np.save(tmp_path / "out.npy", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    cmd = [sys.executable, "-m", "vaekit"]
    base = ["--steps", "20", "--set", "model.hidden=[16]", "--set", "model.latent_dim=2", "--quiet"]
    for run, extra in (("run", []), ("bg", ["--set", "data.noise=0.2"])):
        done = subprocess.run([*cmd, "train", "--data", str(tmp_path / "in.npy"), "--run-dir", str(tmp_path / run),
                               *base, *extra], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    for method, extra in (("nll", []), ("complexity", ["--compressor", "png"]),
                          ("ratio", ["--background", str(tmp_path / "bg")]), ("typicality", [])):
        out = subprocess.run([*cmd, "score", str(tmp_path / "run"), "--ood", str(tmp_path / "out.npy"), "--method",
                              method, *extra, "-o", str(tmp_path / f"{method}.csv"), "--json"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, (method, out.stderr)
        payload = json.loads(out.stdout)
        assert payload["method"] == method and 0 <= payload["auroc"] <= 1
        rows = (tmp_path / f"{method}.csv").read_text().splitlines()
        assert len(rows) == 1 + 6 + 40  # header, the run's 6 held-out images (5% of 120), the OOD set
    bad = subprocess.run([*cmd, "score", str(tmp_path / "run"), "--method", "ratio"], capture_output=True, text=True)
    assert bad.returncode == 2 and "needs a background model" in bad.stderr

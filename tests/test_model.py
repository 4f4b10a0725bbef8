"""Contract tests over every encoder/decoder/likelihood combination, and export round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import ModelConfig
from vaekit.errors import CheckpointError
from vaekit.models.likelihoods import LIKELIHOODS
from vaekit.models.nets import ENCODERS
from vaekit.models.vae import VAE, build_model
from vaekit.storage import read_safetensors


def _cfg(net: str, likelihood: str, **kw: object) -> ModelConfig:
    hidden = [8, 16] if net in ("conv", "resnet") else [32]
    return ModelConfig(
        encoder=net,  # type: ignore[arg-type]
        decoder=net,  # type: ignore[arg-type]
        hidden=hidden,
        latent_dim=3,
        likelihood=likelihood,
        input_shape=[_channels(likelihood), 28, 28],
        res_blocks=1,
        gaussian_scale="pixel",
        **kw,
    )  # type: ignore[arg-type]


def _channels(likelihood: str) -> int:
    return 3 if likelihood == "rgb-logistic-mixture" else 1


@pytest.mark.parametrize("net", ENCODERS.names())
@pytest.mark.parametrize("likelihood", LIKELIHOODS.names())
def test_shapes_and_gradients(net: str, likelihood: str) -> None:
    torch.manual_seed(0)
    model = build_model(_cfg(net, likelihood))
    c = _channels(likelihood)
    x = torch.rand(5, c, 28, 28)
    out = model(x, n_samples=2)
    assert out.q.mean.shape == (5, 3) and out.q.logvar.shape == (5, 3)
    assert out.z.shape == (2, 5, 3)
    assert out.px.log_prob(x).shape == (2, 5)
    terms = model.elbo(x)
    assert terms.log_px.shape == (5,) and terms.kl_per_dim.shape == (5, 3)
    terms.neg_elbo.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.sample(4).shape == (4, c, 28, 28)
    assert model.reconstruct(x).shape == (5, c, 28, 28)
    assert model.log_likelihood(x, k=7, chunk=3).shape == (5,)


def test_sample_is_repeatable_with_a_generator() -> None:
    model = build_model(_cfg("mlp", "bernoulli"))
    a = model.sample(6, generator=torch.Generator().manual_seed(5))
    b = model.sample(6, generator=torch.Generator().manual_seed(5))
    c = model.sample(6, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_logvar_is_soft_clamped() -> None:
    model = build_model(_cfg("mlp", "bernoulli", logvar_min=-3.0, logvar_max=2.0))
    with torch.no_grad():
        model.encoder.net[-1].bias.fill_(1e3)
    q = model.encode(torch.rand(2, 1, 28, 28))
    assert (q.logvar <= 2.0).all()


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = build_model(_cfg("conv", "gaussian"))
    model.save_pretrained(str(tmp_path / "m"))
    loaded = VAE.from_pretrained(str(tmp_path / "m"))
    x = torch.rand(3, 1, 28, 28)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    torch.testing.assert_close(model.elbo(x, generator=g1).log_px, loaded.elbo(x, generator=g2).log_px, rtol=0, atol=0)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["encoder"] == "conv"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="config.json is missing"):
        VAE.from_pretrained(str(tmp_path))
    build_model(_cfg("mlp", "bernoulli")).save_pretrained(str(tmp_path / "a"))
    weights = tmp_path / "a" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        VAE.from_pretrained(str(tmp_path / "a"))
    weights.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="truncated"):
        VAE.from_pretrained(str(tmp_path / "a"))
    # weights of another architecture under a config that does not match them
    build_model(_cfg("mlp", "bernoulli")).save_pretrained(str(tmp_path / "b"))
    build_model(_cfg("conv", "bernoulli")).save_pretrained(str(tmp_path / "c"))
    (tmp_path / "b" / "model.safetensors").write_bytes((tmp_path / "c" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not belong"):
        VAE.from_pretrained(str(tmp_path / "b"))
    tensors, meta = read_safetensors(tmp_path / "c" / "model.safetensors")
    assert "sha256" in meta and tensors


def test_your_own_encoder_and_decoder_train_save_and_reload(tmp_path: Path) -> None:
    from torch import nn

    from vaekit.config import load_config
    from vaekit.errors import ConfigError
    from vaekit.models.vae import VAE, build_model
    from vaekit.training.loop import train

    def nets() -> tuple[nn.Module, nn.Module]:
        torch.manual_seed(0)
        enc = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 8))  # 2 x latent_dim 4
        dec = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 64), nn.Unflatten(1, (1, 8, 8)))
        return enc, dec

    np.save(tmp_path / "d.npy", np.random.default_rng(0).integers(0, 256, (100, 8, 8), dtype=np.uint8))
    cfg = load_config(None, [f"data.name={tmp_path / 'd.npy'}", "model.latent_dim=4", "train.steps=20",
                             "train.batch_size=16", "train.tensorboard=false"])
    result = train(cfg, tmp_path / "run", quiet=True, encoder=nets()[0], decoder=nets()[1])
    assert result.model.cfg.encoder == "custom" and result.test is not None
    with pytest.raises(ConfigError, match=r"built with your own encoder .*from_pretrained\(folder, encoder=\.\.\.\)"):
        VAE.from_pretrained(tmp_path / "run")
    loaded = VAE.from_pretrained(tmp_path / "run", encoder=nets()[0], decoder=nets()[1])
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.reconstruct(x), result.model.reconstruct(x))
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ConfigError, match=r"encoder maps images \(2, 1, 8, 8\) to \(2, 5\); it must give \(2, 8\)"):
        build_model(load_config(None, ["model.latent_dim=4", "model.input_shape=[1, 8, 8]"]).model, encoder=wrong)

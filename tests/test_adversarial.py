"""The adversarial objective (issue 42): its losses against their formulas, the adaptive weight against a hand
computation with autograd, the discriminator's start, exact resume of both players, the outright-win detector and
the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vaekit.checkpoint import load_latest_checkpoint
from vaekit.config import AdversarialConfig, load_config
from vaekit.errors import ConfigError
from vaekit.models.discriminators import build_discriminator
from vaekit.objectives import build_objective
from vaekit.objectives.adversarial import disc_terms, generator_loss, lecam_penalty, r1_penalty
from vaekit.training.loop import train
from vaekit.training.step import build_state, train_step
from vaekit.training.watches import DiscriminatorWatch

SMALL = ["objective.name=adversarial", "adversarial.discriminator=small", "adversarial.disc_channels=8",
         "model.encoder=conv", "model.decoder=conv", "model.hidden=[8, 16]", "model.latent_dim=4"]


def _cfg(extra: list[str]):  # type: ignore[no-untyped-def]
    cfg = load_config(None, [*SMALL, "train.batch_size=16", "train.compile=false", *extra])
    return replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))


def _batch(seed: int) -> torch.Tensor:
    return (torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def test_losses_follow_their_formulas() -> None:
    real, fake = torch.randn(5, 3), torch.randn(5, 3)
    r, f = disc_terms(real, [fake], "hinge")  # taming's hinge_d_loss, per example
    torch.testing.assert_close(0.5 * (r + f).mean(), 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean()))
    r, f = disc_terms(real, [fake], "non-saturating")  # -log sigmoid(D(x)) - log(1 - sigmoid(D(G)))
    expected = -torch.log(torch.sigmoid(real)).mean(1) - torch.log(1 - torch.sigmoid(fake)).mean(1)
    torch.testing.assert_close(r + f, expected)
    torch.testing.assert_close(generator_loss(fake, "hinge"), -fake.mean(1))
    torch.testing.assert_close(generator_loss(fake, "non-saturating"), -torch.log(torch.sigmoid(fake)).mean(1))


def test_r1_and_lecam_follow_their_formulas() -> None:
    disc = build_discriminator((1, 8, 8), AdversarialConfig(discriminator="small", disc_channels=8, disc_norm="none"))
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    logits = disc(x)[0]
    penalty = r1_penalty(logits, x)
    grads = [torch.autograd.grad(disc(x[i : i + 1])[0].sum(), x)[0][i] for i in range(4)]  # one image at a time
    torch.testing.assert_close(penalty, torch.stack([g.pow(2).sum() for g in grads]))
    disc.lecam_real.fill_(0.5)
    disc.lecam_fake.fill_(-0.25)
    real, fake = torch.tensor([[1.0], [-1.0]]), torch.tensor([[0.0], [2.0]])
    value = lecam_penalty(disc, real, fake, decay=0.9)  # relu(D(x) - a_F)^2, relu(a_R - D(G))^2 averaged
    torch.testing.assert_close(value, torch.tensor((1.25**2 + 0) / 2 + (0.5**2 + 0) / 2))
    torch.testing.assert_close(disc.lecam_real, torch.tensor(0.9 * 0.5 + 0.1 * 0.0))  # the anchors move after
    torch.testing.assert_close(disc.lecam_fake, torch.tensor(0.9 * -0.25 + 0.1 * 1.0))


def test_the_adaptive_weight_matches_a_hand_computation() -> None:
    cfg = _cfg(["adversarial.weight=0.7", "adversarial.feature_weight=0.3"])
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=10)
    x = _batch(0)
    eps = torch.randn(1, 16, 4)
    nets_out = state.objective.loss  # the objective's own adaptive weight, logged per example
    from vaekit.objectives.base import Batch, Knobs, Nets

    disc = state.players["discriminator"].module
    nets = Nets(state.model, lambda inputs, **kw: state.model(inputs, **kw), {"discriminator": disc})
    out = nets_out("model", nets, Batch(x, None, eps), Knobs(kl_weight=1.0, step=0))
    assert out is not None
    # by hand: the same forward pass, the decoder's last layer named explicitly
    layer = state.model.decoder.deconv[-1].weight
    model_out = state.model(x, eps=eps)
    fake = model_out.px.mean[0]
    log_px = model_out.px.log_prob(x)[0]
    with torch.no_grad():
        real_features = disc(x)[1]
    rec = -log_px.mean() + 0.3 * (0.5 * (disc(fake)[1] - real_features).pow(2).sum(1)).mean()
    gen = -disc(fake)[0].mean()
    g_rec = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    g_gen = torch.autograd.grad(gen, layer)[0]
    expected = torch.clamp(g_rec.norm() / (g_gen.norm() + 1e-4), 0, 1e4)
    torch.testing.assert_close(out.terms["adaptive_weight"], expected.expand(16), rtol=1e-4, atol=1e-6)
    kl = out.terms["kl"].mean()
    torch.testing.assert_close(out.loss, rec + kl + 0.7 * expected * gen, rtol=1e-4, atol=1e-4)


def test_the_discriminator_trains_only_from_disc_start() -> None:
    cfg = _cfg(["adversarial.disc_start=3", "adversarial.disc_ramp=2"])
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=10)
    disc = state.players["discriminator"].module
    weights = [p.detach().clone() for p in disc.parameters()]
    for i in range(3):
        report, _ = train_step(state, _batch(i), cfg, 10)
        assert "gen" not in report.terms and "acc_real" not in report.terms  # no adversarial term yet
    assert all(torch.equal(a, b) for a, b in zip(weights, disc.parameters(), strict=True))
    report, _ = train_step(state, _batch(3), cfg, 10)
    assert "acc_real" in report.terms and "gen" in report.terms
    moved = [not torch.equal(a, b) for a, b in zip(weights, disc.parameters(), strict=True) if a.dim() > 1]
    assert moved and all(moved)  # every weight (a bias may have no gradient: the hinge's halves cancel at 0)
    assert state.objective.ramp(3) == 0.5 and state.objective.ramp(4) == 1.0  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("adv") / "tiny.npy"
    np.save(path, (rng.random((256, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return str(path)


def _run_cfg(data: str, extra: list[str]):  # type: ignore[no-untyped-def]
    base = [f"data.name={data}", "data.val_size=0", "train.batch_size=32", "train.log_every=10",
            "train.checkpoint_every=10", "train.samples=4", "train.tensorboard=false", "train.compile=false"]
    return load_config(None, [*base, *SMALL, *extra])


def test_both_players_resume_exactly(tiny: str, tmp_path: Path) -> None:
    extra = ["adversarial.disc_start=6", "adversarial.r1=1", "adversarial.lecam=0.3", "guard.ema_decay=0.9"]
    train(_run_cfg(tiny, [*extra, "train.steps=30"]), tmp_path / "full", quiet=True)
    train(_run_cfg(tiny, [*extra, "train.steps=17"]), tmp_path / "part", quiet=True)
    train(_run_cfg(tiny, [*extra, "train.steps=30"]), tmp_path / "part", resume=True, quiet=True)
    full = load_latest_checkpoint(tmp_path / "full" / "checkpoints")
    part = load_latest_checkpoint(tmp_path / "part" / "checkpoints")
    assert full is not None and part is not None and full["step"] == part["step"] == 30
    for player in ("model", "discriminator"):
        a, b = full["players"][player]["weights"], part["players"][player]["weights"]
        for key in a:
            assert torch.equal(a[key], b[key]), (player, key)
    assert float(full["players"]["discriminator"]["weights"]["lecam_real"]) != 0.0  # LeCam's anchors moved
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert {"log_px", "kl", "gen", "adaptive_weight", "disc_loss", "acc_real", "discriminator.grad_norm"} <= set(
        train_rows[-1]
    )


def test_an_outright_win_is_detected_and_named() -> None:
    watch = DiscriminatorWatch(AdversarialConfig(watch_window=4))
    ones, zeros = torch.ones(8), torch.zeros(8)
    found = [watch.add({"acc_real": ones, "acc_fake": ones, "logits_real": 3 * ones, "logits_fake": -3 * ones})
             for _ in range(8)]
    verdicts = [f for f in found if f is not None]
    assert len(verdicts) == 1 and verdicts[0]["verdict"] == "wins outright"  # once per run
    assert "adversarial.lr" in str(verdicts[0]["message"])
    stalled = DiscriminatorWatch(AdversarialConfig(watch_window=2))
    found = [stalled.add({"acc_real": 0.5 * ones, "acc_fake": 0.5 * ones, "logits_real": zeros,
                          "logits_fake": zeros}) for _ in range(2)]
    assert found[-1] is not None and found[-1]["verdict"] == "has stopped learning"
    healthy = DiscriminatorWatch(AdversarialConfig(watch_window=2))
    assert all(healthy.add({"acc_real": 0.7 * ones, "acc_fake": 0.6 * ones, "logits_real": ones,
                            "logits_fake": -ones}) is None for _ in range(4))


def test_a_run_whose_discriminator_wins_logs_it(tiny: str, tmp_path: Path) -> None:
    # the generator ignores the discriminator (weight 0) and the discriminator learns fast: it wins outright
    extra = ["adversarial.weight=0", "adversarial.adaptive=false", "adversarial.lr=0.01", "adversarial.watch_window=20",
             "train.steps=80"]
    with pytest.warns(UserWarning, match="discriminator wins outright"):
        train(_run_cfg(tiny, extra), tmp_path / "r", quiet=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in rows if r["kind"] == "discriminator"] == ["wins outright"]


def test_a_discriminator_that_does_not_fit_is_refused_in_one_line(tiny: str, tmp_path: Path) -> None:
    cfg = load_config(None, ["objective.name=adversarial", "adversarial.discriminator=patch"])
    cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))
    with pytest.raises(ConfigError, match="does not fit 8x8 images"):
        build_objective(cfg)
    args = ["train", "vaegan", "--set", f"data.name={tiny}", "--set", "adversarial.discriminator=patch",
            "--steps", "1", "--run-dir", str(tmp_path / "r")]
    out = subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "disc_layers" in out.stderr and not (tmp_path / "r" / "checkpoints").exists()


class _NoLayerDecoder(nn.Module):
    """A decoder with no Linear or Conv2d layer: parameters used directly."""

    def __init__(self) -> None:
        super().__init__()
        self.basis = nn.Parameter(torch.randn(4, 64) * 0.1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.basis).view(-1, 1, 8, 8)


def test_a_model_without_a_decoder_layer_is_refused_in_one_line() -> None:
    cfg = _cfg([])
    with pytest.raises(ConfigError, match="adaptive=false") as caught:
        build_state(cfg, nets=(None, _NoLayerDecoder()), total_steps=1)
    assert "\n" not in str(caught.value)
    state = build_state(replace(cfg, adversarial=replace(cfg.adversarial, adaptive=False)),
                        nets=(None, _NoLayerDecoder()), total_steps=1)
    train_step(state, _batch(0), cfg, 1)  # without the adaptive weight it trains


VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # torchvision vgg16.features' convolutions


def _lpips_folder(folder: Path) -> Path:
    """Random weights in the two files' layouts (torchvision's VGG16 keys, the lpips package's head keys)."""
    gen = torch.Generator().manual_seed(0)
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    vgg = {}
    for i, index in enumerate(VGG_CONVS):
        vgg[f"features.{index}.weight"] = torch.randn(widths[i + 1], widths[i], 3, 3, generator=gen) * 0.05
        vgg[f"features.{index}.bias"] = torch.randn(widths[i + 1], generator=gen) * 0.01
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # the rest of torchvision's file: ignored
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate([64, 128, 256,
                                                                                                      512, 512])}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(vgg, folder / "vgg16-397923af.pth")
    torch.save(heads, folder / "vgg.pth")
    return folder


def _lpips_by_hand(vgg: dict[str, torch.Tensor], heads: dict[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps_after = {2: 0, 7: 1, 14: 2, 21: 3, 28: 4}  # relu1_2 ... relu5_3 follow these convolutions
    pools_before = {5, 10, 17, 24}
    total = torch.zeros(x.shape[0])
    hx, hy = (2 * x - 1 - shift) / scale, (2 * y - 1 - shift) / scale
    for index in VGG_CONVS:
        if index in pools_before:
            hx, hy = F.max_pool2d(hx, 2), F.max_pool2d(hy, 2)
        w, b = vgg[f"features.{index}.weight"], vgg[f"features.{index}.bias"]
        hx, hy = F.relu(F.conv2d(hx, w, b, padding=1)), F.relu(F.conv2d(hy, w, b, padding=1))
        if index in taps_after:
            nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            lin = heads[f"lin{taps_after[index]}.model.1.weight"]
            total = total + F.conv2d((nx - ny).pow(2), lin).mean((1, 2, 3))
    return total


def test_lpips_follows_its_definition_with_the_users_files(tmp_path: Path) -> None:
    from vaekit.models.perceptual import load_lpips

    folder = _lpips_folder(tmp_path / "lpips")
    net = load_lpips(folder)
    x, y = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    vgg, heads = torch.load(folder / "vgg16-397923af.pth"), torch.load(folder / "vgg.pth")
    torch.testing.assert_close(net(x, y), _lpips_by_hand(vgg, heads, x, y), rtol=1e-4, atol=1e-6)
    assert torch.all(net(x, x) == 0) and torch.all(net(x, y) > 0)
    assert all(not p.requires_grad for p in net.parameters())


def test_missing_lpips_files_are_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    torch.save({}, tmp_path / "half" / "vgg16.pth")
    cfg = load_config(None, [*SMALL, f"adversarial.lpips={tmp_path / 'half'}"])
    with pytest.raises(ConfigError, match="lpips_vgg.pth or vgg.pth") as caught:
        build_objective(cfg)
    assert "\n" not in str(caught.value)


def test_an_adversarial_step_with_lpips_trains_and_logs_it(tmp_path: Path) -> None:
    cfg = load_config(None, [*SMALL, "train.batch_size=4", "train.compile=false",
                             f"adversarial.lpips={_lpips_folder(tmp_path / 'lpips')}"])
    cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 16, 16]))
    state = build_state(cfg, total_steps=2)
    report, _ = train_step(state, torch.rand(4, 1, 16, 16).round(), cfg, 2)
    assert "lpips" in report.terms and torch.isfinite(report.terms["lpips"]).all()

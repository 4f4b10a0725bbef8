"""Training: a smoke run that must learn, exact resume, checkpoint fallback, bf16."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.checkpoint import list_checkpoints
from vaekit.config import load_config
from vaekit.errors import VaekitError
from vaekit.models.vae import VAE
from vaekit.training.loop import train


def test_smoke_run_beats_an_elbo_threshold(tmp_path: Path) -> None:
    # 400 steps of the mlp preset (batch 128, ~51k examples, under one epoch): pytorch/examples'
    # network is near 165 nats after its first epoch; an untrained model scores ~543 nats.
    cfg = load_config("mlp", ["train.steps=400", "train.log_every=100"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.test is not None and result.test.n == 10000
    assert result.test.neg_elbo < 150.0, result.test.neg_elbo
    assert result.test.active_units >= 5
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [100, 200, 300, 400]
    assert rows[-1]["kind"] == "eval" and rows[-1]["split"] == "test"
    for name in (
        "config.yaml",
        "model/config.json",
        "model/model.safetensors",
        "samples/samples.png",
        "samples/reconstructions.png",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    loaded = VAE.from_pretrained(str(tmp_path / "run"), map_location=str(next(result.model.parameters()).device))
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded.reconstruct(x), result.model.reconstruct(x))


def _tiny_data(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npy"
    np.save(path, (rng.random((300, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return str(path)


def _tiny_cfg(data: str, extra: list[str] | None = None):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"data.name={data}",
            "data.val_size=0",  # all 300 images train: 10 steps per epoch
            "model.hidden=[32]",
            "model.latent_dim=4",
            "train.batch_size=32",
            "train.epochs=3",
            "train.checkpoint_every=7",
            "train.keep_checkpoints=50",
            "guard.ema_decay=0.9",
            *(extra or []),
        ],
    )


def test_examples_per_s_counts_training_steps_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every evaluation, the last epoch's included, is left out of the run's examples/s: with each evaluation
    # made to take 3 s more, 30 tiny steps still report the speed of the steps (well under 3 s, even on a busy CPU).
    from vaekit.training import loop

    real = loop.evaluate

    def slow(*args: object, **kwargs: object) -> object:
        time.sleep(3.0)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "evaluate", slow)
    cfg = load_config("mlp", ["train.steps=30", "model.hidden=[16]", "model.latent_dim=2", "train.batch_size=32"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.seconds > 3.0  # one evaluation of the test split after the last step: it is the final score
    assert 30 * 32 / result.examples_per_s < 3.0, result.examples_per_s


@pytest.mark.parametrize("conditional", [False, True])
def test_final_score_is_the_last_epoch_end_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 conditional: bool) -> None:
    # The run's last step ends an epoch, whose evaluation is the final score: the test split is scored once
    # (a conditional model's final score adds the generative classifier: scored again, with classify_k).
    from vaekit.training import loop

    calls: list[object] = []
    real = loop.evaluate

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("classify_k"))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "evaluate", counted)
    cfg = load_config("mlp", ["train.steps=30", "model.hidden=[16]", "model.latent_dim=2", "train.batch_size=32",
                              f"model.conditional={str(conditional).lower()}"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert calls == ([None, 10] if conditional else [None])
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert result.test is not None and last["kind"] == "eval" and last["step"] == 30
    assert (result.test.class_accuracy is not None) == conditional
    if not conditional:  # the same numbers (the classifier's draws share the seeded stream: a conditional differs)
        assert last["neg_elbo"] == result.test.neg_elbo and last["kl"] == result.test.kl


def test_resume_is_exact(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    full = train(_tiny_cfg(data), tmp_path / "full", quiet=True)
    # A run stopped at step 14 (mid-epoch: 10 steps per epoch), then resumed to the end.
    train(_tiny_cfg(data, ["train.steps=14"]), tmp_path / "part", quiet=True)
    resumed = train(_tiny_cfg(data), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps == 30
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_corrupt_newest_checkpoint_falls_back(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    train(_tiny_cfg(data, ["train.steps=14"]), tmp_path / "run", quiet=True)
    newest = list_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert newest.name == "step-00000014.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping checkpoint step-00000014"):
        result = train(_tiny_cfg(data, ["train.steps=20"]), tmp_path / "run", resume=True, quiet=True)
    assert result.steps == 20


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    data = _tiny_data(tmp_path)
    train(_tiny_cfg(data, ["train.steps=3"]), tmp_path / "run", quiet=True)
    with pytest.raises(VaekitError, match="--resume"):
        train(_tiny_cfg(data, ["train.steps=3"]), tmp_path / "run", quiet=True)


def test_bf16_matches_fp32_on_a_short_run(tmp_path: Path) -> None:
    cfg = load_config("mlp", ["train.steps=200"])
    fp32 = train(cfg, tmp_path / "a", quiet=True)
    bf16 = train(load_config("mlp", ["train.steps=200", "train.precision=bf16"]), tmp_path / "b", quiet=True)
    assert fp32.test is not None and bf16.test is not None
    assert abs(bf16.test.neg_elbo - fp32.test.neg_elbo) / fp32.test.neg_elbo < 0.01


def test_compiled_step_matches_eager_fp32(tmp_path: Path) -> None:
    # train.compile fuses the forward and loss; the noise is drawn from the same stream, so in fp32 the
    # two paths differ only by float reassociation: the same -ELBO to well under 0.1% after 60 updates.
    data = _tiny_data(tmp_path)
    eager = train(_tiny_cfg(data, ["train.steps=60", "train.compile=false"]), tmp_path / "a", quiet=True)
    compiled = train(_tiny_cfg(data, ["train.steps=60", "train.compile=true"]), tmp_path / "b", quiet=True)
    assert eager.test is None and compiled.test is None  # user data: no test split, compare the weights
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_compile_failure_falls_back_to_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fn, **kwargs):  # type: ignore[no-untyped-def]
        def call(*args, **kw):  # type: ignore[no-untyped-def]
            raise RuntimeError("no C++ compiler found")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    data = _tiny_data(tmp_path)
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        fallback = train(_tiny_cfg(data, ["train.steps=20", "train.compile=true"]), tmp_path / "a", quiet=True)
    assert fallback.steps == 20 and all(torch.isfinite(p).all() for p in fallback.model.parameters())


def test_channels_last_trains_the_same_model(tmp_path: Path) -> None:
    # NHWC is a memory layout, not a different computation: the same conv run, to float rounding.
    data = _tiny_data(tmp_path)
    conv = ["model.encoder=conv", "model.decoder=conv", "model.hidden=[8,16]", "train.steps=15"]
    plain = train(_tiny_cfg(data, conv), tmp_path / "a", quiet=True)
    nhwc = train(_tiny_cfg(data, [*conv, "train.channels_last=true"]), tmp_path / "b", quiet=True)
    weights = [p for p in nhwc.model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(nhwc.model.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)


def test_restored_moments_take_their_channels_last_parameters_layout(tmp_path: Path) -> None:
    # CUDA's fused Adam refuses moments whose strides differ from the parameter's (the H200 run of 2026-12-04:
    # every channels_last preset failed its first step after a resume); checkpoints hold them contiguous.
    from dataclasses import replace

    from vaekit.checkpoint import load_latest_checkpoint
    from vaekit.training.step import build_state

    path = tmp_path / "d.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, (32, 28, 28), dtype=np.uint8))
    cfg = load_config("conv", [f"data.name={path}", "data.val_size=0", "train.batch_size=16", "train.steps=2",
                               "train.tensorboard=false", "train.samples=4", "train.compile=false"])
    train(cfg, tmp_path / "run", quiet=True)
    state = build_state(replace(cfg, model=replace(cfg.model, input_shape=[1, 28, 28])), total_steps=2)
    saved = load_latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert saved is not None
    assert any(not v.is_contiguous() for v in state.model.parameters())  # the case: some weights are NHWC
    state.load_state_dict(saved, "run")
    for i, p in enumerate(state.model.parameters()):
        for key in ("exp_avg", "exp_avg_sq"):
            moment = state.optimizer.state[p][key]
            assert moment.stride() == p.stride(), key
            saved_moment = saved["players"]["model"]["optimizer"]["state"][i][key]
            torch.testing.assert_close(moment, saved_moment.to(p), rtol=0, atol=0)

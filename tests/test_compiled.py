"""The compiled whole step (train.compile): same updates as eager, skips without a sync, exact resume, auto."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import load_config
from vaekit.errors import ConfigError
from vaekit.training.loop import train
from vaekit.training.step import (
    AUTO_COMPILE_SECONDS,
    AUTO_COMPILE_STEPS,
    AUTO_COMPILE_STEPS_WARM,
    build_state,
    compile_whole_step,
    train_step,
)


def _data(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npy"
    np.save(path, (rng.random((256, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return str(path)


def _cfg(extra: list[str]):  # type: ignore[no-untyped-def]
    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=4", "train.batch_size=32", *extra])
    return replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))


def _adam_state(state):  # type: ignore[no-untyped-def]
    return [
        {k: v.clone() for k, v in state.optimizer.state[p].items()} for p in state.model.parameters()
    ]


def test_whole_step_skips_a_nan_batch_without_touching_weights_or_moments() -> None:
    cfg = _cfg(["train.compile=true", "guard.ema_decay=0.9"])
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=100)
    assert state.compiled is not None
    x = (torch.rand(32, 1, 8, 8) < 0.3).float()
    for _ in range(3):
        report, _ = train_step(state, x, cfg, 100)
        assert not bool(report.skipped)
    assert state.compiled is not None, "compiling failed: the test would only check eager"
    weights = {k: v.clone() for k, v in state.model.state_dict().items()}
    assert state.ema is not None
    shadow = {k: v.clone() for k, v in state.ema.shadow.items()}
    moments = _adam_state(state)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    report, _ = train_step(state, bad, cfg, 100)
    assert bool(report.skipped) and int(state.skipped) == 1 and int(state.streak) == 1
    for k, v in state.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
        assert torch.equal(state.ema.shadow[k], shadow[k]), k
    train_step(state, bad, cfg, 100)
    assert int(state.skipped) == 2 and int(state.streak) == 2
    for before, p in zip(moments, state.model.parameters(), strict=True):
        for k, v in state.optimizer.state[p].items():
            assert torch.equal(v, before[k]), k
    report, _ = train_step(state, x, cfg, 100)  # a good batch trains again, and the streak ends
    assert not bool(report.skipped) and int(state.streak) == 0 and int(state.skipped) == 2
    assert any(not torch.equal(v, weights[k]) for k, v in state.model.state_dict().items())


def test_whole_step_follows_eager_adam_and_the_norm_history(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same 12 updates eagerly and compiled, from the same weights and noise, with a KL warm-up and a cosine
    # learning rate (the compiled step reads them from blocks of 5 steps here, so it crosses blocks): Adam's
    # moments, its step count, the weights, the EMA, the counters and the outlier rule's history agree up to
    # float reassociation.
    monkeypatch.setattr("vaekit.training.compiled.KNOB_BLOCK", 5)
    x = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    states = {}
    for mode in ("false", "true"):
        cfg = _cfg([f"train.compile={mode}", "guard.clip_grad_norm=5", "guard.ema_decay=0.8",
                    "objective.kl_schedule=linear", "objective.kl_warmup_steps=10", "optim.lr_schedule=cosine"])
        torch.manual_seed(0)
        state = build_state(cfg, total_steps=12)
        for _ in range(12):
            train_step(state, x, cfg, 12)
        assert (state.compiled is not None) == (mode == "true")
        states[mode] = state
    eager, compiled = states["false"], states["true"]
    for (k, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)
    assert eager.ema is not None and compiled.ema is not None
    for k, a in eager.ema.shadow.items():
        torch.testing.assert_close(compiled.ema.shadow[k], a, rtol=1e-4, atol=1e-5, msg=k)
    assert not torch.equal(compiled.ema.shadow[k], compiled.model.state_dict()[k])  # it averages, not copies
    assert int(compiled.skipped) == int(eager.skipped) == 0 and int(compiled.streak) == 0
    torch.testing.assert_close(compiled.grad_norm, eager.grad_norm, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(compiled.optimizer.state[q][key], eager.optimizer.state[p][key], rtol=1e-3,
                                       atol=1e-7, msg=key)
    assert int(compiled.history.count) == int(eager.history.count) == 12
    torch.testing.assert_close(compiled.history.log_norms, eager.history.log_norms, rtol=1e-4, atol=1e-5)


def test_compiled_run_resumes_exactly(tmp_path: Path) -> None:
    data = _data(tmp_path)
    base = [f"data.name={data}", "data.val_size=0", "model.hidden=[32]", "model.latent_dim=4",
            "train.batch_size=32", "train.epochs=2", "train.checkpoint_every=5", "train.compile=true"]
    full = train(load_config(None, base), tmp_path / "full", quiet=True)
    train(load_config(None, [*base, "train.steps=11"]), tmp_path / "part", quiet=True)
    resumed = train(load_config(None, base), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps == 16
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_auto_compiles_only_long_supported_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))  # nothing compiled yet: cold
    cpu = torch.device("cpu")
    auto = _cfg(["train.compile=auto"])
    assert not compile_whole_step(auto, AUTO_COMPILE_STEPS - 1, False, False, cpu)
    assert compile_whole_step(auto, AUTO_COMPILE_STEPS, False, False, cpu)
    short_budget = _cfg(["train.compile=auto", f"train.max_minutes={(AUTO_COMPILE_SECONDS - 1) / 60}"])
    assert not compile_whole_step(short_budget, 10**7, False, False, cpu)  # the clock, not the steps, ends it
    assert compile_whole_step(_cfg(["train.compile=auto", f"train.max_minutes={AUTO_COMPILE_SECONDS / 60}"]), 10**7,
                              False, False, cpu)
    assert not compile_whole_step(auto, 10**7, True, False, cpu)  # DDP
    assert not compile_whole_step(auto, 10**7, False, True, cpu)  # spectral regularization
    assert not compile_whole_step(_cfg(["objective.name=iwae", "objective.iw_samples=5"]), 10**7, False, False, cpu)
    assert not compile_whole_step(_cfg(["train.compile=false"]), 10**7, False, False, cpu)
    assert not compile_whole_step(auto, 10**7, False, False, torch.device("mps"))
    with pytest.warns(UserWarning, match="does not apply to importance-weighted"):
        iwae = _cfg(["train.compile=true", "objective.name=iwae", "objective.iw_samples=5"])
        assert not compile_whole_step(iwae, 10, False, False, cpu)
    assert compile_whole_step(_cfg(["train.compile=true"]), 10, False, False, cpu)


def test_auto_compiles_shorter_runs_once_the_graph_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A compiled run marks its graph warm in the cache; the next run of the same graph pays only the tracing.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "cache"))
    cpu = torch.device("cpu")
    cfg = _cfg(["train.compile=auto"])
    steps = AUTO_COMPILE_STEPS_WARM
    assert not compile_whole_step(cfg, steps, False, False, cpu)
    torch.manual_seed(0)
    state = build_state(_cfg(["train.compile=true"]), total_steps=steps)
    train_step(state, (torch.rand(32, 1, 8, 8) < 0.3).float(), cfg, steps)
    assert state.compiled is not None
    assert compile_whole_step(cfg, steps, False, False, cpu)
    other = _cfg(["train.compile=auto", "model.latent_dim=5"])  # another graph is still cold
    assert not compile_whole_step(other, steps, False, False, cpu)


def test_compile_setting_is_true_false_or_auto() -> None:
    assert load_config(None, []).train.compile == "auto"
    assert load_config(None, ["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=1"])
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(None, ["train.compile=sometimes"])


def test_knob_rows_follow_the_schedules_across_blocks_and_rollbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The compiled step reads (KL weight, lr, clip norm, EMA decay, in lr warm-up) from blocks of schedule rows kept
    # on the device: each step must get its own row, a new block past the end of one, and a fresh block when a
    # rollback changes the scales.
    monkeypatch.setattr("vaekit.training.compiled.KNOB_BLOCK", 4)
    state = build_state(_cfg(["train.compile=true"]), total_steps=100)
    whole = state.compiled
    assert whole is not None
    evaluated: list[int] = []

    def knobs(step: int, scale: float) -> tuple[float, float, float, float, float]:
        evaluated.append(step)
        return step / 10, scale * step / 100, 7.0 * scale, 1 - 1 / (step + 1), float(step < 5)

    for step in [*range(10), 3, 4]:  # 3 and 4 again: a rollback to step 3 with the same scales
        whole.knob_row(step, lambda s: knobs(s, 1.0), (1.0, 1.0))
        expected = [step / 10, step / 100, 7.0, 1 - 1 / (step + 1), float(step < 5)]
        assert whole.knobs.tolist() == pytest.approx(expected), step
    assert evaluated[:12] == list(range(12))  # blocks [0, 4), [4, 8), [8, 12)
    whole.knob_row(5, lambda s: knobs(s, 0.5), (0.5, 0.5))  # a rollback halves the scales: recomputed
    assert whole.knobs.tolist() == pytest.approx([0.5, 0.025, 3.5, 5 / 6, 0.0])


def test_a_conditional_model_compiles_to_the_eager_updates() -> None:
    # Labels enter the compiled step as an input (no host-side range check inside the graph): the same 8 updates
    # of a conditional model eagerly and compiled agree up to float reassociation.
    x = (torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    y = torch.arange(32) % 3
    states = {}
    for mode in ("false", "true"):
        cfg = _cfg([f"train.compile={mode}", "model.conditional=true", "model.num_classes=3"])
        torch.manual_seed(0)
        state = build_state(cfg, total_steps=8)
        for _ in range(8):
            train_step(state, x, cfg, 8, y=y)
        assert (state.compiled is not None) == (mode == "true")
        states[mode] = state
    for (k, a), b in zip(states["false"].model.state_dict().items(), states["true"].model.state_dict().values(),
                         strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=k)


def test_each_whole_step_compiles_its_own_code_object() -> None:
    # dynamo keeps compiled graphs, and its limit of 8 recompilations, per code object: with one shared `_step`, the
    # ninth network compiled in a process ran its step uncompiled (found running bench/weights_digest.py).
    from vaekit.training.compiled import WholeStep, _own_step

    a, b = (build_state(_cfg(["train.compile=true"]), total_steps=10).compiled for _ in range(2))
    assert a is not None and b is not None
    codes = [_own_step(a).__func__.__code__, _own_step(b).__func__.__code__, WholeStep._step.__code__]
    assert len({id(code) for code in codes}) == 3  # distinct objects (code objects compare equal by content)

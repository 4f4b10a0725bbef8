"""CUDA paths: exact resume (CUDA RNG and fp16 scaler state included), bf16/fp16 against fp32, a GPU run
scored on the CPU, compile, and NCCL. Skipped where no CUDA device is visible (CI has none); run on a GPU
machine with `python -m pytest tests/test_gpu.py` (results in bench/RESULTS.md, "GPU")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.vae import load_model
from vaekit.training.loop import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tiny(tmp_path: Path, extra: list[str]):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npy"
    if not path.exists():
        np.save(path, (rng.random((300, 8, 8)) < 0.3).astype(np.uint8) * 255)
    return load_config(
        None,
        [f"data.name={path}", "model.hidden=[32]", "model.latent_dim=4", "train.batch_size=32", "train.epochs=3",
         "train.tensorboard=false", "train.checkpoint_every=7", "train.keep_checkpoints=50", "guard.ema_decay=0.9",
         "train.device=cuda", *extra],
    )


@pytest.mark.parametrize("precision", ["fp32", "fp16", "fp32-compiled", "bf16-compiled"])
def test_cuda_resume_is_exact(tmp_path: Path, precision: str) -> None:
    # The reparameterization noise comes from the CUDA generator and fp16 carries a loss scale:
    # both must be in the checkpoint for the resumed run to end where the uninterrupted one does.
    # Compiled, the step is a CUDA graph replayed over the same tensors (counters and EMA included).
    extra = [f"train.precision={precision.split('-')[0]}", f"train.compile={'-compiled' in precision}".lower()]
    full = train(_tiny(tmp_path, extra), tmp_path / "full", quiet=True)
    train(_tiny(tmp_path, [*extra, "train.steps=14"]), tmp_path / "part", quiet=True)
    resumed = train(_tiny(tmp_path, extra), tmp_path / "part", resume=True, quiet=True)
    assert next(full.model.parameters()).device.type == "cuda"
    assert full.steps == resumed.steps == 27  # 285 training images (5% held out), batches of 32: 9 x 3 epochs
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_low_precision_within_1pct_of_fp32(tmp_path: Path, precision: str) -> None:
    base = ["train.steps=300", "train.device=cuda"]
    fp32 = train(load_config("mlp", base), tmp_path / "a", quiet=True)
    low = train(load_config("mlp", [*base, f"train.precision={precision}"]), tmp_path / "b", quiet=True)
    assert fp32.test is not None and low.test is not None
    assert fp32.test.neg_elbo < 150, fp32.test.neg_elbo  # it learned
    assert abs(low.test.neg_elbo - fp32.test.neg_elbo) / fp32.test.neg_elbo < 0.01, (low.test, fp32.test)


def test_a_gpu_run_scores_the_same_on_the_cpu(tmp_path: Path) -> None:
    run = train(load_config("mlp", ["train.steps=100", "train.device=cuda"]), tmp_path / "run", quiet=True)
    test = load_dataset("mnist", "test").subset(torch.arange(2000))
    on_cpu, on_gpu = load_model(tmp_path / "run"), load_model(tmp_path / "run", map_location="cuda")
    a, b = evaluate(on_cpu, test, 500, iw_samples=100), evaluate(on_gpu, test, 500, iw_samples=100)
    # the same seeded CPU noise on both devices: only kernel rounding differs
    assert abs(a.neg_elbo - b.neg_elbo) < 1e-3 * a.neg_elbo, (a, b)
    assert a.nll is not None and b.nll is not None and abs(a.nll - b.nll) < 1e-3 * a.nll, (a, b)
    assert run.test is not None and abs(run.test.neg_elbo - b.neg_elbo) < 0.05 * b.neg_elbo


def test_cuda_compile_matches_eager(tmp_path: Path) -> None:
    eager = train(_tiny(tmp_path, ["train.steps=60"]), tmp_path / "a", quiet=True)
    compiled = train(_tiny(tmp_path, ["train.steps=60", "train.compile=true"]), tmp_path / "b", quiet=True)
    for key, value in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[key], value, rtol=1e-3, atol=1e-4, msg=key)


def _torchrun(tmp_path: Path, name: str, nproc: int, device: str) -> subprocess.CompletedProcess[str]:
    rng = np.random.default_rng(0)
    data = tmp_path / "d.npy"
    np.save(data, (rng.random((320, 8, 8)) * 255).astype(np.uint8))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           "vaekit", "train", "--data", str(data), "--run-dir", str(tmp_path / name), "--set", "model.hidden=[32]",
           "--set", "model.latent_dim=4", "--batch-size", "32", "--steps", "12", "--set", "train.tensorboard=false",
           "--quiet", "--seed", "3", "--device", device]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between processes needs 2 GPUs")
def test_nccl_processes_match_one_process(tmp_path: Path) -> None:
    one, two = _torchrun(tmp_path, "one", 1, "cuda"), _torchrun(tmp_path, "two", 2, "cuda")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-2000:], two.stderr[-2000:])
    a, b = load_model(tmp_path / "one").state_dict(), load_model(tmp_path / "two").state_dict()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


def test_more_processes_than_gpus_is_a_clear_error(tmp_path: Path) -> None:
    out = _torchrun(tmp_path, "run", torch.cuda.device_count() + 1, "cuda")
    assert out.returncode != 0
    assert "NCCL needs one per process" in out.stderr, out.stderr[-2000:]


def test_the_set_on_the_gpu_and_pinned_copies_train_the_same_run(tmp_path: Path) -> None:
    # Both placements convert on the GPU with the CUDA generator's draws (flips here), in the same order.
    runs = {}
    for placement in ("device", "pinned"):
        cfg = _tiny(tmp_path, ["data.hflip=true", "train.steps=20", f"train.data_placement={placement}"])
        runs[placement] = train(cfg, tmp_path / placement, quiet=True).model.state_dict()
    for key, value in runs["device"].items():
        assert torch.equal(runs["pinned"][key], value), key


def test_auto_places_a_small_set_on_the_gpu() -> None:
    from vaekit.data.feed import Feed

    data = load_dataset("binarized-mnist", "train")
    feed = Feed(data, torch.device("cuda"))
    assert feed.placement == "device"
    _, x, y = next(feed.epoch(torch.randperm(len(data)), 256, 0, 3))
    assert x.device.type == "cuda" and x.shape == (256, 1, 28, 28) and y is not None and y.device.type == "cuda"
    assert set(x.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("preset", ["lvae", "cifar-hvae"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_hierarchies_train_on_the_gpu_and_resume_exactly(tmp_path: Path, preset: str, precision: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # conv backward without atomics
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    shape = (64, 32, 32, 3) if preset == "cifar-hvae" else (64, 28, 28)
    path = tmp_path / "d.npy"
    np.save(path, np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    base = [f"data.name={path}", "data.val_size=0", "train.batch_size=16", "train.epochs=2", "train.device=cuda",
            f"train.precision={precision}", "train.checkpoint_every=3", "train.keep_checkpoints=20",
            "train.tensorboard=false", "train.samples=4"]
    full = train(load_config(preset, base), tmp_path / "full", quiet=True)
    train(load_config(preset, [*base, "train.steps=5"]), tmp_path / "part", quiet=True)
    resumed = train(load_config(preset, base), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps == 8
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.isfinite(a).all(), k
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=k)


def test_a_conditional_model_trains_on_the_gpu(tmp_path: Path) -> None:
    path = tmp_path / "l.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=(rng.random((200, 8, 8)) * 255).astype(np.uint8), labels=rng.integers(0, 4, 200))
    cfg = load_config(None, [f"data.name={path}", "model.hidden=[32]", "model.latent_dim=4", "model.conditional=true",
                             "train.steps=20", "train.batch_size=32", "train.device=cuda", "train.tensorboard=false"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.test is not None and np.isfinite(result.test.neg_elbo)

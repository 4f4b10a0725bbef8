"""Scaling out: two gloo processes match one process; memory-mapped data larger than a memory cap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.storage import read_safetensors

ARGS = ["--set", "model.hidden=[32]", "--set", "model.latent_dim=4", "--batch-size", "32", "--steps", "12",
        "--set", "train.tensorboard=false", "--set", "train.checkpoint_every=4", "--quiet", "--seed", "3",
        "--device", "cpu", "--set", "data.val_size=0"]  # gloo: the CPU path, also on a machine with a GPU; all
# 320 images train, so one process and two split them into the same 10 batches an epoch


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_safetensors(run / "model" / "model.safetensors")
    return tensors


@pytest.mark.parametrize("data", ["npy", "binarized", "hierarchical"])
def test_two_gloo_processes_match_one_process(tmp_path: Path, data: str) -> None:
    source = "binarized-mnist"  # dynamic binarization: the Bernoulli draws must match across ranks too
    extra: list[str] = []
    if data == "hierarchical":  # two groups: every group's noise comes from the one global draw
        extra = ["--set", "model.kind=hierarchical", "--set", "model.groups=[3, 4]", "--set", "model.group_hidden=[16]"]
    if data in ("npy", "hierarchical"):
        rng = np.random.default_rng(0)
        np.save(tmp_path / "d.npy", (rng.random((320, 8, 8)) * 255).astype(np.uint8))
        source = str(tmp_path / "d.npy")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a rank that aborts prints where
    one = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", source, "--run-dir", str(tmp_path / "one"),
                          *ARGS, *extra, "--set", "train.threads=1"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                          "vaekit", "train", "--data", source, "--run-dir", str(tmp_path / "two"), *ARGS, *extra],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-8000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:
        # Same global batch, same noise: only the order of floating-point sums differs (tolerance 1e-5).
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert rows and len(list((tmp_path / "two" / "checkpoints").iterdir())) >= 1  # rank 0 wrote; one writer


def test_ddp_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", (rng.random((320, 8, 8)) * 255).astype(np.uint8))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # a rank that aborts prints where
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vaekit",
           "train", "--data", str(tmp_path / "d.npy"), "--run-dir", str(tmp_path / "ddp")]
    args = [a for a in ARGS if a not in ("--steps", "12")]
    first = subprocess.run([*ddp, *args, "--steps", "8"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-8000:]
    second = subprocess.run([*ddp, *args, "--steps", "12", "--resume"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert second.returncode == 0, second.stderr[-8000:]
    one = subprocess.run([sys.executable, "-m", "vaekit", "train", "--data", str(tmp_path / "d.npy"), "--run-dir",
                          str(tmp_path / "one"), *ARGS, "--set", "train.threads=1"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert one.returncode == 0, one.stderr
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "ddp")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-5, msg=key)


def test_memory_mapped_npy_larger_than_the_cap_trains(tmp_path: Path) -> None:
    # 2,000 MB of images would not fit under a 1,500 MB address-space-free RSS budget if read; mapped, only the
    # pages the batches touch are resident. The child reports its peak RSS growth while training.
    n, side = 500_000, 64  # 500,000 x 64 x 64 uint8 = 2.0 GB on disk
    path = tmp_path / "big.npy"
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, side, side))
    header[::5000] = 255  # a few written rows; the rest is a sparse file
    del header
    code = f"""
import resource, vaekit
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = vaekit.load_config(None, ["data.name={path}", "data.mmap=true", "model.hidden=[32]", "model.latent_dim=4",
                                "train.steps=20", "train.batch_size=64", "train.tensorboard=false", "train.samples=4"])
vaekit.train(cfg, "{tmp_path / 'run'}", quiet=True)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-8000:]
    growth_mb = int(out.stdout.strip().splitlines()[-1])
    assert growth_mb < 1500, growth_mb  # far below the 2,000 MB a full read would take


def test_lazy_image_folder_trains_exactly_like_the_eager_one(tmp_path: Path) -> None:
    from PIL import Image

    from vaekit.config import load_config
    from vaekit.data.datasets import load_dataset
    from vaekit.data.folders import LazyImageFolder
    from vaekit.training.loop import train

    rng = np.random.default_rng(4)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(100):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    lazy = load_dataset(str(folder), lazy=True)
    assert isinstance(lazy.images, LazyImageFolder) and lazy.shape == (1, 8, 8) and len(lazy) == 100
    assert torch.equal(lazy.batch(torch.tensor([3, 50])), load_dataset(str(folder)).batch(torch.tensor([3, 50])))
    base = [f"data.name={folder}", "data.val_size=0", "model.hidden=[16]", "train.batch_size=16", "train.epochs=2",
            "train.tensorboard=false"]
    eager_run = train(load_config(None, base), tmp_path / "eager", quiet=True)
    lazy_run = train(load_config(None, [*base, "data.lazy=true"]), tmp_path / "lazy", quiet=True)
    for (k, a), (_, b) in zip(eager_run.model.state_dict().items(), lazy_run.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k

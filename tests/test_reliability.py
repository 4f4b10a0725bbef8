"""Nothing lost to crashes: SIGKILL at random moments, full disks, and pickle-free loading."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from vaekit.checkpoint import list_checkpoints
from vaekit.config import load_config
from vaekit.errors import VaekitError
from vaekit.storage import read_safetensors
from vaekit.training.loop import train

TRAIN_ARGS = ["--set", "model.hidden=[64]", "--set", "model.latent_dim=4", "--batch-size", "32", "--epochs", "6",
              "--set", "train.checkpoint_every=3", "--set", "guard.ema_decay=0.9", "--set", "train.tensorboard=false",
              "--quiet", "--json"]


def _data(tmp: Path) -> Path:
    path = tmp / "tiny.npy"
    rng = np.random.default_rng(1)
    np.save(path, (rng.random((640, 12, 12)) * 255).astype(np.uint8))
    return path


def _train_cmd(data: Path, run: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "vaekit", "train", "--data", str(data), "--run-dir", str(run), *TRAIN_ARGS,
            *(["--resume"] if resume else [])]


def kill_and_resume(
    data: Path, run: Path, kills: int, rng: random.Random, window: tuple[float, float] = (1.5, 4.0)
) -> int:
    """Run training, SIGKILL it at random moments `kills` times, resume each time; returns kills that landed.

    Each kill comes `window` seconds (uniform) after the process starts: startup is ~1.5 s and
    training 120 steps takes a few seconds more.
    """
    landed = 0
    for i in range(kills + 1):
        # a kill during start-up can come before the run directory exists: then, as a user would, start afresh
        # (`--resume` refuses a directory that does not exist, which is usually a mistyped path)
        resume = i > 0 and run.is_dir()
        proc = subprocess.Popen(_train_cmd(data, run, resume), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if i < kills:
            time.sleep(rng.uniform(*window))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                landed += 1
        _, err = proc.communicate(timeout=300)
        if i == kills:
            assert proc.returncode == 0, err.decode()[-2000:]
        elif proc.returncode == 0:
            break  # it finished before the kill; nothing left to interrupt
    return landed


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    data = _data(tmp_path)
    ref = subprocess.run(_train_cmd(data, tmp_path / "ref", False), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    landed = kill_and_resume(data, tmp_path / "killed", kills=3, rng=random.Random(7))
    print(f"kills that landed: {landed}")
    assert landed >= 1
    # safetensors writes its header's metadata in hash order, so compare the weights, byte for byte
    a, _ = read_safetensors(tmp_path / "ref" / "model" / "model.safetensors")
    b, _ = read_safetensors(tmp_path / "killed" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].numpy().tobytes() == b[key].numpy().tobytes(), key


def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data(tmp_path)
    cfg = load_config(None, [f"data.name={data}", "model.hidden=[16]", "train.batch_size=64", "train.epochs=1",
                             "train.tensorboard=false"])
    train(cfg, tmp_path / "run", quiet=True)
    before = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / "run" / "checkpoints")}
    real_fdopen = os.fdopen

    def full(fd: int, *args, **kwargs):  # type: ignore[no-untyped-def]
        f = real_fdopen(fd, *args, **kwargs)

        def write(_: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        f.write = write
        return f

    monkeypatch.setattr(os, "fdopen", full)
    cfg2 = load_config(None, [f"data.name={data}", "model.hidden=[16]", "train.batch_size=64", "train.epochs=2",
                              "train.tensorboard=false"])
    with pytest.raises(VaekitError, match=r"No space left on device.*free disk space .*previous file is intact"):
        train(cfg2, tmp_path / "run", resume=True, quiet=True)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    after = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path / "run" / "checkpoints")}
    assert after == before
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


def test_resume_of_a_run_killed_before_its_first_checkpoint(tmp_path: Path) -> None:
    data = _data(tmp_path)
    (tmp_path / "run").mkdir()
    cfg = load_config(None, [f"data.name={data}", "model.hidden=[16]", "train.steps=3", "train.tensorboard=false"])
    with pytest.warns(UserWarning, match="no checkpoint yet"):
        assert train(cfg, tmp_path / "run", resume=True, quiet=True).steps == 3
    with pytest.raises(VaekitError, match="does not exist"):
        train(cfg, tmp_path / "nope", resume=True, quiet=True)


def test_no_pickle_anywhere_in_the_package() -> None:
    # Weights load as safetensors + JSON, configs with yaml.safe_load, arrays with allow_pickle=False. The
    # exceptions: LPIPS's .pth files (below), and CIFAR-10's own batch format: data/cifar.py reads it with an
    # unpickler that admits numpy's array reconstruction and nothing else (tests/test_images.py feeds it os.system
    # and sees it refused).
    risky = re.compile(
        r"(?<![\w.])torch\.load\(|import pickle|pickle\.load|yaml\.load\(|allow_pickle=True|yaml\.unsafe_load"
    )
    offenders = [str(p) for p in (REPO / "src" / "vaekit").rglob("*.py") if risky.search(p.read_text())]
    restricted = REPO / "src" / "vaekit" / "data" / "cifar.py"
    # and the user's own LPIPS weights (.pth files), read with torch's restricted unpickler (tensors and dicts only)
    lpips = REPO / "src" / "vaekit" / "models" / "perceptual.py"
    assert sorted(offenders) == sorted([str(restricted), str(lpips)])
    loads = re.findall(r"torch\.load\([^)]*\)", lpips.read_text())
    assert loads and all("weights_only=True" in call for call in loads)
    text = restricted.read_text()
    assert "def find_class" in text and "pickle.load" not in text and "pickle.Unpickler)" in text


def test_two_exports_of_the_same_weights_are_byte_identical(tmp_path: Path) -> None:
    # safetensors writes its metadata map in a per-process hash order; vaekit writes one fixed header order, so a
    # resumed run's model.safetensors and an uninterrupted one's have the same sha256 when their weights agree.
    code = (
        "import sys, torch\n"
        "from vaekit.config import load_config\n"
        "from vaekit.models.vae import build_model\n"
        "torch.manual_seed(0)\n"
        "build_model(load_config('mlp', ['model.input_shape=[1, 28, 28]']).model).save_pretrained(sys.argv[1])\n"
    )
    for i in range(3):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], check=True, timeout=120)
    files = [(tmp_path / str(i) / "model.safetensors").read_bytes() for i in range(3)]
    assert files[0] == files[1] == files[2]
    read_safetensors(tmp_path / "0" / "model.safetensors")  # still a valid, verified file

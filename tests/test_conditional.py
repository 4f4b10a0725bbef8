"""The conditional VAE (Sohn et al. 2015): labels from every source, sampling a class, the generative classifier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.errors import ConfigError, VaekitError
from vaekit.evaluation.evaluate import evaluate
from vaekit.models.vae import VAE, build_model
from vaekit.training.loop import train


def _npz(tmp_path: Path, n: int = 300) -> Path:
    test = load_dataset("mnist", "test")
    assert test.labels is not None
    path = tmp_path / "digits.npz"
    np.savez(path, x=test.images[:n, 0].numpy(), labels=test.labels[:n].numpy())
    return path


def test_conditional_mnist_classifies_and_samples_the_asked_class(tmp_path: Path) -> None:
    cfg = load_config("mlp", ["model.conditional=true", "train.steps=500", "train.eval_batch_size=500"])
    result = train(cfg, tmp_path / "run", quiet=True)
    assert result.model.num_classes == 10 and result.model.cfg.num_classes == 10
    assert result.test is not None and result.test.class_accuracy is not None
    assert result.test.class_accuracy > 0.5, result.test.class_accuracy  # chance 0.1; 500 steps gave 0.72
    model = VAE.from_pretrained(tmp_path / "run")
    gen = torch.Generator().manual_seed(0)
    sevens = model.sample(8, generator=gen, labels=torch.full((8,), 7))
    ones = model.sample(8, generator=torch.Generator().manual_seed(0), labels=torch.full((8,), 1))
    assert not torch.equal(sevens, ones)  # the same z, another label: another image
    subset = load_dataset("mnist", "test").subset(torch.arange(200))
    again = evaluate(model, subset, classify_k=5)
    assert again.class_accuracy is not None and again.class_accuracy > 0.5


def test_labels_from_an_npz_train_and_resume_exactly(tmp_path: Path) -> None:
    data = _npz(tmp_path)
    base = [f"data.name={data}", "model.conditional=true", "model.hidden=[32]", "model.latent_dim=4",
            "train.batch_size=32", "train.epochs=3", "train.checkpoint_every=7", "train.keep_checkpoints=50",
            "train.tensorboard=false"]
    full = train(load_config(None, base), tmp_path / "full", quiet=True)
    train(load_config(None, [*base, "train.steps=14"]), tmp_path / "part", quiet=True)
    resumed = train(load_config(None, base), tmp_path / "part", resume=True, quiet=True)
    assert full.steps == resumed.steps
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_no_labels_and_no_label_are_one_line_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.zeros((40, 8, 8), dtype=np.uint8))
    with pytest.raises(VaekitError, match=r"needs class labels, and .*plain.npy' has none"):
        train(load_config(None, [f"data.name={tmp_path / 'plain.npy'}", "model.conditional=true"]), tmp_path / "r")
    cfg = load_config(None, ["model.conditional=true", "model.num_classes=3", "model.input_shape=[1, 8, 8]"])
    model = build_model(cfg.model)
    with pytest.raises(ConfigError, match="this model is conditional on the class label: pass y"):
        model.elbo(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match=r"labels y must be \(2,\) integers in 0..2"):
        model.elbo(torch.rand(2, 1, 8, 8), y=torch.tensor([0, 5]))
    hierarchy = load_config(None, ["model.conditional=true", "model.num_classes=3", "model.kind=hierarchical",
                                   "model.groups=[4, 6]", "model.input_shape=[1, 8, 8]"])
    with pytest.raises(ConfigError, match="this model is conditional on the class label: pass y"):
        build_model(hierarchy.model).elbo(torch.rand(2, 1, 8, 8))


def test_cli_samples_a_label_and_a_row_per_class(tmp_path: Path) -> None:
    data = _npz(tmp_path)
    cmd = [sys.executable, "-m", "vaekit"]
    done = subprocess.run([*cmd, "train", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--steps", "20",
                           "--set", "model.conditional=true", "--set", "model.hidden=[16]", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    one = subprocess.run([*cmd, "sample", str(tmp_path / "run"), "--label", "7", "--n", "4", "-o",
                          str(tmp_path / "sevens.png"), "--json"], capture_output=True, text=True, timeout=120)
    grid = subprocess.run([*cmd, "sample", str(tmp_path / "run"), "--per-class", "3", "-o", str(tmp_path / "g.png"),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and grid.returncode == 0, (one.stderr, grid.stderr)
    assert json.loads(one.stdout)["n"] == 4 and json.loads(grid.stdout)["n"] == 30  # 10 classes x 3
    bad = subprocess.run([*cmd, "sample", str(tmp_path / "run"), "--label", "12"], capture_output=True, text=True)
    assert bad.returncode == 2 and "classes are 0..9" in bad.stderr
    scored = subprocess.run([*cmd, "eval", str(tmp_path / "run"), "--classify-k", "2"], capture_output=True,
                            text=True, timeout=300)
    assert scored.returncode == 0 and "generative classifier" in scored.stdout, scored.stderr


@pytest.mark.parametrize("block", ["mlp", "resconv"])
def test_a_conditional_hierarchy_uses_its_labels(tmp_path: Path, block: str) -> None:
    # Every block type: the labels reach the posteriors, the lower priors and the likelihood. After a short
    # training on digits, the true label explains an image better than a wrong one (the generative classifier
    # beats chance by far), the same latents decode differently under another label, and sampling a class
    # walks the lower priors given that class.
    data = _npz(tmp_path, 600)
    sizes = (["model.groups=[8, 16]", "model.hidden=[64]", "model.group_hidden=[32]"] if block == "mlp" else
             ["model.groups=[2, 2]", "model.group_scales=[4, 2]", "model.width=8", "guard.ema_decay=0"])
    preset = "hvae" if block == "mlp" else "lvae"
    cfg = load_config(preset, [f"data.name={data}", "model.conditional=true", *sizes, "train.steps=300",
                               "train.batch_size=50", "objective.kl_warmup_steps=100", "train.tensorboard=false",
                               "train.samples=10", "train.compile=false"])
    result = train(cfg, tmp_path / "run", quiet=True)
    model = VAE.from_pretrained(tmp_path / "run")
    assert model.num_classes == 10 and model.cfg.kind == "hierarchical"
    assert result.test is not None and result.test.class_accuracy is not None
    assert result.test.class_accuracy > 0.3, result.test.class_accuracy  # chance 0.1
    x = load_dataset(str(data), "all").subset(torch.arange(50))
    images, labels = x.batch(torch.arange(50)), x.labels
    assert labels is not None
    gen = torch.Generator().manual_seed(0)
    right = model.log_likelihood(images, 20, generator=gen, y=labels)
    wrong = model.log_likelihood(images, 20, generator=torch.Generator().manual_seed(0), y=(labels + 1) % 10)
    assert float((right - wrong).mean()) > 1.0, (right - wrong).mean()
    z = model.sample_latents(4, generator=torch.Generator().manual_seed(1), y=torch.full((4,), 3))
    assert not torch.equal(model.decode(z, torch.full((4,), 3)).mean, model.decode(z, torch.full((4,), 8)).mean)
    threes = model.sample(4, generator=torch.Generator().manual_seed(2), labels=torch.full((4,), 3))
    eights = model.sample(4, generator=torch.Generator().manual_seed(2), labels=torch.full((4,), 8))
    assert threes.shape == (4, 1, 28, 28) and not torch.equal(threes, eights)

"""The shipped feature networks (evaluation/quality/nets.py) on MNIST: their cards, the training split's distance to
the test split as the floor, distances that rise with blur and noise, precision and recall against another class, the
class histogram, and the scoring of a zoo model's samples (prior and GMM sampler)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from vaekit.data.datasets import load_dataset
from vaekit.errors import CheckpointError
from vaekit.evaluation.quality.metrics import class_shares, frechet_distance, precision_recall
from vaekit.evaluation.quality.nets import WEIGHTS, card, load_feature_net
from vaekit.evaluation.quality.score import embed

pytest.importorskip("torchmetrics")
N = 2000


@pytest.fixture(scope="module")
def mnist() -> dict[str, Tensor]:
    test, train = load_dataset("mnist", "test"), load_dataset("mnist", "train")
    assert test.labels is not None
    return {"test": test.batch(torch.arange(N)), "train": train.batch(torch.arange(N)),
            "labels": test.labels[:N], "all_test": test.batch(torch.arange(len(test))),
            "all_labels": test.labels}


@pytest.fixture(scope="module")
def net():  # type: ignore[no-untyped-def]
    return load_feature_net("lenet-mnist")


def _features(net, x: Tensor) -> Tensor:  # type: ignore[no-untyped-def]
    return embed(net, iter(x.split(500)))[0]


def test_the_card_is_the_shipped_weights(net) -> None:  # type: ignore[no-untyped-def]
    info = card("lenet-mnist")
    assert info["test_accuracy"] >= 0.99 and info["data"] == "mnist" and "vaekit features train" in info["command"]
    assert net.name == "lenet-mnist" and net.num_features == 128


def test_weights_that_do_not_match_the_card_are_refused(tmp_path: Path) -> None:
    shutil.copytree(WEIGHTS / "lenet-mnist", tmp_path / "net")
    info = json.loads((tmp_path / "net" / "card.json").read_text())
    (tmp_path / "net" / "card.json").write_text(json.dumps({**info, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="do not match its card's sha256"):
        load_feature_net("lenet-mnist", tmp_path / "net")


def test_classifier_histogram_of_the_test_set_is_within_two_points_of_its_labels(net, mnist) -> None:  # type: ignore[no-untyped-def]
    _, logits = embed(net, iter(mnist["all_test"].split(1000)))
    ours = torch.tensor(class_shares(logits, 10))
    truth = torch.bincount(mnist["all_labels"], minlength=10).float() / len(mnist["all_labels"])
    assert (ours - truth).abs().max() < 0.02
    assert (logits.argmax(-1) == mnist["all_labels"]).float().mean() >= 0.99


def _blur(x: Tensor, sigma: float) -> Tensor:
    radius = 4
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum())[None, None]
    out = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k[..., None, :])
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), k[..., :, None])


def test_train_split_is_the_floor_and_fd_rises_with_blur_and_noise(net, mnist) -> None:  # type: ignore[no-untyped-def]
    real = _features(net, mnist["test"])
    floor = frechet_distance(real, _features(net, mnist["train"]))
    gen = torch.Generator().manual_seed(0)
    blurred = [frechet_distance(real, _features(net, _blur(mnist["train"], s))) for s in (0.5, 0.8, 1.1, 1.5, 2.0)]
    noisy = [frechet_distance(real, _features(net, (mnist["train"] + s * torch.randn(
        mnist["train"].shape, generator=gen)).clamp(0, 1))) for s in (0.05, 0.1, 0.2, 0.3, 0.5)]
    assert floor < blurred[0] and floor < noisy[0]
    assert all(a < b for a, b in itertools.pairwise(blurred)), blurred
    assert all(a < b for a, b in itertools.pairwise(noisy)), noisy
    assert floor < 0.1 * blurred[-1] and floor < 0.1 * noisy[-1]


def test_precision_and_recall_against_the_same_class_and_another(net, mnist) -> None:  # type: ignore[no-untyped-def]
    labels, test, train = mnist["labels"], mnist["test"], mnist["train"]
    ones = _features(net, test[labels == 1])
    train_labels = load_dataset("mnist", "train").labels
    assert train_labels is not None
    train_ones = _features(net, train[train_labels[:N] == 1])
    zeros = _features(net, train[train_labels[:N] == 0])
    p, r = precision_recall(ones, train_ones)
    assert p > 0.7 and r > 0.7
    p, r = precision_recall(ones, zeros)
    assert p < 0.05 and r < 0.05


def test_eval_quality_scores_a_zoo_model_with_its_prior_and_a_fitted_gmm(tmp_path: Path) -> None:
    from vaekit.models.vae import load_model

    load_model("mlp-mnist").save_pretrained(tmp_path / "mlp")
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, cwd=tmp_path)

    assert cli("fit-sampler", "mlp", "--sampler", "gmm", "--data", "mnist").returncode == 0
    scores = {}
    for sampler in ("prior", "gmm"):
        out = cli("eval", "mlp", "--data", "mnist", "--quality", "--samples", "500", "--sampler", sampler, "--json")
        assert out.returncode == 0, out.stderr
        scores[sampler] = json.loads(out.stdout)
    prior, gmm = scores["prior"], scores["gmm"]
    assert prior["features"] == "lenet-mnist" and prior["n_samples"] == 500
    assert gmm["samples"]["fd"] < prior["samples"]["fd"]  # the ex-post density beats the prior
    assert prior["floor"]["fd"] < gmm["samples"]["fd"] and prior["floor"]["fd"] < prior["reconstructions"]["fd"]
    text = cli("eval", "mlp", "--data", "mnist", "--quality", "--samples", "300", "--kid-subset", "100")
    assert text.returncode == 0 and "FD-lenet-mnist" in text.stdout and "FID" not in text.stdout.replace(
        "Inception FID", "")


def test_eval_quality_on_a_run_adds_a_section_to_its_report(tmp_path: Path) -> None:
    from vaekit.config import load_config
    from vaekit.training.loop import train

    cfg = load_config(None, ["data.name=mnist", "train.steps=20", "model.hidden=[32]", "model.latent_dim=4",
                             "train.tensorboard=false", "train.samples=4", "data.imbalance=20"])
    train(cfg, tmp_path / "run", quiet=True)
    assert "Sample quality" not in (tmp_path / "run" / "report.html").read_text()
    out = subprocess.run([sys.executable, "-m", "vaekit", "eval", str(tmp_path / "run"), "--quality", "--samples",
                          "300", "--kid-subset", "100", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    saved = json.loads((tmp_path / "run" / "quality" / "prior.json").read_text())
    assert saved == json.loads(out.stdout) and (tmp_path / "run" / "quality" / "prior.png").is_file()
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Sample quality</h2>" in page and "lenet-mnist" in page and f"{saved['samples']['fd']:.2f}" in page
    # class coverage is judged against the long-tailed split the run trained on (data.imbalance), not the full one
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    counts = next(r for r in rows if r["kind"] == "data")["class_counts"]
    want = [n / sum(counts) for n in counts]
    assert saved["class_coverage"]["train_shares"] == pytest.approx(want) and want[0] > 15 * want[9]
    assert sum(saved["class_coverage"]["shares"]) == pytest.approx(1.0) and "TV to training classes" in page

"""Putting a model to work: latent walks, encode/decode, scores and AUROC, the HTML report."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_fashion
from vaekit.apps.explore import dims_by_kl, lerp, slerp
from vaekit.apps.score import auroc
from vaekit.config import load_config
from vaekit.training.loop import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def vaekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vaekit", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run2d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("use") / "run"
    train(load_config("seed", ["train.steps=300", "train.log_every=50"]), run, quiet=True)
    return run


def test_slerp_and_lerp() -> None:
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    t = torch.linspace(0, 1, 5)
    path = slerp(z0, z1, t)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(lerp(z0, z1, t)[2], torch.tensor([0.5, 1.0]))
    unit = slerp(z0, torch.tensor([0.0, 1.0]), t)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(5))  # stays on the circle
    angles = torch.atan2(unit[:, 1], unit[:, 0])  # at a constant angular speed
    torch.testing.assert_close(angles.diff(), torch.full((4,), math.pi / 8))
    torch.testing.assert_close(slerp(z0, 2 * z0, t), lerp(z0, 2 * z0, t))  # parallel: a straight line


def test_dims_by_kl() -> None:
    assert dims_by_kl(torch.tensor([0.1, 3.0, 0.0, 1.0]), 3) == [1, 3, 0]


def test_auroc_against_brute_force_pairs() -> None:
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 20, 300).astype(np.float64))  # ties on purpose
    b = torch.from_numpy(rng.integers(5, 25, 200).astype(np.float64))
    pairs = (b[None, :] > a[:, None]).double() + 0.5 * (b[None, :] == a[:, None]).double()
    assert math.isclose(auroc(a, b), pairs.mean().item(), rel_tol=1e-12)
    assert auroc(torch.zeros(3), torch.ones(3)) == 1.0 and auroc(torch.ones(3), torch.zeros(3)) == 0.0


def test_interpolate_traverse_latent_map(run2d: Path, tmp_path: Path) -> None:
    out = vaekit("interpolate", str(run2d), "--from", "3", "--to", "7", "--steps", "6", "-o", str(tmp_path / "i.png"),
                 "--npy", str(tmp_path / "i.npy"), "--json")
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "i.png").size == (6 * 30 + 2, 2 * 30 + 2)
    paths = np.load(tmp_path / "i.npy")
    assert paths.shape == (2, 6, 2)
    assert np.allclose(paths[0, [0, -1]], paths[1, [0, -1]])  # both paths share their endpoints
    out = vaekit("traverse", str(run2d), "--dims", "auto", "--steps", "5", "-o", str(tmp_path / "t.png"), "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["dims"]) == [0, 1]
    assert Image.open(tmp_path / "t.png").size == (5 * 30 + 2, 2 * 30 + 2)
    out = vaekit("latent-map", str(run2d), "--n", "500", "-o", str(tmp_path / "m.png"))
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "m.png").size[0] > 800  # scatter and manifold side by side
    bad = vaekit("traverse", str(run2d), "--dims", "0,9")
    assert bad.returncode == 2 and "latent dimensions are 0..1" in bad.stderr


def test_encode_decode_round_trip(run2d: Path, tmp_path: Path) -> None:
    z = tmp_path / "z.npy"
    assert vaekit("encode", str(run2d), "-o", str(z)).returncode == 0
    latents = np.load(z)
    assert latents.shape == (10000, 2)
    np.save(tmp_path / "few.npy", latents[:12])
    out = vaekit("decode", str(run2d), str(tmp_path / "few.npy"), "-o", str(tmp_path / "d.png"), "--npy",
                 str(tmp_path / "d.npy"))
    assert out.returncode == 0, out.stderr
    assert np.load(tmp_path / "d.npy").shape == (12, 1, 28, 28)
    np.save(tmp_path / "wrong.npy", latents[:, :1])
    bad = vaekit("decode", str(run2d), str(tmp_path / "wrong.npy"))
    assert bad.returncode == 2 and "expected floats (N, 2)" in bad.stderr


def test_score_csv(run2d: Path, tmp_path: Path) -> None:
    out = vaekit("score", str(run2d), "-o", str(tmp_path / "s.csv"), "--json")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert len(rows) == 10000 and rows[0]["dataset"] == "mnist"
    mean = np.mean([float(r["neg_elbo"]) for r in rows])
    assert math.isclose(mean, json.loads(out.stdout)["mean"]["mnist"], rel_tol=1e-5)


@needs_fashion
def test_score_ood_auroc(run2d: Path, tmp_path: Path) -> None:
    out = vaekit("score", str(run2d), "--ood", "fashion-mnist", "-o", str(tmp_path / "s.csv"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["auroc"] > 0.9  # Fashion-MNIST is far from MNIST under an MNIST model


def test_sample_is_repeatable(run2d: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert vaekit("sample", str(run2d), "--seed", "7", "-o", str(tmp_path / f"{name}.png")).returncode == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium(run2d: Path, tmp_path: Path) -> None:
    report = run2d / "report.html"
    assert report.is_file()  # train writes it
    assert vaekit("report", str(run2d), "-o", str(tmp_path / "r.html")).returncode == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", "--virtual-time-budget=5000"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--dump-dom", report.as_uri()],
                             capture_output=True, text=True, timeout=120)
    loaded = dom.stdout.split('data-images-loaded="', 1)[1].split('"', 1)[0]
    n_ok, n_all = map(int, loaded.split("/"))
    assert n_all >= 4 and n_ok == n_all, loaded
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, *flags, f"--user-data-dir={profile}", "--window-size=1200,2000",
                        f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.02  # text, plots and images: plenty of dark pixels


def test_tensorboard_events(run2d: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run2d / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/neg_elbo", "train/grad_norm", "test/neg_elbo", "test/active_units"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/neg_elbo")] == [50, 100, 150, 200, 250, 300]
    assert "samples" in tags["images"]

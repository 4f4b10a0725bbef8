"""Sample-quality metrics (evaluation/quality/metrics.py): FD and KID equal to torchmetrics' on the same images and
feature module, closed forms, the k-NN metrics against their definitions written as loops, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from vaekit.errors import ConfigError
from vaekit.evaluation.quality.metrics import (
    class_shares,
    density_coverage,
    frechet_distance,
    kid,
    knn_radii,
    precision_recall,
)
from vaekit.evaluation.quality.nets import LeNet, ResNet
from vaekit.evaluation.quality.score import embed

torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")
torchmetrics_kid = pytest.importorskip("torchmetrics.image.kid")


class Features(nn.Module):
    """torchmetrics' way in: images to the net's features."""

    def __init__(self, net: LeNet) -> None:
        super().__init__()
        self.net, self.num_features = net, net.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x.float()).double()  # vaekit scores features in float64


def _images(n: int, seed: int, shift: float = 0.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=gen) * 0.8 + shift).clamp(0, 1)


@pytest.fixture(scope="module")
def net() -> LeNet:
    torch.manual_seed(0)
    return LeNet().eval().requires_grad_(False)


def test_fd_and_kid_equal_torchmetrics_on_the_same_images_and_features(net: LeNet) -> None:
    real_x, fake_x = _images(300, 0), _images(300, 1, shift=0.1)
    real, _ = embed(net, iter(real_x.split(100)))
    fake, _ = embed(net, iter(fake_x.split(100)))
    ref_fd = torchmetrics_fid.FrechetInceptionDistance(feature=Features(net))
    ref_kid = torchmetrics_kid.KernelInceptionDistance(feature=Features(net), subsets=20, subset_size=100)
    for ref in (ref_fd, ref_kid):
        ref.update(real_x, real=True)
        ref.update(fake_x, real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(ref_fd.compute()), rel=1e-3)
    torch.manual_seed(7)
    want_mean, want_std = ref_kid.compute()
    mean, std = kid(real, fake, subsets=20, subset_size=100, seed=7)
    assert mean == pytest.approx(float(want_mean), rel=1e-3) and std == pytest.approx(float(want_std), rel=1e-3)


def test_fd_closed_forms() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=gen, dtype=torch.float64) @ torch.randn(8, 8, generator=gen, dtype=torch.float64)
    shift = torch.arange(8, dtype=torch.float64) / 4
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)  # same covariance
    # N(0, I) against N(0, 4 I) in d dims: tr(I + 4I - 2 * 2I) = d, up to the sampling error of the covariances
    a, b = torch.randn(20000, 4, generator=gen), 2 * torch.randn(20000, 4, generator=gen)
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.15)


def _brute(real: Tensor, fake: Tensor, k: int) -> tuple[float, float, float, float]:
    def radius(points: Tensor, i: int) -> float:
        d = sorted(float((points[i] - points[j]).norm()) for j in range(len(points)) if j != i)
        return d[k - 1]

    r_real = [radius(real, i) for i in range(len(real))]
    r_fake = [radius(fake, j) for j in range(len(fake))]
    inside = [[float((f - r).norm()) <= r_real[i] for i, r in enumerate(real)] for f in fake]
    precision = sum(any(row) for row in inside) / len(fake)
    recall = sum(any(float((r - f).norm()) <= r_fake[j] for j, f in enumerate(fake)) for r in real) / len(real)
    density = sum(sum(row) for row in inside) / (k * len(fake))
    coverage = sum(any(inside[j][i] for j in range(len(fake))) for i in range(len(real))) / len(real)
    return precision, recall, density, coverage


def test_knn_metrics_match_their_definitions_written_as_loops() -> None:
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(40, 3, generator=gen), torch.randn(35, 3, generator=gen) * 1.3 + 0.4
    for k in (3, 5):
        p, r, d, c = _brute(real, fake, k)
        assert precision_recall(real, fake, k) == pytest.approx((p, r))
        assert density_coverage(real, fake, k) == pytest.approx((d, c))
    assert knn_radii(real, 1).shape == (40,)


def test_precision_recall_near_one_for_a_set_against_a_fresh_draw_and_zero_against_a_far_one() -> None:
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(1500, 6, generator=gen), torch.randn(1500, 6, generator=gen)
    p, r = precision_recall(a, b)
    assert p > 0.9 and r > 0.9
    p, r = precision_recall(a, b + 20)
    assert p == 0 and r == 0
    density, coverage = density_coverage(a, b)
    assert 0.8 < density < 1.2 and coverage > 0.9


def test_class_shares_sum_to_one() -> None:
    logits = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 3, 0], [0, 0, 1]])
    assert class_shares(logits, 3) == pytest.approx([0.25, 0.5, 0.25])


def test_bad_input_is_one_line(net: LeNet) -> None:
    with pytest.raises(ConfigError, match="at least 100 samples"):
        kid(torch.randn(50, 4), torch.randn(500, 4), subset_size=100)
    with pytest.raises(ConfigError, match="k = 3"):
        precision_recall(torch.randn(3, 4), torch.randn(10, 4))
    with pytest.raises(ConfigError, match="one width"):
        frechet_distance(torch.randn(10, 4), torch.randn(10, 5))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        embed(net, iter([torch.full((2, 1, 28, 28), 1.5)]))
    with pytest.raises(ConfigError, match=r"reads images \(1, 28, 28\)"):
        embed(net, iter([torch.rand(2, 3, 32, 32)]))
    assert ResNet().features(torch.rand(2, 3, 32, 32)).shape == (2, 128)

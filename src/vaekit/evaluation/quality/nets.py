"""Feature networks for sample quality: small classifiers trained by vaekit on each data set's training split.

Inception-v3 weights (what FID is defined with) are downloaded at run time by every library that computes FID;
they cannot be fetched offline, and on digits a classifier trained on the data itself is what TTUR's maintainers
recommend. So vaekit ships its own, fixed and named: every distance computed in one of these feature spaces carries
the network's name ("FD-lenet-mnist"), never "FID", and is comparable only with numbers from the same network.

- `lenet`: two 5x5 conv layers and two dense layers (LeCun et al. 1998's shape, ReLU, batch norm, max pooling) for
  28x28 grey images; features = the 128 activations before the classifier.
- `resnet`: a small pre-activation ResNet (He et al. 2016) for 32x32 colour images, three stages of 32, 64, 128
  channels, one residual block each after a stride-2 stage entry; features = the 128 pooled activations.

Inputs are images in [0, 1], (B, C, H, W); each network normalizes them itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.errors import CheckpointError, ConfigError
from vaekit.registry import Registry
from vaekit.storage import load_state, read_safetensors, tensors_digest

WEIGHTS = Path(__file__).resolve().parent / "weights"


class FeatureNet(nn.Module):
    """A classifier whose penultimate activations are the feature space: `features(x)`, `forward(x)` = logits."""

    input_shape: tuple[int, int, int]
    num_features: int  # torchmetrics reads this name
    name: str = "custom"

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def head(self, features: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class LeNet(FeatureNet):
    def __init__(self, channels: int = 1, classes: int = 10, mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__()
        self.input_shape, self.num_features = (channels, 28, 28), 128
        self.mean, self.std = mean, std
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 5x5
        )
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(64 * 25, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU())
        self.drop, self.out = nn.Dropout(0.3), nn.Linear(128, classes)

    def features(self, x: Tensor) -> Tensor:
        return self.dense(self.conv((x - self.mean) / self.std))

    def head(self, features: Tensor) -> Tensor:
        return self.out(self.drop(features))


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(x))
        skip = self.skip(h) if self.skip is not None else x
        return skip + self.conv2(F.relu(self.bn2(self.conv1(h))))


class ResNet(FeatureNet):
    mean: Tensor
    std: Tensor

    def __init__(self, channels: int = 3, classes: int = 10, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.input_shape, self.num_features = (channels, 32, 32), widths[-1]
        self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45][:channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.24, 0.26][:channels]).view(1, -1, 1, 1), persistent=False)
        self.stem = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        c = widths[0]
        for i, w in enumerate(widths):
            blocks += [PreActBlock(c, w, 1 if i == 0 else 2), PreActBlock(w, w, 1)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c)
        self.out = nn.Linear(c, classes)

    def features(self, x: Tensor) -> Tensor:
        h = self.blocks(self.stem((x - self.mean) / self.std))
        return F.relu(self.bn(h)).mean((-2, -1))

    def head(self, features: Tensor) -> Tensor:
        return self.out(features)


@dataclass(frozen=True)
class FeatureSpec:
    """A shipped feature network: which data set it reads and how it is built."""

    data: str
    build: Callable[[], FeatureNet]
    classes: tuple[str, ...]


DIGITS = tuple(str(i) for i in range(10))
FASHION = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FEATURE_NETS: Registry[FeatureSpec] = Registry("feature network", {
    "lenet-mnist": FeatureSpec("mnist", LeNet, DIGITS),
    "lenet-fashion-mnist": FeatureSpec("fashion-mnist", LeNet, FASHION),
    "resnet-cifar10-jpeg": FeatureSpec("cifar10-jpeg", ResNet, CIFAR),
})


def feature_net_for(data: str) -> str:
    """The shipped feature network for data set `data` (also its binarized form), or a one-line error."""
    base = data.removeprefix("binarized-")
    for name in FEATURE_NETS.names():
        if FEATURE_NETS.get(name).data == base:
            return name
    raise ConfigError(
        f"no shipped feature network reads {data!r} (they read {', '.join(FEATURE_NETS.names())}); pass your own: "
        "--features FILE.safetensors with its --features-arch, or quality(..., features=your_module) from Python"
    )


def card(name: str) -> dict[str, Any]:
    """The card of shipped feature network `name`: data, command, training time, test accuracy, sha256."""
    path = WEIGHTS / name / "card.json"
    if not path.is_file():
        raise CheckpointError(f"feature network {name!r} has no weights in this install ({path} is missing)")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def load_feature_net(name: str, folder: str | Path | None = None) -> FeatureNet:
    """A shipped feature network by name (or one written by `train_feature_net` into `folder`), in eval mode,
    its weights' sha256 checked against its card."""
    spec = FEATURE_NETS.get(name)
    where = Path(folder) if folder is not None else WEIGHTS / name
    info = json.loads((where / "card.json").read_text(encoding="utf-8")) if (where / "card.json").is_file() else {}
    if not (where / "model.safetensors").is_file():
        raise CheckpointError(f"feature network {name!r}: no model.safetensors in {str(where)!r}")
    tensors, _ = read_safetensors(where / "model.safetensors")
    if info.get("sha256") and tensors_digest(tensors) != info["sha256"]:
        raise CheckpointError(f"feature network {name!r}: weights in {str(where)!r} do not match its card's sha256")
    net = spec.build()
    load_state(net, tensors, str(where / "model.safetensors"))
    net.name = name
    return net.eval().requires_grad_(False)

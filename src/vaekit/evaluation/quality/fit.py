"""Train a feature network (evaluation/quality/nets.py) on its data set's training split, with a fixed seed, and
write it with its card: `vaekit features train NAME`.

SGD with Nesterov momentum under a one-cycle learning rate (Smith & Topin 2019), label smoothing 0.1, weight decay
5e-4, and light augmentation: shifts of up to 2 pixels for 28x28 images; 4-pixel padded crops and horizontal flips
for 32x32 colour. The card records the data, the command, the training time, the test accuracy and the weights'
sha256; `load_feature_net` checks the sha256.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from vaekit.data.datasets import Dataset, load_dataset
from vaekit.errors import ConfigError
from vaekit.evaluation.quality.nets import FEATURE_NETS, FeatureNet
from vaekit.storage import atomic_write_bytes, tensors_digest, write_safetensors

EPOCHS = {"lenet-mnist": 6, "lenet-fashion-mnist": 15, "resnet-cifar10-jpeg": 15}
PRECISION = {"resnet-cifar10-jpeg": "bf16"}  # its convolutions train ~2.4x faster in bf16 on a 2-core CPU


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random shifts (28x28: up to 2 px) or padded crops and flips (32x32), per image."""
    b, _, h, w = x.shape
    pad = 2 if h == 28 else 4
    padded = F.pad(x, (pad, pad, pad, pad), mode="constant" if h == 28 else "reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, x.shape[1], h, w)
    out = out.gather(3, cols)
    if h != 28:
        flip = torch.rand(b, generator=gen) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


@torch.no_grad()
def accuracy(net: FeatureNet, data: Dataset, batch_size: int = 1000) -> float:
    net.eval()
    hits = 0
    for x, y in data.labelled_batches(batch_size):
        hits += int((net(x).argmax(-1) == y).sum())
    return hits / len(data)


def _epoch(net: FeatureNet, data: Dataset, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
           batch_size: int, bar: Any, precision: str = "fp32") -> float:
    net.train()
    assert data.labels is not None
    order = torch.randperm(len(data), generator=gen)
    total = 0.0
    for start in range(0, len(data) - batch_size + 1, batch_size):  # whole batches only (batch norm)
        idx = order[start : start + batch_size]
        x, y = augment(data.batch(idx), gen), data.labels[idx]
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item()
        bar.update(1)
    return total / max(len(data) // batch_size, 1)


def train_feature_net(name: str, out: str | Path, epochs: int | None = None, seed: int = 0,
                      data_dir: str | Path | None = None, batch_size: int = 128, quiet: bool = False,
                      command: str = "", precision: str | None = None) -> dict[str, Any]:
    """Train feature network `name` on its data's training split and write `out`/model.safetensors + card.json."""
    spec = FEATURE_NETS.get(name)
    epochs = epochs or EPOCHS[name]
    precision = precision or PRECISION.get(name, "fp32")
    train, test = (load_dataset(spec.data, split, data_dir) for split in ("train", "test"))
    if train.labels is None or test.labels is None:
        raise ConfigError(f"{spec.data} has no labels here; a feature network is trained as a classifier")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = spec.build()
    steps = epochs * (len(train) // batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.25)
    started = time.perf_counter()
    with tqdm(total=steps, desc=f"training {name}", disable=quiet, unit="step") as bar:
        for epoch in range(epochs):
            loss = _epoch(net, train, opt, sched, gen, batch_size, bar, precision)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}")
    minutes = (time.perf_counter() - started) / 60
    net.load_state_dict(stored(net))  # the accuracy on the card is that of the weights as shipped
    info = _card(name, net, accuracy(net, test), minutes, epochs, seed, command) | {"precision": precision}
    write(net, info, Path(out))
    return info


def _card(name: str, net: FeatureNet, acc: float, minutes: float, epochs: int, seed: int,
          command: str) -> dict[str, Any]:
    return {"name": name, "data": FEATURE_NETS.get(name).data, "split": "train", "test_accuracy": round(acc, 5),
            "epochs": epochs, "seed": seed, "training_minutes": round(minutes, 2),
            "command": command or f"vaekit features train {name} --epochs {epochs} --seed {seed}",
            "machine": f"{platform.machine()}, torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"),
            "num_features": net.num_features}


def stored(net: FeatureNet) -> dict[str, Tensor]:
    """The weights as shipped: floating-point tensors in fp16 (half the size; loading casts them back to fp32)."""
    return {k: (v.half() if v.is_floating_point() else v).detach().contiguous() for k, v in net.state_dict().items()}


def write(net: FeatureNet, info: dict[str, Any], out: Path) -> None:
    """The weights, then the card that names their sha256 (a card never points at weights not yet written)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = stored(net)
    write_safetensors(out / "model.safetensors", tensors, {"format": "vaekit-features/1"})
    info = info | {"sha256": tensors_digest(tensors), "stored_as": "fp16"}
    atomic_write_bytes(out / "card.json", (json.dumps(info, indent=2) + "\n").encode())


"""Train pythae's VQVAE, then its PixelCNN sampler, each for a wall-clock budget; write samples and reconstructions.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv; bench/vq.py calls it and
scores what it writes in vaekit's feature spaces:

    bench/.venv-pythae/bin/python bench/pythae_vq.py DATA.npz --ae-minutes A --prior-minutes P --out OUT.npz

The networks are vaekit's `vqvae` / `cifar-vq` presets' (models/vq.py's GridEncoder and GridDecoder: strided 4x4
convolutions, residual blocks, a 1x1 to the code width; written out here in plain torch, with a sigmoid on the
decoder's output for pythae's MSE loss), so the two tools differ in what they do with the same networks: pythae's
VQVAE with K = 512 and commitment 0.25 (the presets' values) and its default quantizer, learned by its codebook loss
(pythae 0.1.2's PixelCNN sampler fails on its EMA quantizer: `quantizer.embeddings` is a tensor there, TypeError),
Adam at the paper's 2e-4, batch 128; then its PixelCNN sampler (10 masked layers of kernel 5, its defaults) fitted
on the training codes at lr 1e-3. Each stage stops after the first epoch that passes its budget (pythae's trainer has no
finer stop).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VQVAE, VQVAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.samplers import PixelCNNSampler, PixelCNNSamplerConfig
from pythae.samplers.pixelcnn_sampler import pixelcnn_sampler
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from torch import nn

from pythae_quality import Budget, TimeUp, images

# per image shape: (channel widths, residual blocks, code width) of vaekit's vqvae / cifar-vq presets
PRESETS = {(1, 28, 28): ([64, 128], 2, 16), (3, 32, 32): ([128, 128], 2, 64)}
BATCH, AE_LR, PRIOR_LR = 128, 2e-4, 1e-3


class Res(nn.Module):
    def __init__(self, width: int, scale: float) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(width, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        with torch.no_grad():
            self.conv2.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


class GridEncoder(BaseEncoder):
    def __init__(self, channels: int, widths: list[int], blocks: int, code: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip([channels, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
        layers += [Res(widths[-1], blocks**-0.5) for _ in range(blocks)]
        self.net = nn.Sequential(*layers, nn.ReLU(), nn.Conv2d(widths[-1], code, 1))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(embedding=self.net(x))  # (B, d, h, w)


class GridDecoder(BaseDecoder):
    def __init__(self, channels: int, widths: list[int], blocks: int, code: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(code, widths[-1], 3, padding=1)]
        layers += [Res(widths[-1], blocks**-0.5) for _ in range(blocks)]
        layers.append(nn.ReLU())
        outs = [*widths[::-1][1:], channels]
        for i, (n_in, n_out) in enumerate(zip(widths[::-1], outs, strict=True)):
            layers.append(nn.ConvTranspose2d(n_in, n_out, 4, stride=2, padding=1))
            layers.append(nn.ReLU() if i < len(outs) - 1 else nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z))


def train_autoencoder(x_train: torch.Tensor, minutes: float, tmp: str) -> tuple[Any, int, float]:
    shape = tuple(x_train.shape[1:])
    widths, blocks, code = PRESETS[shape]
    config = VQVAEConfig(input_dim=shape, latent_dim=code, num_embeddings=512, use_ema=False,
                         commitment_loss_factor=0.25)
    model = VQVAE(config, encoder=GridEncoder(shape[0], widths, blocks, code),
                  decoder=GridDecoder(shape[0], widths, blocks, code))
    budget = Budget(minutes)
    processor = DataProcessor()
    trainer = BaseTrainer(model=model, train_dataset=processor.to_dataset(processor.process_data(x_train)),
                          eval_dataset=None, callbacks=[budget],
                          training_config=BaseTrainerConfig(output_dir=tmp, num_epochs=10_000, learning_rate=AE_LR,
                                                            per_device_train_batch_size=BATCH, no_cuda=True))
    budget.start = time.perf_counter()
    with contextlib.suppress(TimeUp):
        trainer.train()
    return model.cpu().eval(), budget.epochs, time.perf_counter() - budget.start


def fit_prior(model: Any, x_train: torch.Tensor, minutes: float, tmp: str) -> tuple[Any, int, float]:
    """pythae's PixelCNN sampler fitted for `minutes` (its fit() builds its own BaseTrainer: given the budget here)."""
    sampler = PixelCNNSampler(model, PixelCNNSamplerConfig())
    budget = Budget(minutes)
    original = pixelcnn_sampler.BaseTrainer
    pixelcnn_sampler.BaseTrainer = functools.partial(original, callbacks=[budget])  # type: ignore[misc]
    try:
        budget.start = time.perf_counter()
        with contextlib.suppress(TimeUp):
            sampler.fit(x_train, training_config=BaseTrainerConfig(output_dir=tmp, num_epochs=10_000,
                                                                   learning_rate=PRIOR_LR, no_cuda=True,
                                                                   per_device_train_batch_size=BATCH))
    finally:
        pixelcnn_sampler.BaseTrainer = original
    sampler.is_fitted = True  # the budget stopped fit() before it marked the sampler (its PixelCNN trained in place)
    sampler.pixelcnn_model.eval()
    return sampler, budget.epochs, time.perf_counter() - budget.start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--ae-minutes", type=float, required=True)
    parser.add_argument("--prior-minutes", type=float, required=True)
    parser.add_argument("--out", required=True, help=".npz: samples and reconstructions, float16")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = np.load(args.data)
    x_train, x_test = images(data["train"]), images(data["test"])
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model, ae_epochs, ae_seconds = train_autoencoder(x_train, args.ae_minutes, tmp)
        with torch.no_grad():
            recon = torch.cat([model.reconstruct(x_test[i : i + 500]) for i in range(0, args.samples, 500)])
            codes = torch.cat([model({"data": x_test[i : i + 500]}).quantized_indices.flatten()
                               for i in range(0, len(x_test), 500)])
        sampler, prior_epochs, prior_seconds = fit_prior(model, x_train, args.prior_minutes, tmp)
    t = time.perf_counter()
    with torch.no_grad():
        samples = sampler.sample(num_samples=args.samples, batch_size=500, return_gen=True)
    counts = torch.bincount(codes.long(), minlength=512).double()
    p = counts / counts.sum()
    info = {"ae_epochs": ae_epochs, "ae_seconds": round(ae_seconds, 1), "prior_epochs": prior_epochs,
            "prior_seconds": round(prior_seconds, 1), "sample_seconds": round(time.perf_counter() - t, 1),
            "code_usage": float((counts > 0).double().mean()),
            "code_perplexity": float(torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())),
            "torch": torch.__version__}
    np.savez(args.out, info=np.array(json.dumps(info)), samples=samples.clamp(0, 1).to(torch.float16).numpy(),
             reconstructions=recon.clamp(0, 1).to(torch.float16).numpy())
    print(json.dumps(info))


if __name__ == "__main__":
    main()

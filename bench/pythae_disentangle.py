"""Train one of pythae's disentangling VAEs on dsprites-like images for a wall-clock budget; save its encoder.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv; bench/disentanglement.py
calls it with images it rendered (dsprites-like is drawn by vaekit) and scores the saved encoder with vaekit's
metric code, so both tools' models meet the same metrics:

    bench/.venv-pythae/bin/python bench/pythae_disentangle.py TRAIN.npy TEST.npy --model beta-tcvae --minutes 10 \
        --out ENCODER.pt [--seed S]

The network is bench/disentanglement.py's (vaekit's `conv` encoder and decoder, written out here in plain torch
with the same parameter names, so vaekit's ConvEncoder loads the saved weights): four stride-2 4x4 convolutions of
32, 32, 64, 64 channels and a linear head to 10 means and 10 log-variances; a linear layer to 64x4x4 and four
transposed convolutions (64, 32, 32, 1), a sigmoid for pythae's "bce" loss. Adam 1e-4, batch 64, as vaekit's runs.
The models, each with vaekit's hyperparameters for the same objective:

- beta-tcvae: BetaTCVAE, alpha 1, beta 6, gamma 1, minibatch stratified sampling (vaekit: beta-tcvae, beta 6);
- factor-vae: FactorVAE, gamma 10, its 6-layer critic at Adam 1e-4, betas (0.5, 0.9) (vaekit: factor-vae);
- disentangled-beta-vae: DisentangledBetaVAE (Burgess et al.), beta 1000, C 25 nats, C warmed up over the epochs
  the budget is expected to reach at --steps-per-second (bench/disentanglement.py passes the rate its probe of
  vaekit's network measured; vaekit: annealed-vae, gamma 1000, C to 25 over the run's expected steps).

The budget ends training after the first step past it (a step callback). The saved file holds the encoder's state
dict and a JSON-ready `info` (steps, epochs, seconds, the test -ELBO of one posterior sample per test image).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pythae.data.preprocessors import DataProcessor
from pythae.models import (
    BetaTCVAE,
    BetaTCVAEConfig,
    DisentangledBetaVAE,
    DisentangledBetaVAEConfig,
    FactorVAE,
    FactorVAEConfig,
)
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import AdversarialTrainer, AdversarialTrainerConfig, BaseTrainer, BaseTrainerConfig
from torch import nn

from pythae_quality import Budget, TimeUp

LATENT, LR, BATCH = 10, 1e-4, 64


class Encoder(BaseEncoder):  # vaekit's ConvEncoder((1, 64, 64), [32, 32, 64, 64], 20, "relu"), same names
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_in, n_out in zip([1, 32, 32, 64], [32, 32, 64, 64], strict=True):
            layers += [nn.Conv2d(n_in, n_out, 4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.head = nn.Linear(64 * 4 * 4, 2 * LATENT)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = self.head(self.conv(x).flatten(1))
        return ModelOutput(embedding=out[:, :LATENT], log_covariance=out[:, LATENT:])


class Decoder(BaseDecoder):  # vaekit's ConvDecoder((1, 64, 64), [64, 64, 32, 32], 10, "relu", 1), then a sigmoid
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(LATENT, 64 * 4 * 4), nn.ReLU())
        widths = [64, 64, 32, 32, 1]
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            layers.append(nn.ReLU() if i < 3 else nn.Sigmoid())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.deconv(self.head(z).view(-1, 64, 4, 4)))


def build(name: str, minutes: float, n_train: int, tmp: str, rate: float) -> tuple[Any, Any, type]:
    common = {"input_dim": (1, 64, 64), "latent_dim": LATENT, "reconstruction_loss": "bce"}
    nets = {"encoder": Encoder(), "decoder": Decoder()}
    trainer = {"output_dir": tmp, "num_epochs": 100_000, "per_device_train_batch_size": BATCH, "no_cuda": True}
    if name == "beta-tcvae":
        model = BetaTCVAE(BetaTCVAEConfig(**common, alpha=1.0, beta=6.0, gamma=1.0, use_mss=True), **nets)
        return model, BaseTrainerConfig(learning_rate=LR, **trainer), BaseTrainer
    if name == "factor-vae":
        model = FactorVAE(FactorVAEConfig(**common, gamma=10.0), **nets)
        return model, AdversarialTrainerConfig(autoencoder_learning_rate=LR, discriminator_learning_rate=LR,
                                               discriminator_optimizer_params={"betas": (0.5, 0.9)},
                                               **trainer), AdversarialTrainer
    expected_epochs = minutes * 60 * rate * BATCH / n_train
    warmup = max(0, round(expected_epochs) - 1)  # C reaches 25 nats in the last expected epoch
    model = DisentangledBetaVAE(DisentangledBetaVAEConfig(**common, beta=1000.0, C=25.0, warmup_epoch=warmup), **nets)
    return model, BaseTrainerConfig(learning_rate=LR, **trainer), BaseTrainer


@torch.no_grad()
def test_neg_elbo(model: Any, x: torch.Tensor) -> float:
    """-log p(x|z) (Bernoulli, one posterior sample) + KL(q || N(0, I)) in nats, averaged over the test images."""
    total = 0.0
    for part in x.split(500):
        out = model.encoder(part)
        mu, logvar = out.embedding, out.log_covariance
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        probs = model.decoder(z).reconstruction.clamp(1e-7, 1 - 1e-7)
        recon = F.binary_cross_entropy(probs, part, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        total += float((recon + kl).sum())
    return total / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help=".npy, uint8 (N, 1, 64, 64) in {0, 1}")
    parser.add_argument("test", help=".npy, uint8 (M, 1, 64, 64) in {0, 1}")
    parser.add_argument("--model", required=True, choices=["beta-tcvae", "factor-vae", "disentangled-beta-vae"])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--out", required=True, help=".pt: the encoder's state dict and info")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps-per-second", type=float, default=8.0,
                        help="the expected training rate, for disentangled-beta-vae's C warm-up over the budget")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    x_train = torch.from_numpy(np.load(args.train)).float()
    x_test = torch.from_numpy(np.load(args.test)).float()
    with tempfile.TemporaryDirectory() as tmp:
        model, config, trainer_cls = build(args.model, args.minutes, len(x_train), tmp, args.steps_per_second)
        budget = Budget(args.minutes)
        processor = DataProcessor()
        trainer = trainer_cls(model=model, train_dataset=processor.to_dataset(x_train), eval_dataset=None,
                              training_config=config, callbacks=[budget])
        budget.start = time.perf_counter()
        with contextlib.suppress(TimeUp):
            trainer.train()
        seconds = time.perf_counter() - budget.start
    model = model.cpu().eval()
    info = {"tool": "pythae 0.1.2", "model": args.model, "steps": budget.steps, "epochs": budget.epochs,
            "train_images": len(x_train), "train_seconds": round(seconds, 1),
            "expected_steps_per_second": args.steps_per_second,
            "neg_elbo": test_neg_elbo(model, x_test)}
    if not math.isfinite(info["neg_elbo"]):
        info["neg_elbo"] = None
    torch.save({"encoder": model.encoder.state_dict(), "info": info}, args.out)
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()

"""Train pythae's VAE on the same network and data as vaekit's `mlp` preset; print one JSON line.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv:

    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz EPOCHS [cpu|cuda] [--curve] [--lr LR --batch B]
                                                      [--seed S]

--curve adds the test -ELBO after every epoch and the training seconds up to it (`curve`), the time of
that evaluation excluded (bench/time_to_quality.py). --lr and --batch default to the pytorch/examples
setting (1e-3, 128) the throughput table uses; pythae's own trainer defaults are 1e-4 and 64.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
from pythae.trainers.training_callbacks import TrainingCallback
from torch import nn


class Encoder(BaseEncoder):  # 784-400-(20, 20), as pytorch/examples vae/main.py
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.mu, self.logvar = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = torch.relu(self.fc1(x.reshape(x.shape[0], -1)))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))


class Decoder(BaseDecoder):  # 20-400-784, sigmoid: pythae's "bce" loss takes probabilities
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))


def test_neg_elbo(model: VAE, x_test: torch.Tensor) -> float:
    """pythae's own loss (-ELBO per example, nats, the Bernoulli sum over pixels) on the test images."""
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x_test), 1000):
            x = x_test[start : start + 1000].to(next(model.parameters()).device)
            total += float(model({"data": x}).loss) * len(x)
    model.train(was_training)
    return total / len(x_test)


class Curve(TrainingCallback):
    """After each epoch: the test -ELBO, and the training seconds so far with every evaluation's time taken out."""

    def __init__(self, model: VAE, x_test: torch.Tensor) -> None:
        self.model, self.x_test, self.points = model, x_test, []
        self.start, self.eval_seconds = time.perf_counter(), 0.0

    def on_epoch_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        t = time.perf_counter()
        train_seconds = t - self.start - self.eval_seconds
        neg_elbo = test_neg_elbo(self.model, self.x_test)
        self.points.append({"epoch": len(self.points) + 1, "train_seconds": train_seconds, "neg_elbo": neg_elbo})
        self.eval_seconds += time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("epochs", type=int)
    parser.add_argument("device", nargs="?", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--curve", action="store_true")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, help="seeds the model's initialization and the trainer (default: 0 and "
                        "pythae's own 8)")
    args = parser.parse_args()
    data = np.load(args.data)
    x_train = data["train"].astype(np.float32) / 255.0
    x_test = torch.from_numpy(data["test"].astype(np.float32) / 255.0)
    torch.manual_seed(args.seed or 0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    curve = Curve(model, x_test) if args.curve else None
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BaseTrainerConfig(output_dir=tmp, num_epochs=args.epochs, learning_rate=args.lr,
                                per_device_train_batch_size=args.batch, per_device_eval_batch_size=1000,
                                optimizer_cls="Adam", no_cuda=args.device != "cuda",
                                **({"seed": args.seed} if args.seed is not None else {}))
        processor = DataProcessor()  # what pythae's TrainingPipeline does with a numpy array
        train_dataset = processor.to_dataset(processor.process_data(x_train))
        trainer = BaseTrainer(model=model, train_dataset=train_dataset, eval_dataset=None, training_config=cfg,
                              callbacks=[curve] if curve is not None else None)
        t0 = time.perf_counter()
        if curve is not None:
            curve.start = t0
        trainer.train()
        seconds = time.perf_counter() - t0 - (curve.eval_seconds if curve is not None else 0.0)
    model = model.cpu()
    print(json.dumps({"seconds": seconds, "examples_per_s": args.epochs * len(x_train) / seconds,
                      "neg_elbo": test_neg_elbo(model, x_test), "torch": torch.__version__,
                      "curve": curve.points if curve is not None else None}))


if __name__ == "__main__":
    main()

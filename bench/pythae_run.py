"""Train pythae's VAE on the same network and data as vaekit's `mlp` preset; print one JSON line.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv:

    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz EPOCHS [cpu|cuda] [--curve] [--lr LR --batch B]
                                                      [--seed S]
    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz EPOCHS --burda FOLDER --minutes M --lr 1e-4 --batch 64
    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz 0 --nll-of FOLDER/epoch-00010.pt --k 1000
    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz 2 --cifar --batch 64 --latent 128

--burda trains Burda et al. 2016's 1-layer network on one fixed binarization of the training set and saves
the weights after every epoch (bench/time_to_quality.py --pythae-burda scores them afterwards).

--curve adds the test -ELBO after every epoch and the training seconds up to it (`curve`), the time of
that evaluation excluded (bench/time_to_quality.py). --lr and --batch default to the pytorch/examples
setting (1e-3, 128) the throughput table uses; pythae's own trainer defaults are 1e-4 and 64.
"""

from __future__ import annotations

import argparse
import contextlib
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


class BurdaEncoder(BaseEncoder):  # Burda et al. 2016's 1-layer network: 784-200-200-(50, 50), tanh
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh())
        self.mu, self.logvar = nn.Linear(200, 50), nn.Linear(200, 50)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.net(x.reshape(x.shape[0], -1))
        return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))


class BurdaDecoder(BaseDecoder):  # 50-200-200-784, tanh, sigmoid output (pythae's "bce" takes probabilities)
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(50, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(), nn.Linear(200, 784),
                                 nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=self.net(z).reshape(-1, 1, 28, 28))


class Checkpoints(TrainingCallback):
    """The Burda run: the weights after every epoch with the training seconds so far; stops after `minutes`."""

    def __init__(self, model: VAE, folder: str, minutes: float) -> None:
        self.model, self.folder, self.limit = model, folder, minutes * 60
        self.start, self.epoch = time.perf_counter(), 0

    def on_epoch_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.epoch += 1
        seconds = time.perf_counter() - self.start
        torch.save({"model": self.model.state_dict(), "train_seconds": seconds, "epoch": self.epoch},
                   f"{self.folder}/epoch-{self.epoch:05d}.pt")
        if seconds > self.limit:
            raise TimeUp


class TimeUp(Exception):
    pass


def burda_model() -> VAE:
    return VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=50, reconstruction_loss="bce"), encoder=BurdaEncoder(),
               decoder=BurdaDecoder())


def burda(args: argparse.Namespace) -> None:
    """Train the Burda network on one fixed binarization of MNIST's training set (pythae's data pipeline has no
    per-epoch transform, so dynamic binarization is out of its reach) until `--minutes`, a checkpoint an epoch."""
    data = np.load(args.data)
    x_train = data["train_bin"].astype(np.float32)
    torch.manual_seed(args.seed or 0)
    model = burda_model()
    saver = Checkpoints(model, args.burda, args.minutes)
    cfg = BaseTrainerConfig(output_dir=args.burda, num_epochs=args.epochs, learning_rate=args.lr,
                            per_device_train_batch_size=args.batch, optimizer_cls="Adam", no_cuda=True,
                            **({"seed": args.seed} if args.seed is not None else {}))
    processor = DataProcessor()
    train_dataset = processor.to_dataset(processor.process_data(x_train))
    trainer = BaseTrainer(model=model, train_dataset=train_dataset, eval_dataset=None, training_config=cfg,
                          callbacks=[saver])
    saver.start = time.perf_counter()
    with contextlib.suppress(TimeUp):  # the time limit ends the run after an epoch's checkpoint
        trainer.train()
    print(json.dumps({"epochs": saver.epoch, "seconds": time.perf_counter() - saver.start}))


def burda_nll(args: argparse.Namespace) -> None:
    """pythae's own importance-sampled NLL (VAE.get_nll, k = args.k) of one checkpoint on the test images given."""
    data = np.load(args.data)
    x_test = torch.from_numpy(data["test_bin"].astype(np.float32))
    model = burda_model()
    saved = torch.load(args.nll_of, weights_only=True)
    model.load_state_dict(saved["model"])
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        nll = -float(model.get_nll(x_test, n_samples=args.k, batch_size=min(args.k, 1000)))
    print(json.dumps({"nll": nll, "train_seconds": saved["train_seconds"], "epoch": saved["epoch"]}))


class EpochClock(TrainingCallback):
    """Seconds of every epoch (the throughput of a later epoch leaves start-up and first-call costs out)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.t = 0.0

    def on_epoch_begin(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.t = time.perf_counter()

    def on_epoch_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.seconds.append(time.perf_counter() - self.t)


def cifar(args: argparse.Namespace) -> None:
    """pythae's CIFAR ResNet VAE (pythae.models.nn.benchmarks.cifar) with its own trainer on DATA's `cifar`
    images (N, 3, 32, 32) uint8, BCE on [0, 1] pixels; examples/s of the last epoch."""
    from pythae.models.nn.benchmarks.cifar import Decoder_ResNet_AE_CIFAR, Encoder_ResNet_VAE_CIFAR

    x_train = np.load(args.data)["cifar"].astype(np.float32) / 255.0
    torch.manual_seed(args.seed or 0)
    config = VAEConfig(input_dim=(3, 32, 32), latent_dim=args.latent, reconstruction_loss="bce")
    model = VAE(config, encoder=Encoder_ResNet_VAE_CIFAR(config), decoder=Decoder_ResNet_AE_CIFAR(config))
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BaseTrainerConfig(output_dir=tmp, num_epochs=args.epochs, learning_rate=args.lr,
                                per_device_train_batch_size=args.batch, optimizer_cls="Adam", no_cuda=True)
        processor = DataProcessor()
        train_dataset = processor.to_dataset(processor.process_data(x_train))
        BaseTrainer(model=model, train_dataset=train_dataset, eval_dataset=None, training_config=cfg,
                    callbacks=[clock]).train()
    print(json.dumps({"examples_per_s": len(x_train) / clock.seconds[-1], "epoch_seconds": clock.seconds,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


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
    parser.add_argument("--burda", metavar="FOLDER", help="train the Burda network (train_bin in DATA), checkpoints "
                        "in FOLDER, for --minutes")
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--nll-of", metavar="CHECKPOINT", help="the NLL of one --burda checkpoint on DATA's test_bin")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--cifar", action="store_true", help="pythae's CIFAR ResNet VAE on DATA's `cifar` images")
    parser.add_argument("--latent", type=int, default=128)
    args = parser.parse_args()
    if args.cifar:
        cifar(args)
        return
    if args.burda:
        burda(args)
        return
    if args.nll_of:
        burda_nll(args)
        return
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

"""Train pythae's VAE on the same network and data as vaekit's `mlp` preset; print one JSON line.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv:

    bench/.venv-pythae/bin/python bench/pythae_run.py DATA.npz EPOCHS [cpu|cuda]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.trainers import BaseTrainer, BaseTrainerConfig
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


def main() -> None:
    data = np.load(sys.argv[1])
    epochs = int(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    x_train = data["train"].astype(np.float32) / 255.0
    x_test = torch.from_numpy(data["test"].astype(np.float32) / 255.0)
    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = BaseTrainerConfig(output_dir=tmp, num_epochs=epochs, learning_rate=1e-3, per_device_train_batch_size=128,
                                per_device_eval_batch_size=1000, optimizer_cls="Adam", no_cuda=device != "cuda")
        processor = DataProcessor()  # what pythae's TrainingPipeline does with a numpy array
        train_dataset = processor.to_dataset(processor.process_data(x_train))
        trainer = BaseTrainer(model=model, train_dataset=train_dataset, eval_dataset=None, training_config=cfg)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    model = model.cpu().eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x_test), 1000):
            x = x_test[start : start + 1000]
            total += float(model({"data": x}).loss) * len(x)
    print(json.dumps({"seconds": seconds, "examples_per_s": epochs * len(x_train) / seconds,
                      "neg_elbo": total / len(x_test), "torch": torch.__version__}))


if __name__ == "__main__":
    main()

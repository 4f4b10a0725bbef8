"""Train one pythae model for a wall-clock budget, then write its samples per sampler and its test reconstructions.

Runs inside bench/.venv-pythae (made by bench/throughput.py), never in vaekit's own venv; bench/sample_quality.py
--pythae calls it and scores what it writes in vaekit's feature spaces:

    bench/.venv-pythae/bin/python bench/pythae_quality.py DATA.npz MODEL --minutes M --out OUT.npz

DATA holds uint8 `train` and `test` images, (N, H, W), (N, C, H, W) or (N, H, W, 3). MODEL and the samplers it is scored
with (the ones the issue names, and the prior wherever the model is trained against one):

    vae      pythae's VAE (Bernoulli loss): prior, gmm (10-component full-covariance GaussianMixtureSampler)
    rae-l2   RAE_L2 (CoupledOptimizerTrainer, decoder weight decay = its reg_weight): gmm
    wae-mmd  WAE_MMD (IMQ kernel): prior, gmm
    vaegan   VAEGAN (CoupledOptimizerAdversarialTrainer): prior, two-stage (TwoStageVAESampler)

Networks: on 28x28 grey, pytorch/examples' MLP (784-400-20), the network of vaekit's `mlp` preset, with pythae's
default MLP discriminator for the VAEGAN; on 32x32 colour, pythae's own CIFAR ResNets (its benchmark's networks).
Every optimizer runs Adam at lr 1e-3, batch 128, the setting the other pythae rows of bench/RESULTS.md use. The
budget ends training after the first step that passes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from typing import Any

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import RAE_L2, VAE, VAEGAN, WAE_MMD, RAE_L2_Config, VAEConfig, VAEGANConfig, WAE_MMD_Config
from pythae.samplers import (
    GaussianMixtureSampler,
    GaussianMixtureSamplerConfig,
    NormalSampler,
    TwoStageVAESampler,
    TwoStageVAESamplerConfig,
)
from pythae.trainers import (
    BaseTrainer,
    BaseTrainerConfig,
    CoupledOptimizerAdversarialTrainer,
    CoupledOptimizerAdversarialTrainerConfig,
    CoupledOptimizerTrainer,
    CoupledOptimizerTrainerConfig,
)
from pythae.trainers.training_callbacks import TrainingCallback

from pythae_run import Decoder, Encoder

SAMPLERS = {"vae": ["prior", "gmm"], "rae-l2": ["gmm"], "wae-mmd": ["prior", "gmm"], "vaegan": ["prior", "two-stage"]}
LR, BATCH = 1e-3, 128


class Budget(TrainingCallback):
    """Stops training (raises TimeUp) after the first step that ends past `minutes`, as vaekit's train.max_minutes
    does (an epoch of a CIFAR ResNet outlasts a 10-minute budget); counts the steps and the epochs completed."""

    def __init__(self, minutes: float) -> None:
        self.limit, self.start, self.epochs, self.steps = minutes * 60, time.perf_counter(), 0, 0

    def on_train_step_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.steps += 1
        if time.perf_counter() - self.start > self.limit:
            raise TimeUp

    def on_epoch_end(self, training_config: BaseTrainerConfig, **kwargs: object) -> None:
        self.epochs += 1


class TimeUp(Exception):
    pass


def networks(name: str, shape: tuple[int, ...], latent: int) -> dict[str, Any]:
    """The encoder, decoder (and discriminator) for `shape`: the MLP on grey 28x28, pythae's CIFAR nets on colour."""
    if shape == (1, 28, 28):
        return {"encoder": Encoder(), "decoder": Decoder()}
    from pythae.models.nn.benchmarks.cifar import (
        Decoder_ResNet_AE_CIFAR,
        Discriminator_Conv_CIFAR,
        Encoder_ResNet_AE_CIFAR,
        Encoder_ResNet_VAE_CIFAR,
    )

    cfg = VAEConfig(input_dim=shape, latent_dim=latent)
    encoder = Encoder_ResNet_AE_CIFAR(cfg) if name in ("rae-l2", "wae-mmd") else Encoder_ResNet_VAE_CIFAR(cfg)
    nets = {"encoder": encoder, "decoder": Decoder_ResNet_AE_CIFAR(cfg)}
    if name == "vaegan":
        nets["discriminator"] = Discriminator_Conv_CIFAR(VAEGANConfig(input_dim=shape, latent_dim=latent))
    return nets


def build(name: str, shape: tuple[int, ...], latent: int, out_dir: str) -> tuple[Any, Any, type]:
    """(model, trainer config, trainer class) for `name`."""
    nets = networks(name, shape, latent)
    common = {"output_dir": out_dir, "num_epochs": 10_000, "per_device_train_batch_size": BATCH, "no_cuda": True}
    if name == "vae":
        model = VAE(VAEConfig(input_dim=shape, latent_dim=latent, reconstruction_loss="bce"), **nets)
        return model, BaseTrainerConfig(learning_rate=LR, **common), BaseTrainer
    if name == "wae-mmd":
        model = WAE_MMD(WAE_MMD_Config(input_dim=shape, latent_dim=latent, kernel_choice="imq"), **nets)
        return model, BaseTrainerConfig(learning_rate=LR, **common), BaseTrainer
    if name == "rae-l2":
        config = RAE_L2_Config(input_dim=shape, latent_dim=latent)
        trainer = CoupledOptimizerTrainerConfig(encoder_learning_rate=LR, decoder_learning_rate=LR,
                                                decoder_optimizer_params={"weight_decay": config.reg_weight}, **common)
        return RAE_L2(config, **nets), trainer, CoupledOptimizerTrainer
    # the MLP discriminator's hidden layer is where VAEGAN compares reconstructions (its layer 1 of 2)
    config = VAEGANConfig(input_dim=shape, latent_dim=latent, reconstruction_layer=1 if shape == (1, 28, 28) else 3)
    trainer = CoupledOptimizerAdversarialTrainerConfig(encoder_learning_rate=LR, decoder_learning_rate=LR,
                                                       discriminator_learning_rate=LR, **common)
    return VAEGAN(config, **nets), trainer, CoupledOptimizerAdversarialTrainer


def draw(model: Any, sampler: str, x_train: torch.Tensor, n: int, stage_epochs: int) -> np.ndarray:
    """`n` samples in [0, 1] as float16 (N, C, H, W)."""
    if sampler == "prior":
        chosen: Any = NormalSampler(model)
    elif sampler == "gmm":
        chosen = GaussianMixtureSampler(model, GaussianMixtureSamplerConfig(n_components=10))
        chosen.fit(x_train)
    else:
        chosen = TwoStageVAESampler(model, TwoStageVAESamplerConfig(reconstruction_loss="mse"))
        with tempfile.TemporaryDirectory() as tmp:
            chosen.fit(x_train, training_config=BaseTrainerConfig(output_dir=tmp, num_epochs=stage_epochs,
                                                                  learning_rate=LR, per_device_train_batch_size=BATCH,
                                                                  no_cuda=True))
    with torch.no_grad():
        images = chosen.sample(num_samples=n, batch_size=500, return_gen=True)
    return images.clamp(0, 1).to(torch.float16).numpy()


def reconstructions(model: Any, x_test: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        parts = [model.reconstruct(x_test[i : i + 500]) for i in range(0, len(x_test), 500)]
    return torch.cat(parts).clamp(0, 1).to(torch.float16).numpy()


def images(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W), (N, C, H, W) or (N, H, W, 3) -> float (N, C, H, W) in [0, 1]."""
    x = torch.from_numpy(array.astype(np.float32) / 255.0)
    if x.ndim == 3:
        return x.unsqueeze(1)
    return x.permute(0, 3, 1, 2).contiguous() if x.shape[-1] == 3 else x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("model", choices=sorted(SAMPLERS))
    parser.add_argument("--minutes", type=float, required=True, help="training budget (wall clock)")
    parser.add_argument("--out", required=True, help=".npz: samples_SAMPLER and reconstructions, float16")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--latent", type=int, default=20, help="latent dimensions (the MLP's are fixed at 20)")
    parser.add_argument("--stage-epochs", type=int, default=50, help="the two-stage sampler's second VAE's epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = np.load(args.data)
    x_train, x_test = images(data["train"]), images(data["test"])
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        model, config, trainer_cls = build(args.model, tuple(x_train.shape[1:]), args.latent, tmp)
        budget = Budget(args.minutes)
        processor = DataProcessor()
        trainer = trainer_cls(model=model, train_dataset=processor.to_dataset(processor.process_data(x_train)),
                              eval_dataset=None, training_config=config, callbacks=[budget])
        budget.start = time.perf_counter()
        with contextlib.suppress(TimeUp):
            trainer.train()
        train_seconds = time.perf_counter() - budget.start
    model = model.cpu().eval()
    out: dict[str, np.ndarray] = {"reconstructions": reconstructions(model, x_test[: args.samples])}
    seconds = {}
    for sampler in SAMPLERS[args.model]:
        t = time.perf_counter()
        out[f"samples_{sampler}"] = draw(model, sampler, x_train, args.samples, args.stage_epochs)
        seconds[sampler] = round(time.perf_counter() - t, 1)
    info = {"model": args.model, "epochs": budget.epochs, "steps": budget.steps,
            "train_seconds": round(train_seconds, 1), "sampler_seconds": seconds, "torch": torch.__version__}
    np.savez(args.out, info=np.array(json.dumps(info)), **out)
    print(json.dumps(info))


if __name__ == "__main__":
    main()

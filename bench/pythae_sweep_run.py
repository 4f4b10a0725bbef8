"""One cell of the adversarial stability sweep with pythae's VAEGAN: train for a number of steps at given learning
rates, watch its discriminator, write prior samples. Runs inside bench/.venv-pythae; bench/adversarial_sweep.py
--trainer pythae calls it and scores what it writes.

    bench/.venv-pythae/bin/python bench/pythae_sweep_run.py DATA.npz --lr 1e-3 --disc-lr 3e-4 --steps 800 --out OUT.npz

The model is bench/pythae_quality.py's VAEGAN (pytorch/examples' MLP, pythae's default MLP discriminator, its
CoupledOptimizerAdversarialTrainer at batch 128), with the autoencoder's rate for its encoder and decoder and
--disc-lr for its discriminator. Every --log-every steps the callback measures the discriminator's accuracy on a
fixed batch of training images (real) and on as many decoded prior draws (fake, what pythae's discriminator is
trained against), and whether the last step's losses were finite; OUT.npz holds those rows (JSON), the step count
and --samples prior samples in [0, 1] (float16, NaN where the decoder's output was not finite).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile

import numpy as np
import torch
from pythae.data.preprocessors import DataProcessor
from pythae.models import VAEGAN, VAEGANConfig
from pythae.trainers import CoupledOptimizerAdversarialTrainer, CoupledOptimizerAdversarialTrainerConfig

from pythae_quality import BATCH, Budget, TimeUp, images, networks

LATENT = 20


class Watch(Budget):
    """Stops after `steps` steps; every `every` steps records the discriminator's accuracy on real and fake images."""

    def __init__(self, model: VAEGAN, real: torch.Tensor, steps: int, every: int) -> None:
        super().__init__(minutes=math.inf)
        self.model, self.real, self.max_steps, self.every = model, real, steps, every
        self.noise = torch.randn(len(real), LATENT, generator=torch.Generator().manual_seed(0))
        self.rows: list[dict[str, float]] = []

    def on_train_step_end(self, training_config: object, **kwargs: object) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.rows.append({"step": self.steps, **self.accuracies()})
        if self.steps >= self.max_steps:
            raise TimeUp

    @torch.no_grad()
    def accuracies(self) -> dict[str, float]:
        d = self.model.discriminator
        real = d(self.real).embedding.flatten()
        fake = d(self.model.decoder(self.noise).reconstruction).embedding.flatten()
        return {"acc_real": float((real > 0.5).float().mean()), "acc_fake": float((fake < 0.5).float().mean()),
                "finite": bool(torch.isfinite(real).all() and torch.isfinite(fake).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--lr", type=float, required=True, help="the encoder's and decoder's Adam rate")
    parser.add_argument("--disc-lr", type=float, required=True, help="the discriminator's Adam rate")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    x_train = images(np.load(args.data)["train"])
    torch.manual_seed(args.seed)
    shape = tuple(x_train.shape[1:])
    model = VAEGAN(VAEGANConfig(input_dim=shape, latent_dim=LATENT, reconstruction_layer=1),
                   **networks("vaegan", shape, LATENT))
    watch = Watch(model, x_train[:BATCH], args.steps, args.log_every)
    with tempfile.TemporaryDirectory() as tmp:
        config = CoupledOptimizerAdversarialTrainerConfig(
            output_dir=tmp, num_epochs=10_000, per_device_train_batch_size=BATCH, no_cuda=True,
            encoder_learning_rate=args.lr, decoder_learning_rate=args.lr, discriminator_learning_rate=args.disc_lr)
        processor = DataProcessor()
        trainer = CoupledOptimizerAdversarialTrainer(
            model=model, train_dataset=processor.to_dataset(processor.process_data(x_train)), eval_dataset=None,
            training_config=config, callbacks=[watch])
        with contextlib.suppress(TimeUp):
            trainer.train()
    model = model.cpu().eval()
    with torch.no_grad():
        z = torch.randn(args.samples, LATENT, generator=torch.Generator().manual_seed(1))
        samples = torch.cat([model.decoder(z[i : i + 500]).reconstruction for i in range(0, args.samples, 500)])
    np.savez(args.out, samples=samples.to(torch.float16).numpy(), steps=watch.steps, rows=json.dumps(watch.rows))
    print(json.dumps({"steps": watch.steps, "rows": len(watch.rows)}))


if __name__ == "__main__":
    main()

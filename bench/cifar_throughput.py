"""pythae's CIFAR ResNet VAE, trained by vaekit (bring your own network) and by pythae's own trainer, side by side.

The same networks (`pythae.models.nn.benchmarks.cifar`: Encoder_ResNet_VAE_CIFAR, Decoder_ResNet_AE_CIFAR,
latent 128), the same images (the first N training images of `cifar10-jpeg`, decoded once), the same batch (64),
Adam at 1e-3, a Bernoulli likelihood on [0, 1] pixels (pythae's "bce"; vaekit reads the decoder's sigmoid output
back as logits), on this CPU, one process at a time. Examples/s of the last of two epochs for pythae (its
trainer's own epoch loop), steady-state for vaekit (from its second throughput row): start-up and first-call
costs left out of both. vaekit runs the nets in fp32, then with its CPU speed settings (bf16 autocast,
channels_last) that its own `cifar` preset measured faster.

vaekit imports pythae's networks from bench/.venv-pythae (made by bench/throughput.py) by appending that venv's
site-packages to sys.path: both venvs pin torch 2.13.0.

    .venv/bin/python bench/cifar_throughput.py --images 1280 --repeats 2     # ~10 min, needs ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

import vaekit
from results import update_section
from throughput import PYTHAE_VENV, ceilings_line, ensure_pythae, matmul_gflops
from vaekit.apps.report import read_metrics

BENCH = Path(__file__).resolve().parent
VAEKIT = {
    "vaekit fp32 (bring your own network)": ["train.precision=fp32"],
    "vaekit bf16 + channels_last (bring your own network)": ["train.precision=bf16", "train.channels_last=true"],
}


class Encoder(nn.Module):
    """pythae's encoder as vaekit's contract wants it: images -> (mean, log-variance) side by side."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return torch.cat([out["embedding"], out["log_covariance"]], dim=-1)


class Decoder(nn.Module):
    """pythae's decoder (sigmoid output) as Bernoulli logits, the parameters vaekit's likelihood reads."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, z: Tensor) -> Tensor:
        return torch.logit(self.net(z)["reconstruction"].float(), eps=1e-6)


def pythae_nets(latent: int) -> tuple[nn.Module, nn.Module]:
    site = next((PYTHAE_VENV / "lib").glob("python3*/site-packages"))
    if str(site) not in sys.path:
        sys.path.append(str(site))  # after vaekit's own packages: torch comes from this venv either way
    from pythae.models import VAEConfig
    from pythae.models.nn.benchmarks.cifar import Decoder_ResNet_AE_CIFAR, Encoder_ResNet_VAE_CIFAR

    config = VAEConfig(input_dim=(3, 32, 32), latent_dim=latent, reconstruction_loss="bce")
    return Encoder(Encoder_ResNet_VAE_CIFAR(config)), Decoder(Decoder_ResNet_AE_CIFAR(config))


def vaekit_rate(data: Path, n: int, latent: int, extra: list[str]) -> float:
    torch.manual_seed(0)
    encoder, decoder = pythae_nets(latent)
    cfg = vaekit.load_config(None, [f"data.name={data}", "data.val_size=0", f"model.latent_dim={latent}",
                                    "model.likelihood=bernoulli", "train.batch_size=64", f"train.steps={2 * n // 64}",
                                    "train.log_every=5", "train.tensorboard=false", "train.compile=false",
                                    "optim.lr=0.001", "train.samples=4", *extra])
    with tempfile.TemporaryDirectory() as tmp:
        vaekit.train(cfg, f"{tmp}/run", quiet=True, encoder=encoder, decoder=decoder)
        rows = read_metrics(Path(f"{tmp}/run"))
    clock = [(r["step"], r["step"] * 64 / r["examples_per_s"]) for r in rows if r["kind"] == "train"]
    (s0, t0), (s1, t1) = clock[1], clock[-1]
    return (s1 - s0) * 64 / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1280, help="training images (one epoch = images / 64 steps)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latent", type=int, default=128)
    args = parser.parse_args()
    shared = BENCH.parents[1] / "shared" / "data"  # ../shared/data beside the checkout, as bench/cifar.py reads it
    if shared.is_dir():
        os.environ.setdefault("VAEKIT_DATA", str(shared))
    try:
        train = vaekit.load_dataset("cifar10-jpeg", "train").images[: args.images]
    except vaekit.VaekitError as exc:
        sys.exit(f"bench/cifar_throughput.py needs cifar10-jpeg ({exc})")
    python = ensure_pythae()
    gflops = matmul_gflops()
    runs: dict[str, list[float]] = {name: [] for name in [*VAEKIT, "pythae (its own trainer)"]}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cifar.npy"
        np.save(data, train.numpy())
        npz = Path(tmp) / "cifar.npz"
        np.savez(npz, cifar=train.numpy())
        for r in range(args.repeats):
            for name, extra in VAEKIT.items():
                runs[name].append(vaekit_rate(data, args.images, args.latent, extra))
            out = subprocess.run([str(python), str(BENCH / "pythae_run.py"), str(npz), "2", "--cifar", "--batch", "64",
                                  "--latent", str(args.latent)], capture_output=True, text=True, check=True)
            runs["pythae (its own trainer)"].append(json.loads(out.stdout.strip().splitlines()[-1])["examples_per_s"])
            print(f"repeat {r + 1}:", {k: round(v[-1], 1) for k, v in runs.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    ref = med["pythae (its own trainer)"]
    lines = [f"Command: `.venv/bin/python bench/cifar_throughput.py --images {args.images} --repeats {args.repeats}` "
             f"({time.strftime('%Y-%m-%d')}). pythae's CIFAR ResNet VAE (latent {args.latent}), batch 64, the first "
             f"{args.images} `cifar10-jpeg` training images, Adam 1e-3, Bernoulli on [0, 1] pixels, this CPU; median "
             "of the repeats, interleaved.", "",
             "| trainer | examples/s (median) | spread | vs pythae's trainer |", "|---|---|---|---|"]
    for name, values in runs.items():
        lines.append(f"| {name} | {med[name]:.1f} | {min(values):.1f}-{max(values):.1f} | {med[name] / ref:.2f}x |")
    lines += ["", ceilings_line(gflops)]
    update_section("cifar-pythae-throughput", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

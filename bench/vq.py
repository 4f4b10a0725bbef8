"""VQ-VAE + its code prior beside pythae's VQVAE + PixelCNN sampler, at an equal wall-clock budget (issue 45).

    VAEKIT_DATA=../shared/data .venv/bin/python bench/vq.py --data mnist --minutes 10 --trainer vaekit   # ~25 min
    VAEKIT_DATA=../shared/data .venv/bin/python bench/vq.py --data mnist --minutes 10 --trainer pythae   # ~30 min

vaekit trains the `vqvae` preset (`cifar-vq` on cifar10-jpeg), autoencoder and code prior together, for `--minutes`
of wall clock (`train.max_minutes`, its evaluations included); pythae (bench/pythae_vq.py, its own venv, the same
networks) trains its VQVAE for two thirds of the budget, then fits its PixelCNN sampler for the last third. Each
side then draws 10,000 samples from its prior (temperature 1, no top-k) and reconstructs the first 10,000 test
images; both are scored against those test images in the data set's shipped feature network (evaluation/quality):
FD, KID, precision, recall, coverage, and the reconstructions' FD and PSNR. vaekit's rows add the test split's code
usage and perplexity, its two-part code length (the -ELBO: -log p(codes) - log p(x | codes)) in bits/dim, and a
real `vaekit compress` file of the first 1,000 test images, decoded and compared (round trip exact). Rows go to
bench/vq_rows.json (one run per trainer and data set, each under an hour) and the data set's section of
bench/RESULTS.md. Run it alone: the budget is wall-clock.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vaekit
from quality_budget import batches, floor, real_features, scores
from results import budget_table, update_section
from throughput import ensure_pythae
from vaekit.apps.compress.files import compress_file, decompress_file
from vaekit.evaluation.evaluate import evaluate
from vaekit.evaluation.quality import quality
from vaekit.evaluation.quality.nets import feature_net_for
from vaekit.evaluation.quality.score import compare, embed

BENCH = Path(__file__).resolve().parent
ROWS = BENCH / "vq_rows.json"
PRESETS = {"mnist": "vqvae", "fashion-mnist": "vqvae", "cifar10-jpeg": "cifar-vq"}
COMPRESS_IMAGES = 1000


def psnr(recon: torch.Tensor, test: torch.Tensor) -> float:
    """Mean over images of 10 log10(1 / MSE), pixels in [0, 1]."""
    mse = (recon.float() - test.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def vaekit_row(data: str, minutes: float, n: int, folder: Path) -> dict[str, Any]:
    preset = PRESETS[data]
    sets = [] if vaekit.load_config(preset).data.name == data else [f"data.name={data}"]
    cfg = vaekit.load_config(preset, [*sets, "train.epochs=1000", f"train.max_minutes={minutes}",
                                      "train.tensorboard=false"])
    started = time.perf_counter()
    result = vaekit.train(cfg, folder / "run", quiet=True)
    train_seconds = time.perf_counter() - started
    model, test = result.model.eval(), vaekit.load_dataset(data, "test")
    t = time.perf_counter()
    r = quality(model, test, None, n=n)
    quality_seconds = time.perf_counter() - t
    x = test.images[:n].float() / 255
    recon = torch.cat([model.reconstruct(x[i : i + 500]) for i in range(0, len(x), 500)])
    ev = evaluate(model, test)
    print(json.dumps({"train_seconds": train_seconds, "quality_seconds": quality_seconds, "fd": r.samples.fd,
                      "neg_elbo": ev.neg_elbo, "code_usage": ev.code_usage}), flush=True)
    epochs = result.steps * cfg.train.batch_size / len(vaekit.load_dataset(data, "train"))
    return {"trainer": "vaekit", "epochs": round(epochs, 2),
            "train_seconds": round(train_seconds, 1), "quality_seconds": round(quality_seconds, 1),
            **scores(r.samples), "recon_fd": r.reconstructions.fd, "psnr": psnr(recon, x),
            "code_usage": ev.code_usage, "code_perplexity": ev.code_perplexity, "codes_unused": ev.codes_unused,
            "two_part_bits_per_dim": ev.bits_per_dim, **compressed(folder, test, cfg.model.likelihood == "bernoulli")}


def compressed(folder: Path, test: Any, binary: bool) -> dict[str, Any]:
    """A real `vaekit compress` file of the first test images against the model's two-part code length (a
    Bernoulli model codes binary images: the test images binarized at 128)."""
    images = test.images[:COMPRESS_IMAGES].numpy()
    if binary:
        images = (images >= 128).astype(np.uint8) * 255
    np.save(folder / "test.npy", images)
    t = time.perf_counter()
    out = compress_file(folder / "run", folder / "test.npy", folder / "test.vkz")
    encode_seconds = time.perf_counter() - t
    decompress_file(folder / "test.vkz", folder / "back.npy", folder / "run")
    exact = bool(np.array_equal(np.load(folder / "back.npy"), images))
    return {"file_bits_per_dim": out["bits_per_dim"], "file_code_length_bits_per_dim": out["code_length_bits_per_dim"],
            "file_round_trip_exact": exact, "compress_images_per_s": round(COMPRESS_IMAGES / encode_seconds, 1)}


def pythae_row(data: str, minutes: float, n: int, folder: Path) -> dict[str, Any]:
    test = vaekit.load_dataset(data, "test")
    npz = folder / f"{data}.npz"
    np.savez(npz, train=vaekit.load_dataset(data, "train").images.numpy(), test=test.images.numpy())
    out = folder / "pythae-vq.npz"
    with open(folder / "pythae-vq.log", "w") as log:
        done = subprocess.run([str(ensure_pythae()), str(BENCH / "pythae_vq.py"), str(npz), "--ae-minutes",
                               str(2 * minutes / 3), "--prior-minutes", str(minutes / 3), "--out", str(out),
                               "--samples", str(n)], stdout=subprocess.PIPE, stderr=log, text=True, check=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    net, real = real_features(data, n)
    arrays = np.load(out)
    recon = torch.from_numpy(arrays["reconstructions"])
    rec, rec_logits = embed(net, batches(recon))
    fake, logits = embed(net, batches(torch.from_numpy(arrays["samples"])))
    return {"trainer": "pythae", "epochs": info["ae_epochs"], "prior_epochs": info["prior_epochs"],
            "train_seconds": round(info["ae_seconds"] + info["prior_seconds"], 1),
            "quality_seconds": info["sample_seconds"], **scores(compare(real, fake, logits, 1000)),
            "recon_fd": compare(real, rec, rec_logits, 1000).fd, "psnr": psnr(recon, test.images[:n].float() / 255),
            "code_usage": info["code_usage"], "code_perplexity": info["code_perplexity"]}


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _coded(data: str) -> str:
    if data == "cifar10-jpeg":
        return ("(their 8-bit pixels; cifar10-jpeg is CIFAR-10 re-encoded as JPEG by a third party, so its bits/dim "
                "are not comparable with the VQ-VAE paper's 4.67 on CIFAR-10)")
    return ("(binarized at 128 for a Bernoulli model, whose two-part bits/dim on the grey test split is a density, "
            "not a code length)")


def render(data: str, table: dict[str, Any]) -> str:
    net = feature_net_for(data)
    lines = [f"**{data}**", "",
             f"Feature network `{net}`; floor (the training split's first {table['n']:,} images against the test "
             f"split): FD-{net} {table['floor']['fd']:.3f}. Budget {table['minutes']:g} minutes of training per "
             "tool (pythae: two thirds autoencoder, one third PixelCNN; vaekit: both together). vaekit's two-part "
             f"code and file: the first {COMPRESS_IMAGES:,} test images {_coded(data)}.", "",
             "Commands (each adds its row):", "", *[f"- `{c}` ({d})" for c, d in table["commands"]], "",
             f"| trainer | epochs | FD-{net} | KID x 1e3 | precision | recall | coverage | recon FD-{net} | "
             "PSNR (dB) | code usage | perplexity | two-part bits/dim | file bits/dim (its code length) | round trip |",
             "|---" * 14 + "|"]
    for key in sorted(table["rows"]):
        r = table["rows"][key]
        file = (f"{r['file_bits_per_dim']:.4f} ({r['file_code_length_bits_per_dim']:.4f})"
                if "file_bits_per_dim" in r else "-")
        lines.append(f"| {r['trainer']} | {r['epochs']} | {r['fd']:.3f} | {1000 * r['kid']:.2f} ± "
                     f"{1000 * r['kid_std']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['coverage']:.3f} | "
                     f"{r['recon_fd']:.3f} | {r['psnr']:.2f} | {_num(r['code_usage'])} | "
                     f"{_num(r['code_perplexity'], 1)} | {_num(r.get('two_part_bits_per_dim'), 4)} | {file} | "
                     f"{'exact' if r.get('file_round_trip_exact') else '-'} |")
    collapsed = [f"{r['trainer']}'s codebook collapsed: {100 * r['code_usage']:.1f}% of the 512 codes in use on "
                 f"the test split (perplexity {r['code_perplexity']:.1f})" for r in table["rows"].values()
                 if r.get("code_usage") is not None and r["code_usage"] < 0.5]
    return "\n".join([*lines, *(["", "; ".join(collapsed) + "."] if collapsed else [])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, choices=sorted(PRESETS))
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per tool (wall clock)")
    parser.add_argument("--trainer", required=True, choices=["vaekit", "pythae"])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep vaekit's run folder here (a zoo entry's run)")
    args = parser.parse_args()
    every, table = budget_table(ROWS, args.data, args.minutes, args.samples, lambda: floor(args.data, args.samples))
    with tempfile.TemporaryDirectory() as tmp:
        job = vaekit_row if args.trainer == "vaekit" else pythae_row
        row = job(args.data, args.minutes, args.samples, Path(tmp))
        if args.keep and args.trainer == "vaekit":
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(Path(tmp) / "run", args.keep)  # for bench/zoo_add.py
    print(json.dumps(row), flush=True)
    table["rows"][args.trainer] = row
    command = (f"VAEKIT_DATA=../shared/data .venv/bin/python bench/vq.py --data {args.data} --minutes "
               f"{args.minutes:g} --trainer {args.trainer}")
    table["commands"].append([command, time.strftime("%Y-%m-%d")])
    ROWS.write_text(json.dumps(every, indent=1) + "\n")
    update_section(f"vq-{args.data}", render(args.data, table))
    print(render(args.data, table))


if __name__ == "__main__":
    main()

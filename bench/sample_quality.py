"""Sample quality of vaekit's models in a shipped feature network's space, per sampler (prior, gmm, two-stage).

    VAEKIT_DATA=../shared/data .venv/bin/python bench/sample_quality.py --zoo mlp-mnist burda-mnist hvae-mnist

For each model and sampler: 10,000 samples and the reconstructions of 10,000 test images against those test images
(evaluation/quality/score.py): FD, KID, precision, recall, density, coverage, the rarest class's share among the
samples, and the reconstructions' FD, beside the training split's own distance (the floor). Every distance is in
the named feature network's space, comparable only within it; none is FID. The zoo models' samplers are the ones
they ship (bench/zoo_samplers.py).

The side-by-side with pythae (bench/quality_budget.py): every model trained for the same wall-clock minutes.
"""

from __future__ import annotations

import argparse
import time

from results import update_section
from vaekit import zoo
from vaekit.apps.samplers import Sampler, fit_sampler, latent_draws, load_sampler
from vaekit.config import load_config
from vaekit.data.datasets import load_dataset
from vaekit.evaluation.quality import quality
from vaekit.evaluation.quality.nets import feature_net_for
from vaekit.models.base import BaseVAE
from vaekit.models.vae import load_model
from zoo_samplers import training_split

SAMPLERS = ["prior", "gmm", "two-stage"]


def sampler_for(name: str, model: BaseVAE, sampler: str) -> Sampler | None:
    """The zoo model's shipped sampler; a top-group one (`gmm-top`) is fitted here on its training split."""
    if not sampler.endswith("-top"):
        return load_sampler(name, sampler)
    return fit_sampler(model, training_split(name), sampler.removesuffix("-top"), groups="top")


def rows(name: str, n: int, samplers: list[str]) -> tuple[str, list[str], str]:
    data = load_config(str(zoo.folder(name) / "config.yaml")).data.name.removeprefix("binarized-")
    test, train = load_dataset(data, "test"), load_dataset(data, "train")
    model, out, floor = load_model(name), [], ""
    for sampler in samplers:
        fitted = sampler_for(name, model, sampler)
        started = time.perf_counter()
        r = quality(model, test, train, n=n, latents=latent_draws(model, fitted) if fitted else None, sampler=sampler)
        s = r.samples
        out.append(f"| {name} | {sampler} | {s.fd:.3f} | {1000 * s.kid:.2f} ± {1000 * s.kid_std:.2f} | "
                   f"{s.precision:.3f} | {s.recall:.3f} | {s.density:.3f} | {s.coverage:.3f} | "
                   f"{100 * s.rarest_class_share:.1f}% | {r.reconstructions.fd:.3f} |")
        assert r.floor is not None
        floor = f"{r.floor.fd:.3f}"
        print(out[-1], f"({time.perf_counter() - started:.0f} s)", flush=True)
    return feature_net_for(data), out, floor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", nargs="+", required=True, help="zoo models to score")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS, help="prior, the shipped gmm and two-stage, and "
                        "gmm-top / two-stage-top (a hierarchy's top group, fitted here)")
    parser.add_argument("--tag", default="quality-zoo-mnist")
    args = parser.parse_args()
    tables: dict[str, list[str]] = {}
    floors: dict[str, str] = {}
    for name in args.zoo:
        net, lines, floor = rows(name, args.samples, args.samplers)
        tables.setdefault(net, []).extend(lines)
        floors[net] = floor
    body = [f"Command: `VAEKIT_DATA=../shared/data .venv/bin/python bench/sample_quality.py --zoo {' '.join(args.zoo)}"
            f"{'' if args.samples == 10_000 else f' --samples {args.samples}'}"
            f"{'' if args.samplers == SAMPLERS else ' --samplers ' + ' '.join(args.samplers)}"
            f"{'' if args.tag == 'quality-zoo-mnist' else ' --tag ' + args.tag}` ({time.strftime('%Y-%m-%d')}). "
            f"{args.samples:,} samples and as many test reconstructions against as many test images; KID x 1e3 "
            "(mean ± std over 100 subsets of 1,000); rarest class: the least generated class's share by the "
            "feature network's classifier; the floor is the training split's own distance to the test split."]
    for net, lines in tables.items():
        body += ["", f"Feature network `{net}` (floor: FD-{net} {floors[net]}):", "",
                 f"| model | sampler | FD-{net} | KID-{net} x 1e3 | precision | recall | density | coverage | "
                 f"rarest class | reconstructions' FD-{net} |", "|---|---|---|---|---|---|---|---|---|---|", *lines]
    update_section(args.tag, "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

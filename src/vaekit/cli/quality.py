"""`vaekit eval RUN --quality` (samples and reconstructions scored in a named feature space) and
`vaekit features` (list the shipped feature networks, or train one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vaekit.cli.use import data_args, model_and_data, trained_on, trained_split
from vaekit.errors import CheckpointError, VaekitError


def quality_args(p: argparse.ArgumentParser, positive: Any) -> None:
    g = p.add_argument_group("sample quality (--quality)")
    g.add_argument("--quality", action="store_true",
                   help="score samples and test reconstructions against the test split in a feature network's space")
    g.add_argument("--samples", type=positive, default=10_000, help="samples to draw and test images (default 10000)")
    g.add_argument("--sampler", default="prior", help="where the samples' latents come from: prior (default), or a "
                   "sampler fitted with `vaekit fit-sampler`: gmm, two-stage (gmm-top, two-stage-top: fitted to a "
                   "hierarchy's top group)")
    g.add_argument("--features", help="a shipped feature network (vaekit features) or a folder `vaekit features "
                   "train --out` wrote (default: the one for the run's data)")
    g.add_argument("--kid-subset", type=positive, default=1000, help="KID's subset size (default 1000)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--class-balance", metavar="BALANCE",
                   help="sample at this class balance (uniform, train, or one weight per class) and judge the class "
                        "coverage against it (see vaekit sample --class-balance)")


def _feature_net(choice: str | None, data: str) -> Any:
    """The feature network --features names, else the shipped one for `data` (a one-line error if none)."""
    from vaekit.evaluation.quality.nets import feature_net_for, load_feature_net

    if choice is None:
        return load_feature_net(feature_net_for(data))
    folder = Path(choice)
    if folder.is_dir():
        return load_feature_net(json.loads((folder / "card.json").read_text(encoding="utf-8"))["name"], folder)
    return load_feature_net(choice)


def cmd_quality(args: argparse.Namespace) -> None:
    from vaekit.apps.samplers import latent_draws, load_sampler
    from vaekit.data.datasets import has_split, load_dataset
    from vaekit.evaluation.quality import quality

    net = _feature_net(args.features, args.data or trained_on(args.run).name)  # before any data is read
    sampler = load_sampler(args.run, args.sampler)
    model, test = model_and_data(args)
    data = args.data.removeprefix("binarized-")  # samples are the likelihood's means: scored against grey levels
    if data != args.data:
        test = load_dataset(data, test.split, args.data_dir)
    train = None
    if has_split(data, "train"):
        train = load_dataset(data, "train", args.data_dir, channels=test.shape[0], image_size=test.shape[1])
    fitted = _trained(args.run, args.data_dir, data, train)
    latents = latent_draws(model, sampler) if sampler is not None else None
    balance, name = None, args.sampler
    if args.class_balance is not None:
        balance, latents = _balance(args, model, fitted, sampler)
        name = f"{args.sampler}@{args.class_balance}"
    result = quality(model, test, train, n=args.samples, features=net, sampler=name, latents=latents,
                     seed=args.seed, kid_subset=args.kid_subset,
                     train_labels=fitted.labels if fitted is not None else None, class_balance=balance)
    if (Path(args.run) / "metrics.jsonl").is_file():  # a run directory: its report gains the result
        _save_to_run(Path(args.run), result)
    print(json.dumps(result.to_dict()) if args.json else describe_quality(result))


def _trained(run: str, data_dir: str | None, data: str, train: Any) -> Any:
    """The split the run trained on (long-tailed with data.imbalance), the class coverage's reference, when `data`
    is the run's own data set; else None."""
    trained = trained_on(run)
    if trained.name.removeprefix("binarized-") != data:
        return None
    return train if trained.imbalance is None and train is not None else trained_split(run, data_dir)


def _balance(args: argparse.Namespace, model: Any, fitted: Any, sampler: Any) -> tuple[list[float], Any]:
    """--class-balance: the balance, and the latents drawn at it (None for a conditional model: its labels are)."""
    from vaekit.apps.samplers.balance import parse_balance

    if fitted is None or fitted.labels is None:
        raise VaekitError("--class-balance needs the labelled training split the run trained on; score the run's "
                          "own data set (leave out --data)")
    classes = model.num_classes or int(fitted.labels.max()) + 1
    balance = parse_balance(args.class_balance, fitted.labels, classes)
    return balance, None if model.num_classes else _balanced_draws(args, model, fitted, balance, sampler)


def _save_to_run(run: Path, result: Any) -> None:
    """RUN/quality/SAMPLER.json and .png (the first scored samples), then the run's report.html again."""
    from vaekit.apps.images import save_grid
    from vaekit.apps.report import write_report
    from vaekit.storage import atomic_write_bytes

    atomic_write_bytes(run / "quality" / f"{result.sampler}.json", json.dumps(result.to_dict(), indent=1).encode())
    if result.examples is not None:
        save_grid(result.examples, run / "quality" / f"{result.sampler}.png", nrow=8)
    write_report(run)


def describe_quality(result: Any) -> str:
    """A table: one row per image set, one column per metric, the feature network in the distances' names."""
    name = result.features
    lines = [f"{result.n_samples} samples ({result.sampler}) and the reconstructions of {result.n_test} test images, "
             f"against those test images, in {name}'s feature space (not comparable with Inception FID):",
             f"{'':<16}{'FD-' + name:>24}{'KID-' + name:>26}{'precision':>11}{'recall':>8}{'density':>9}"
             f"{'coverage':>10}{'rarest class':>14}"]
    for label, s in (("samples", result.samples), ("reconstructions", result.reconstructions),
                     ("train split", result.floor)):
        if s is not None:
            kid = f"{1000 * s.kid:.2f}e-3 ± {1000 * s.kid_std:.2f}e-3"
            lines.append(f"{label:<16}{s.fd:>24.3f}{kid:>26}{s.precision:>11.3f}{s.recall:>8.3f}{s.density:>9.3f}"
                         f"{s.coverage:>10.3f}{100 * s.rarest_class_share:>13.1f}%")
    if result.floor is not None:
        lines.append("train split: the training images' own distance to the test images, the floor")
    if result.class_coverage is not None:
        lines.append(describe_coverage(result.class_coverage, name))
    return "\n".join(lines)


def describe_coverage(c: dict[str, Any], net: str) -> str:
    """The samples' classes (by the feature network's classifier) against the training distribution."""
    shares = ", ".join(f"{k} {100 * s:.1f}%" for k, s in zip(c["classes"], c["shares"], strict=True))
    tv = f"total variation to the training distribution {c['tv_train']:.3f}, " if c["tv_train"] is not None else ""
    lines = [f"class coverage (classes by {net}'s classifier): {shares}",
             f"{tv}to uniform {c['tv_uniform']:.3f}; "
             f"missing (< 10% of the target share): {', '.join(c['missing']) or 'none'}; "
             f"under-generated (< 50%): {', '.join(c['under_generated']) or 'none'}"]
    return "\n".join(lines)


def cmd_features(args: argparse.Namespace) -> None:
    from vaekit.evaluation.quality.nets import FEATURE_NETS, card

    if args.action == "train":
        from vaekit.evaluation.quality.fit import train_feature_net

        if args.name is None:
            raise VaekitError(f"vaekit features train NAME: name one of {', '.join(FEATURE_NETS.names())}")
        out = args.out or f"features/{args.name}"
        info = train_feature_net(args.name, out, args.epochs, args.seed, args.data_dir, quiet=args.quiet,
                                 precision=args.precision)
        print(json.dumps(info) if args.json else f"{args.name}: test accuracy {100 * info['test_accuracy']:.2f}% "
              f"after {info['training_minutes']:.1f} min; wrote {out}/model.safetensors and card.json")
        return
    rows = []
    for name in FEATURE_NETS.names():
        try:
            rows.append(card(name))
        except CheckpointError:  # a net without shipped weights is listed as such
            rows.append({"name": name, "data": FEATURE_NETS.get(name).data, "test_accuracy": None})
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        acc = f"{100 * r['test_accuracy']:.2f}% test accuracy" if r.get("test_accuracy") else "no weights shipped"
        print(f"{r['name']:<22} {r['data']:<14} {acc}")


def add_features_command(sub: Any, common: Any) -> None:
    p = sub.add_parser("features", help="list the feature networks sample quality is measured with, or train one")
    p.add_argument("action", nargs="?", choices=["list", "train"], default="list")
    p.add_argument("name", nargs="?", help="train: which network (vaekit features lists them)")
    p.add_argument("--out", help="train: output folder (default features/NAME)")
    p.add_argument("--epochs", type=int, help="train: epochs (default: the shipped network's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], help="train: autocast (default: the network's, bf16 for "
                   "the ResNet)")
    p.add_argument("--data-dir", help="folder holding the data set's files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    common(p)
    p.set_defaults(func=cmd_features)


def cmd_fit_sampler(args: argparse.Namespace) -> None:
    from vaekit.apps.samplers import fit_sampler, save_sampler, stored_name

    args.split = args.split or "train"  # the images the model trained on (less a validation split it carved off)
    model, train = model_and_data(args)
    options = {"components": args.components, "covariance": args.covariance} if args.sampler == "gmm" else {
        "epochs": args.epochs}
    sampler = fit_sampler(model, train, args.sampler, groups=args.groups, seed=args.seed, **options)
    path = save_sampler(sampler, args.run)
    print(json.dumps(sampler.info) if args.json else f"{args.sampler} sampler fitted to {sampler.info['fits']}; "
          f"wrote {path}; draw with: vaekit sample {args.run} --sampler {stored_name(sampler)}")


def add_fit_sampler_command(sub: Any, positive: Any, common: Any) -> None:
    p = sub.add_parser("fit-sampler", help="fit a latent sampler (gmm, two-stage) to the training set's posterior "
                       "means, stored beside the model's weights")
    data_args(p)
    p.add_argument("--sampler", required=True, choices=["gmm", "two-stage"])
    p.add_argument("--components", type=positive, default=10, help="gmm: mixture components (default 10)")
    p.add_argument("--covariance", choices=["full", "diag", "tied", "spherical"], default="full",
                   help="gmm: covariance type (default full)")
    p.add_argument("--epochs", type=positive, default=40, help="two-stage: epochs of the second VAE (default 40)")
    p.add_argument("--groups", choices=["all", "top"], default="all", help="a hierarchy's latents to fit: every "
                   "group (default), or the top group alone, the lower ones then drawn from their priors (stored as "
                   "SAMPLER-top)")
    p.add_argument("--seed", type=int, default=0)
    common(p)
    p.set_defaults(func=cmd_fit_sampler)


def prior_samples(args: argparse.Namespace, model: Any, n: int, gen: Any, labels: Any) -> Any:
    """Images from the model's prior at --temperature; a VQ model's code prior also among its --top-k likeliest
    codes at each position."""
    if args.top_k is None:
        return model.sample(n, temperature=args.temperature, generator=gen, labels=labels)
    from vaekit.models.vq import VQVAE

    if not isinstance(model, VQVAE):
        raise VaekitError("--top-k draws a VQ model's codes among the k likeliest; this model has no code prior "
                          "(model.kind=vq has one)")
    return model.sample(n, temperature=args.temperature, generator=gen, top_k=args.top_k)


def balanced_samples(args: argparse.Namespace, model: Any, n: int, gen: Any, labels: Any) -> Any:
    """Samples at --class-balance: a conditional model's labels drawn from it, else a mixture's components
    reweighted by the classes they hold in the run's training split (apps/samplers/balance.py)."""
    from vaekit.apps.samplers import load_sampler
    from vaekit.apps.samplers.balance import balanced_labels, parse_balance

    if labels is not None or args.temperature != 1.0:
        raise VaekitError("--class-balance draws the classes itself: leave out --label, --per-class, --temperature")
    train = trained_split(args.run)
    if train.labels is None:
        raise VaekitError(f"--class-balance needs class labels, and {train.name!r} has none")
    classes = model.num_classes or int(train.labels.max()) + 1
    balance = parse_balance(args.class_balance, train.labels, classes)
    if model.num_classes:
        return model.sample(n, generator=gen, labels=balanced_labels(balance, n, gen))
    draws = _balanced_draws(args, model, train, balance, load_sampler(args.run, args.sampler))
    return model.decode(draws(n, gen).to(model.device)).mean.clamp(0, 1).cpu()


def _balanced_draws(args: argparse.Namespace, model: Any, train: Any, balance: list[float], sampler: Any) -> Any:
    """apps/samplers/balance.balanced_draws, its refusal of a one-mode prior naming --sampler gmm when the run has
    a GMM fitted."""
    from vaekit.apps.samplers import sampler_file
    from vaekit.apps.samplers.balance import OneModePrior, balanced_draws

    try:
        return balanced_draws(model, train, balance, sampler)
    except OneModePrior as e:
        if not sampler_file(args.run, "gmm").is_file():
            raise
        raise VaekitError(f"{e}; this run has a fitted GMM sampler: add --sampler gmm") from None


def disentanglement_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("disentanglement (--disentanglement)")
    g.add_argument("--disentanglement", action="store_true",
                   help="BetaVAE, FactorVAE, MIG, DCI, SAP, modularity and explicitness on data with factor labels "
                        "(dsprites-like, dsprites, an .npz with 'factors'), disentanglement_lib's definitions")
    g.add_argument("--fast", action="store_true",
                   help="a tenth of the points: a quick look, named fast, not comparable with published numbers")


def cmd_disentanglement(args: argparse.Namespace) -> None:
    from vaekit.evaluation.disentanglement import disentanglement

    args.split = args.split or "train"  # disentanglement_lib draws from the whole factor grid
    model, data = model_and_data(args)
    result = disentanglement(model, data, fast=args.fast, seed=args.seed)
    if args.json:
        print(json.dumps(result))
        return
    keys = ["beta_vae", "factor_vae", "mig", "disentanglement", "completeness", "informativeness", "sap",
            "modularity", "explicitness"]
    print(f"{result['data']} {result['split']} ({result['mode']}; posterior means of {result['encoded']} images, "
          f"{result['seconds']:.0f} s):")
    print("  ".join(f"{k} {result[k]:.3f}" for k in keys))

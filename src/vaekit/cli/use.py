"""CLI commands that put a trained model to work: interpolate, traverse, latent-map, encode, decode,
score and report. Each is one or two calls of the Python API plus writing the files asked for."""

from __future__ import annotations

import argparse
import csv
import io
from typing import Any

from vaekit.errors import VaekitError


def model_and_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model at `args.run` and the data to use it on.

    Without --data: the data set the run trained on, its test split, or (user data without one) the
    run's own validation split, the held-out images it never trained on. With --data naming a user
    file or folder that has no test split: that whole set. The run's own train split is the one it trained on
    (long-tailed with data.imbalance).
    """
    from vaekit.cli.common import check_shape, load_model
    from vaekit.data.datasets import has_split, load_dataset
    from vaekit.data.imbalance import long_tailed

    model = load_model(args.run)
    data_dir, split = args.data_dir, args.split
    trained = trained_on(args.run)
    # The run's image policy (data.image_size, data.channels) holds for any images it is used on: a folder of
    # mixed sizes is resized and cropped as the training images were, so it fits the model.
    channels, image_size = trained.channels, trained.image_size
    own_data = args.data is None
    val_size, val_seed = None, 0
    if own_data:
        args.data = trained.name
        data_dir = data_dir or trained.data_dir
        val_size, val_seed = trained.val_size, trained.val_seed
    if split is None:  # not asked for: the test split, else the run's held-out images, else the whole given set
        split = "test" if has_split(args.data, "test") else "val" if own_data else "all"
    data = load_dataset(args.data, split, data_dir, val_size, val_seed, channels=channels, image_size=image_size)
    if own_data and split == "train" and trained.imbalance is not None:  # the long-tailed split it trained on
        data = long_tailed(data, trained.imbalance, trained.imbalance_seed, trained.imbalance_profile)
    check_shape(model, data.shape, args.data)
    return model, data


def trained_on(run: str) -> Any:
    """The data section of the run directory's config.yaml (a run directory, or its model/ folder), else mnist's."""
    from vaekit import zoo
    from vaekit.config import DataConfig, load_config

    folder = zoo.resolve(run)
    for path in (folder / "config.yaml", folder.parent / "config.yaml"):
        if path.is_file():
            return load_config(str(path)).data
    return DataConfig(name="mnist")


def trained_split(run: str, data_dir: str | None = None) -> Any:
    """The training split the run saw: its data set's train split, long-tailed as its data.imbalance made it."""
    from vaekit.data.datasets import load_dataset
    from vaekit.data.imbalance import long_tailed

    d = trained_on(run)
    train = load_dataset(d.name, "train", data_dir or d.data_dir, d.val_size, d.val_seed, channels=d.channels,
                         image_size=d.image_size)
    return train if d.imbalance is None else long_tailed(train, d.imbalance, d.imbalance_seed, d.imbalance_profile)


def _example(data: Any, i: int) -> Any:
    import torch

    if not 0 <= i < len(data):
        raise VaekitError(f"example index {i} is out of range: {data.name!r} {data.split} has {len(data)} examples")
    return data.batch(torch.tensor([i]))


def cmd_interpolate(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.explore import interpolate
    from vaekit.apps.images import save_grid
    from vaekit.cli.common import save_npy

    model, data = model_and_data(args)
    images, z = interpolate(model, _example(data, args.from_index), _example(data, args.to_index), args.steps)
    path = save_grid(images.flatten(0, 1), args.output, nrow=args.steps)
    if args.npy:
        save_npy(z.numpy(), args.npy)
    return {"output": str(path), "rows": ["linear", "spherical"], "steps": args.steps, "npy": args.npy}


def cmd_traverse(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from vaekit.apps.explore import dims_by_kl, traverse
    from vaekit.apps.images import save_grid
    from vaekit.evaluation.evaluate import evaluate

    model, data = model_and_data(args)
    if args.dims == "auto":
        result = evaluate(model, data.subset(torch.arange(min(len(data), 2000))))
        kl = torch.tensor([v if v is not None else 0.0 for v in result.kl_per_dim])  # Monte Carlo dims last
        dims = dims_by_kl(kl, args.max_dims)
    else:
        try:
            dims = [int(d) for d in args.dims.split(",")]
        except ValueError:
            raise VaekitError(f"--dims {args.dims!r} is not 'auto' or a comma-separated list like 0,3,5") from None
        if any(not 0 <= d < model.latent_dim for d in dims):
            raise VaekitError(f"--dims {args.dims!r}: the model's latent dimensions are 0..{model.latent_dim - 1}")
    x = _example(data, args.index) if args.index is not None else None
    images = traverse(model, x, dims, torch.linspace(-args.range, args.range, args.steps))
    path = save_grid(images.flatten(0, 1), args.output, nrow=args.steps)
    return {"output": str(path), "dims": dims, "steps": args.steps, "range": args.range}


def cmd_latent_map(args: argparse.Namespace) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vaekit.apps.explore import encode_dataset, manifold, project_2d
    from vaekit.apps.images import grid
    from vaekit.storage import atomic_write_bytes

    model, data = model_and_data(args)
    subset = data.subset(torch.arange(min(len(data), args.n)))
    z, _ = encode_dataset(model, subset)
    points, kind = project_2d(z)
    panels = 2 if model.latent_dim == 2 else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 6.5), squeeze=False)
    ax = axes[0][0]
    colours = subset.labels.numpy() if subset.labels is not None else None
    sc = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="tab10", s=3, alpha=0.7)
    if colours is not None:
        fig.colorbar(sc, ax=ax, label="label")
    ax.set(
        title=f"encoded {data.name} {data.split} ({len(subset)} examples, {kind})",
        xlabel=f"{kind} 1",
        ylabel=f"{kind} 2",
    )
    if panels == 2:
        axes[0][1].imshow(grid(manifold(model, args.grid), nrow=args.grid, pad=0), cmap="gray")
        axes[0][1].set(title="decoded manifold over the prior's quantiles", xticks=[], yticks=[])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(args.output, buffer.getvalue())
    return {"output": args.output, "projection": kind, "n": len(subset)}


def cmd_encode(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.explore import encode_dataset
    from vaekit.cli.common import save_npy

    model, data = model_and_data(args)
    z, logvar = encode_dataset(model, data, sample=args.sample, seed=args.seed)
    save_npy(z.numpy(), args.output)
    if args.logvar:
        save_npy(logvar.numpy(), args.logvar)
    return {"output": args.output, "shape": list(z.shape), "sample": args.sample}


def cmd_decode(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from vaekit.apps.images import save_grid
    from vaekit.cli.common import load_model, save_npy

    model = load_model(args.run)
    try:
        z = np.load(args.latents, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise VaekitError(f"{args.latents!r} is not a readable .npy array ({exc})") from None
    if z.ndim != 2 or z.shape[1] != model.latent_dim or not np.issubdtype(z.dtype, np.floating):
        raise VaekitError(f"{args.latents!r} holds {z.dtype} {z.shape}; expected floats (N, {model.latent_dim})")
    if not np.isfinite(z).all():
        raise VaekitError(f"{args.latents!r} contains NaN or infinite values")
    with torch.no_grad():
        images = model.decode(torch.from_numpy(z.astype(np.float32))).mean.clamp(0, 1)
    path = save_grid(images, args.output)
    if args.npy:
        save_npy(images.numpy(), args.npy)
    return {"output": str(path), "n": int(z.shape[0]), "npy": args.npy}


def cmd_score(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.score import auroc, ood_scores, typical_entropy
    from vaekit.cli.common import check_shape, load_model
    from vaekit.data.datasets import has_split, load_dataset
    from vaekit.storage import atomic_write_bytes

    model, data = model_and_data(args)
    trained = trained_on(args.run)
    sets = [(args.data, data)]
    if args.ood:
        ood_split = data.split if has_split(args.ood, data.split) and data.split != "val" else None
        ood = load_dataset(args.ood, ood_split or ("test" if has_split(args.ood, "test") else "all"), None,
                           channels=trained.channels, image_size=trained.image_size)
        check_shape(model, ood.shape, args.ood)
        sets.append((args.ood, ood))
    background, entropy = None, None
    if args.method == "ratio" and args.background:
        background = load_model(args.background)
        check_shape(background, data.shape, args.background)
    if args.method == "typicality":
        train_set = load_dataset(trained.name, "train", trained.data_dir, trained.val_size, trained.val_seed)
        entropy = typical_entropy(model, train_set, args.iw_samples)
    base = f"nll_k{args.iw_samples}" if args.iw_samples else "neg_elbo"
    metric = base if args.method == "nll" else f"{args.method}({base})"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["dataset", "index" if args.batch == 1 else f"batch_of_{args.batch}", metric])
    scores = []
    for name, ds in sets:
        s = ood_scores(model, ds, args.method, args.iw_samples, args.compressor, background, entropy, args.batch)
        scores.append(s)
        writer.writerows([name, i, f"{v:.4f}"] for i, v in enumerate(s.tolist()))
    atomic_write_bytes(args.output, buffer.getvalue().encode())
    result: dict[str, Any] = {
        "output": args.output,
        "method": args.method,
        "metric": metric,
        "mean": {name: float(s.mean()) for (name, _), s in zip(sets, scores, strict=True)},
    }
    if entropy is not None:
        result["entropy"] = entropy
    if args.ood:
        result["auroc"] = auroc(scores[0], scores[1])
    return result


def cmd_report(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.report import write_report

    return {"output": str(write_report(args.run, args.output))}


def cmd_compress(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.compress.files import compress_file

    return compress_file(args.model, args.input, args.output, verify=args.verify)


def cmd_decompress(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.apps.compress.files import decompress_file

    return decompress_file(args.input, args.output, args.model)


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory, exported model folder, or zoo model name (vaekit zoo)")
    p.add_argument(
        "--data", help="data set name or path (default: the one the run trained on, from its config.yaml; else mnist)"
    )
    p.add_argument(
        "--split",
        choices=["train", "test", "val", "all"],
        help="default: test; for user data without one, the run's validation split (no --data) or the whole set",
    )
    p.add_argument("--data-dir", help="folder holding the data set's files")


def add_commands(sub: Any, positive: Any, common: Any) -> None:
    """Register the commands on the `vaekit` subparsers."""
    _add_explore_commands(sub, positive)
    _add_score_commands(sub, positive)
    _add_codec_commands(sub, positive)
    for name in (
        "interpolate",
        "traverse",
        "latent-map",
        "encode",
        "decode",
        "score",
        "report",
        "compress",
        "decompress",
    ):
        common(sub.choices[name])


def _add_explore_commands(sub: Any, positive: Any) -> None:
    p = sub.add_parser("interpolate", help="decode linear and spherical paths between two examples in z")
    data_args(p)
    p.add_argument("--from", dest="from_index", type=int, default=0, help="index of the first example")
    p.add_argument("--to", dest="to_index", type=int, default=1, help="index of the second example")
    p.add_argument("--steps", type=positive, default=10)
    p.add_argument("-o", "--output", default="interpolate.png", help="PNG: row 1 linear, row 2 spherical")
    p.add_argument("--npy", help="also write the latent paths (2, steps, D) as .npy")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("traverse", help="sweep latent dimensions one at a time, ordered by their KL")
    data_args(p)
    p.add_argument("--dims", default="auto", help="'auto' (by KL, most informative first) or a list like 0,3,5")
    p.add_argument("--max-dims", type=positive, default=10, help="rows for --dims auto (default 10)")
    p.add_argument("--index", type=int, help="start from this example's posterior mean (default z = 0)")
    p.add_argument("--range", type=float, default=3.0, help="sweep z_d over [-range, range] (default 3)")
    p.add_argument("--steps", type=positive, default=9)
    p.add_argument("-o", "--output", default="traverse.png")
    p.set_defaults(func=cmd_traverse)

    p = sub.add_parser("latent-map", help="plot the encoded data set (and the decoded manifold for a 2-d latent)")
    data_args(p)
    p.add_argument("--n", type=positive, default=5000, help="examples to encode (default 5000)")
    p.add_argument("--grid", type=positive, default=20, help="manifold grid size for a 2-d latent (default 20)")
    p.add_argument("-o", "--output", default="latent-map.png")
    p.set_defaults(func=cmd_latent_map)

    p = sub.add_parser("encode", help="write the posterior means (or samples) of a data set as .npy")
    data_args(p)
    p.add_argument("--sample", action="store_true", help="one posterior sample per example instead of the mean")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logvar", help="also write the posterior log-variances as .npy")
    p.add_argument("-o", "--output", default="latents.npy")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode latents from a .npy (N, D) into a PNG grid")
    p.add_argument("run", help="run directory, exported model folder, or zoo model name (vaekit zoo)")
    p.add_argument("latents", help=".npy file of float latents (N, D)")
    p.add_argument("-o", "--output", default="decoded.png")
    p.add_argument("--npy", help="also write the decoded images (N, C, H, W) as .npy")
    p.set_defaults(func=cmd_decode)


def _add_score_commands(sub: Any, positive: Any) -> None:
    p = sub.add_parser(
        "score", help="per-example OOD scores (nll, complexity, ratio, typicality) as CSV; with --ood, the AUROC"
    )
    data_args(p)
    p.add_argument("--ood", help="a second data set, scored as out-of-distribution")
    p.add_argument("--iw-samples", type=positive, help="score with the importance-sampled NLL instead of -ELBO")
    p.add_argument(
        "--method",
        default="nll",
        choices=["nll", "complexity", "ratio", "typicality"],
        help="nll; complexity: minus a lossless compressor's code length (Serra et al. 2020); ratio: minus a "
        "background model's (Ren et al. 2019); typicality: distance to the training set's mean (Nalisnick et al. 2019)",
    )
    p.add_argument("--compressor", default="png", choices=["png", "webp"], help="for --method complexity")
    p.add_argument("--background", help="for --method ratio: a run trained with --set data.noise=0.2")
    p.add_argument("--batch", type=positive, default=1, help="for --method typicality: examples per tested batch")
    p.add_argument("-o", "--output", default="scores.csv")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("report", help="write report.html for a run (curves, KL per dim, samples, config)")
    p.add_argument("run", help="run directory")
    p.add_argument("-o", "--output", help="HTML path (default RUN/report.html)")
    p.set_defaults(func=cmd_report)


def _add_codec_commands(sub: Any, positive: Any) -> None:
    p = sub.add_parser("compress", help="losslessly compress images with a trained model "
                       "(bits-back ANS; a VQ model: its two-part code)")
    p.add_argument("input", help="an IDX file, a uint8 .npy (N, H, W) or (N, C, H, W), or a folder of PNG images")
    p.add_argument(
        "--model",
        required=True,
        help="run directory, exported model or zoo name (Bernoulli for binary images, discretized-logistic for 8-bit)",
    )
    p.add_argument("-o", "--output", required=True, help="the .vkz file to write")
    p.add_argument("--verify", action="store_true", help="decode again and compare before writing")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore the images of a .vkz file, in their original format")
    p.add_argument("input", help="a .vkz file written by `vaekit compress`")
    p.add_argument("-o", "--output", required=True, help="file (.npy / IDX) or folder (PNG) to write")
    p.add_argument("--model", help="the model it was compressed with (default: where it was at compression)")
    p.set_defaults(func=cmd_decompress)


def describe(command: str, payload: dict[str, Any]) -> str:
    """The text line a command prints without --json."""
    if command == "score":
        text = f"wrote per-example {payload['metric']} to {payload['output']}; means " + ", ".join(
            f"{k}: {v:.2f} nats" for k, v in payload["mean"].items()
        )
        return text + (f"; AUROC {payload['auroc']:.4f}" if "auroc" in payload else "")
    if command == "compress":
        text = (
            f"wrote {payload['output']}: {payload['n']} images in {payload['bytes']:,} bytes, "
            f"{payload['bits_per_dim']:.4f} bits/dim{' (verified)' if payload['verified'] else ''}"
        )
        if "code_length_bits_per_dim" in payload:  # a VQ model: the file against its two-part code length
            text += (f"; the model's two-part code length {payload['code_length_bits_per_dim']:.4f} bits/dim "
                     f"(codes {payload['codes_bits_per_dim']:.4f} + pixels {payload['pixels_bits_per_dim']:.4f})")
        return text
    return f"wrote {payload['output']}"

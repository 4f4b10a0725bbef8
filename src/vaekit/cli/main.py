"""`vaekit <command>`: a thin shell over the Python API.

Exit codes: 0 success, 2 bad usage or bad input (one line on stderr, no traceback), 1 internal
failure (one line; set VAEKIT_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vaekit.cli.common import describe_groups, load_model, save_npy, score_note
from vaekit.cli.quality import (
    add_features_command,
    add_fit_sampler_command,
    balanced_samples,
    cmd_disentanglement,
    cmd_quality,
    disentanglement_args,
    prior_samples,
    quality_args,
)
from vaekit.cli.use import add_commands, data_args, describe, model_and_data
from vaekit.errors import Preempted, VaekitError
from vaekit.training.distributed import DEVICES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload) if args.json else text)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def cmd_train(args: argparse.Namespace) -> None:
    from vaekit.config import load_config
    from vaekit.training.loop import train

    overrides = list(args.set or [])
    for flag, key in (
        ("data", "data.name"),
        ("epochs", "train.epochs"),
        ("steps", "train.steps"),
        ("seed", "train.seed"),
        ("batch_size", "train.batch_size"),
        ("device", "train.device"),
        ("precision", "train.precision"),
    ):
        if getattr(args, flag) is not None:  # explicit flags beat the config file
            overrides.append(f"{key}={getattr(args, flag)}")
    cfg = load_config(args.config, overrides)
    run_dir = args.run_dir or f"runs/{Path(str(args.config or 'default')).stem}"
    result = train(cfg, run_dir, resume=args.resume, quiet=args.quiet or args.json)
    payload: dict[str, Any] = {
        "run_dir": str(result.run_dir),
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "examples_per_s": round(result.examples_per_s, 1),
        "test": result.test.to_dict() if result.test else None,
    }
    lines = [
        f"run directory: {result.run_dir}",
        f"trained {result.steps} steps in {result.seconds:.1f} s, evaluations included "
        f"({result.examples_per_s:,.0f} examples/s in training steps)",
        f"samples: {result.run_dir / 'samples' / 'samples.png'}",
        f"reconstructions: {result.run_dir / 'samples' / 'reconstructions.png'}",
    ]
    if result.test:
        t = result.test
        vq = t.code_usage is not None  # a VQ model: the -ELBO is its two-part code, no KL per dimension
        tail = "" if vq else f", KL {t.kl:.2f} nats, active units {t.active_units}/{len(t.kl_per_dim)}"
        lines.append(f"test -ELBO: {t.neg_elbo:.2f} nats ({t.bits_per_dim:.4f} bits/dim){tail}")
        lines += score_note(cfg)
        if len(t.group_dims) > 1 or vq:
            lines.append(describe_groups(t))
    _emit(args, payload, "\n".join(lines))


def cmd_eval(args: argparse.Namespace) -> None:
    from vaekit.evaluation.evaluate import evaluate
    from vaekit.training.distributed import resolve_device

    if args.quality:
        cmd_quality(args)
        return
    if args.disentanglement:
        cmd_disentanglement(args)
        return
    model, data = model_and_data(args)
    # evaluate draws its noise on the CPU, so the score is the same on any device
    model = model.to(resolve_device(args.device, "--device"))
    classify = args.classify_k if model.num_classes else None
    result = evaluate(
        model, data, args.batch_size, iw_samples=args.iw_samples if args.nll else None, classify_k=classify,
        per_class=args.per_class,
    )
    text = (
        f"{args.data} {result.split} ({result.n} examples): "
        f"-ELBO {result.neg_elbo:.2f} ± {result.neg_elbo_se:.2f} nats "
        f"({result.bits_per_dim:.4f} bits/dim; "
        f"{'the two-part code length, exact' if result.code_usage is not None else 'single-sample ELBO estimate'})"
    )
    if result.nll is not None and result.code_usage is not None:  # a VQ model: importance sampling adds nothing
        text += f"\nNLL bound: the two-part code length, {result.nll:.2f} nats (a point-mass posterior)"
    elif result.nll is not None:
        text += (
            f"\nNLL {result.nll:.2f} ± {result.nll_se:.2f} nats ({result.nll_bits_per_dim:.4f} bits/dim; "
            f"importance-sampled with k={result.iw_samples}, an upper bound on -log p(x) in expectation)"
        )
    if result.binarization_seed is not None:
        text += f"\nbinarized {result.split} split: one fixed draw, seed {result.binarization_seed}"
    text += "\n" + describe_groups(result)
    if result.class_accuracy is not None:
        text += (
            f"\ngenerative classifier argmax_y log p(x | y) (k={result.classify_k} per class): "
            f"accuracy {100 * result.class_accuracy:.2f}%"
        )
    if result.per_class is not None:
        from vaekit.evaluation.per_class import describe

        text += "\nper class (nats; MSE of the decoder's mean per pixel; AU: active units within the class):\n"
        text += describe(result.per_class)
    _emit(args, result.to_dict(), text)


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from vaekit.apps.images import save_grid

    model = load_model(args.run)
    labels, nrow = None, None
    if (args.label is not None or args.per_class) and not model.num_classes:
        raise VaekitError("--label and --per-class need a conditional model (trained with model.conditional=true)")
    if args.label is not None:
        if not 0 <= args.label < model.num_classes:
            raise VaekitError(f"--label {args.label}: the model's classes are 0..{model.num_classes - 1}")
        labels = torch.full((args.n,), args.label)
    elif args.per_class:  # one row per class
        labels = torch.arange(model.num_classes).repeat_interleave(args.per_class)
        nrow = args.per_class
    n = len(labels) if labels is not None else args.n
    gen = torch.Generator().manual_seed(args.seed)
    if args.class_balance is not None:
        images = balanced_samples(args, model, n, gen, labels)
    elif args.sampler != "prior":
        images = _fitted_samples(args, model, n, gen, labels)
    else:
        images = prior_samples(args, model, n, gen, labels)
    path = save_grid(images, args.output, nrow=nrow)
    if args.npy:
        save_npy(images.numpy(), args.npy)
    _emit(args, {"output": str(path), "n": n, "npy": args.npy}, f"wrote {n} samples to {path}")


def _fitted_samples(args: argparse.Namespace, model: Any, n: int, gen: Any, labels: Any) -> Any:
    from vaekit.apps.samplers import draw_images, load_sampler

    if labels is not None or args.temperature != 1.0:
        raise VaekitError(f"--sampler {args.sampler} draws fitted latents: --label, --per-class and --temperature "
                          "apply to the prior (--sampler prior)")
    sampler = load_sampler(args.run, args.sampler)
    assert sampler is not None
    return draw_images(model, n, sampler, gen)


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from vaekit.apps.images import save_reconstructions

    model, data = model_and_data(args)
    path, n = save_reconstructions(model, data, args.n, args.output)
    _emit(args, {"output": str(path), "n": n}, f"wrote {n} inputs and reconstructions to {path}")


def cmd_datasets(args: argparse.Namespace) -> None:
    from vaekit.data.datasets import list_datasets

    rows = list_datasets()
    text = "\n".join(
        f"{r['name']:<26} {r['train']:>6} train {r['test']:>6} test  {r['found'] or 'not on disk'}" for r in rows
    )
    _emit(
        args,
        {"datasets": rows},
        text + "\nuser data: a .npy/.npz file (uint8 or [0, 1] floats) or a folder of PNG/JPEG images",
    )


def cmd_zoo(args: argparse.Namespace) -> None:
    from vaekit import zoo

    if args.name:
        entry = zoo.card(args.name)
        _emit(args, entry, "\n".join(f"{k}: {v}" for k, v in entry.items()))
        return
    cards = [zoo.card(name) for name in zoo.names()]
    lines = [f"{'name':<16} {'data':<18} {'test -ELBO':>12} {'test NLL':>16} {'size':>8}  trained"]
    for c in cards:
        test = c["test"]
        nll = f"{test['nll']:.2f} (k={test['iw_samples']})" if test.get("nll") is not None else "-"
        lines.append(
            f"{c['name']:<16} {c['data']:<18} {test['neg_elbo']:>12.2f} {nll:>16} {c['bytes'] / 2**20:>6.2f} MB"
            f"  {c['training_minutes']:.1f} min"
        )
    text = "\n".join(lines) if cards else "the zoo is empty"
    hint = "\nuse a name wherever a run goes: vaekit sample NAME, VAE.from_pretrained(NAME)"
    _emit(args, {"models": cards}, text + hint)


def cmd_config(args: argparse.Namespace) -> None:
    from vaekit.config import load_config, preset_names

    if args.list:
        _emit(args, {"presets": preset_names()}, "\n".join(preset_names()))
        return
    cfg = load_config(args.config, args.set)
    _emit(args, cfg.to_dict(), cfg.to_yaml().rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", description="Train variational autoencoders stably and put them to work.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_eval(sub)
    _add_sample(sub)
    _add_reconstruct(sub)
    add_commands(sub, _positive, _common)
    add_features_command(sub, _common)
    add_fit_sampler_command(sub, _positive, _common)
    _add_datasets(sub)
    _add_zoo(sub)
    _add_config(sub)
    return parser


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE and write a run directory",
        description="Train a VAE. Precedence: defaults < config file < --set < explicit flags.",
    )
    p.add_argument("config", nargs="?", help="preset name (see `vaekit config --list`) or a YAML file")
    p.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. objective.beta=4")
    p.add_argument("--data", help="data set name or path (data.name)")
    p.add_argument("--epochs", type=int, help="train.epochs")
    p.add_argument("--steps", type=int, help="train.steps (overrides epochs)")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--batch-size", type=int, help="train.batch_size (the global batch under torchrun)")
    p.add_argument("--device", choices=DEVICES, help="train.device (default auto)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="train.precision (fp16: CUDA only)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --run-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_train)


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="score a trained model on a data split")
    data_args(p)
    p.add_argument("--nll", action="store_true", help="also estimate -log p(x) by importance sampling")
    p.add_argument("--iw-samples", type=_positive, default=1000, help="importance samples for --nll (default 1000)")
    p.add_argument("--per-class", action="store_true",
                   help="each class's -ELBO, reconstruction, KL, active units (and NLL with --nll); needs labels")
    p.add_argument("--batch-size", type=_positive, default=500)
    p.add_argument(
        "--classify-k",
        type=_positive,
        default=10,
        help="a conditional model: importance samples per class for the generative classifier's accuracy (default 10)",
    )
    p.add_argument("--device", choices=DEVICES, default="auto", help="where to score (default auto: a GPU if any)")
    quality_args(p, _positive)
    disentanglement_args(p)
    _common(p)
    p.set_defaults(func=cmd_eval)


def _add_sample(sub: Any) -> None:
    p = sub.add_parser("sample", help="draw images (from the prior or a fitted sampler) and write a PNG grid")
    p.add_argument("run", help="run directory, exported model folder, or zoo model name (vaekit zoo)")
    p.add_argument("--n", type=_positive, default=64, help="number of samples (default 64)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of the prior's std; a VQ model: its code prior's logits are divided by it (default 1.0)")
    p.add_argument("--top-k", type=_positive, help="a VQ model: draw each code among the k likeliest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="samples.png", help="PNG path (default samples.png)")
    p.add_argument("--npy", help="also write the images as a float32 .npy (N, C, H, W)")
    p.add_argument("--label", type=int, help="a conditional model: draw this class")
    p.add_argument("--per-class", type=_positive, help="a conditional model: a grid of this many per class, a row each")
    p.add_argument("--class-balance", metavar="BALANCE",
                   help="draw classes at this balance: uniform, train, or one weight per class (0.2,0.1,...): a "
                        "conditional model's labels, or a mixture prior's / GMM sampler's components reweighted")
    p.add_argument("--sampler", default="prior", help="latents from the prior (default), or from a sampler fitted with "
                   "`vaekit fit-sampler`: gmm, two-stage, gmm-top, two-stage-top")
    _common(p)
    p.set_defaults(func=cmd_sample)


def _add_reconstruct(sub: Any) -> None:
    p = sub.add_parser("reconstruct", help="write inputs and their reconstructions side by side")
    data_args(p)
    p.add_argument("--n", type=_positive, default=32)
    p.add_argument("-o", "--output", default="reconstructions.png")
    _common(p)
    p.set_defaults(func=cmd_reconstruct)


def _add_datasets(sub: Any) -> None:
    p = sub.add_parser("datasets", help="list built-in data sets and where their files are")
    _common(p)
    p.set_defaults(func=cmd_datasets)


def _add_zoo(sub: Any) -> None:
    p = sub.add_parser("zoo", help="list the pretrained models shipped with vaekit, or print one's model card")
    p.add_argument("name", nargs="?", help="a zoo model: print its card")
    _common(p)
    p.set_defaults(func=cmd_zoo)


def _add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="print a resolved config (preset or file plus --set overrides)")
    p.add_argument("config", nargs="?", help="preset name or YAML file (default: built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--list", action="store_true", help="list the presets")
    _common(p)
    p.set_defaults(func=cmd_config)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = lambda msg, *a, **k: f"vaekit: warning: {msg}\n"
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], dict[str, Any] | None] = args.func
    try:
        payload = func(args)
        if payload is not None:
            _emit(args, payload, describe(args.command, payload))
    except VaekitError as exc:
        print(f"vaekit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        again = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]
        print(f"vaekit {args.command}: {exc}; resume with: vaekit {shlex.join(again)} --resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vaekit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`vaekit zoo | head -3`): stop quietly, as a Unix tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a writer the broken pipe stopped
    except Exception as exc:
        if os.environ.get("VAEKIT_DEBUG"):
            raise
        print(
            f"vaekit {args.command}: internal error: {type(exc).__name__}: {exc} (set VAEKIT_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

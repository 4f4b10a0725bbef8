"""Every shipped preset at its defaults, the first steps of training: does the loss watch (or a skip streak) roll it
back? Issue 40: `iwae-mlp` stopped itself ("training diverged ... after 3 rollbacks") because the watch judged its
single-sample -ELBO, which IWAE training worsens by design; the watch now judges each objective's own loss.

    .venv/bin/python bench/preset_watch.py --steps 300             # every preset, ~15 min here
    .venv/bin/python bench/preset_watch.py --steps 300 --presets iwae-mlp hvae

Each preset trains on its own data set (cifar10-jpeg stands in for the colour presets' CIFAR-10 tarball) for
`--steps` steps with its shipped config otherwise, and the table gives the rollbacks, skipped updates and the
training loss's first and last logged values. Run it alone: two heavy processes on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import vaekit
from results import update_section
from vaekit.apps.report import read_metrics
from vaekit.config import preset_names


def run(preset: str, steps: int) -> dict[str, object]:
    cfg = vaekit.load_config(preset)
    sets = [f"train.steps={steps}", f"train.log_every={max(1, steps // 6)}", "train.tensorboard=false",
            "train.samples=4", "train.eval_batch_size=500"]
    if cfg.data.name == "cifar10":
        sets.append("data.name=cifar10-jpeg")
    cfg = vaekit.load_config(preset, sets)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        try:
            vaekit.train(cfg, f"{tmp}/run", quiet=True)
            outcome = "trained"
        except vaekit.VaekitError as exc:
            outcome = f"stopped: {str(exc)[:80]}"
        rows = read_metrics(Path(f"{tmp}/run"))
    train = [r for r in rows if r["kind"] == "train"]
    score = "neg_elbo"  # every shipped preset's objective reports the -ELBO
    return {
        "preset": preset,
        "objective": cfg.objective.name,
        "outcome": outcome,
        "rollbacks": sum(r["kind"] == "rollback" for r in rows),
        "skipped": train[-1]["skipped"] if train else 0,
        "first": train[0][score] if train else float("nan"),
        "last": train[-1][score] if train else float("nan"),
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--presets", nargs="*", default=None, help="default: every shipped preset")
    parser.add_argument("--tag", default="stability-preset-watch", help="the RESULTS.md section to write")
    args = parser.parse_args()
    results = []
    for preset in args.presets or preset_names():
        results.append(run(preset, args.steps))
        print(results[-1], flush=True)
    lines = [
        f"Command: `.venv/bin/python bench/preset_watch.py --steps {args.steps}"
        f"{' --presets ' + ' '.join(args.presets) if args.presets else ''}"
        f"{' --tag ' + args.tag if args.tag != 'stability-preset-watch' else ''}` ({time.strftime('%Y-%m-%d')}). Each "
        f"preset at its shipped defaults for its first {args.steps} steps (colour presets on cifar10-jpeg); the "
        "training loss is the running -ELBO of the logged rows (the objective's score).",
        "",
        "| preset | objective | outcome | rollbacks | skipped | first row's -ELBO | last row's -ELBO | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| `{r['preset']}` | {r['objective']} | {r['outcome']} | {r['rollbacks']} | {r['skipped']} | "
              f"{r['first']:.2f} | {r['last']:.2f} | {r['seconds']:.0f} |" for r in results]
    update_section(args.tag, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

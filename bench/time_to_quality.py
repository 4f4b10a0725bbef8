"""Time to quality: training seconds until the 784-400-20 MNIST VAE's test -ELBO first reaches 105.5 nats.

What a user feels is neither examples/s nor epochs but how long until the model is good. Both trainers
evaluate the test -ELBO after every epoch and count only the time spent training (evaluation taken out
the same way: vaekit's `train_seconds` in its eval rows, pythae's through an epoch-end callback that
subtracts its own evaluation time); process start-up and data loading are outside the clock for both,
compilation is inside it. Runs are fresh processes, interleaved, repeated; the table gives the median
and the spread.

    .venv/bin/python bench/time_to_quality.py --calibrate          # vaekit settings, one run each
    .venv/bin/python bench/time_to_quality.py --repeats 3          # the table, ~15 min
    .venv/bin/python bench/time_to_quality.py --nll-run bench/out/burda-elu60   # a finished bench/nll.py run
    .venv/bin/python bench/time_to_quality.py --pythae-burda 40    # pythae's side of the Burda target, ~50 min
    .venv/bin/python bench/time_to_quality.py --before /tmp/before/src --after src   # two versions, ~25 min

--nll-run scores a finished `bench/nll.py` run's per-epoch checkpoints afterwards (test NLL at k = 1000 on the
first 1,000 test images, by bisection: the curve falls) and gives the training seconds until it first reached
--nll-target (88.0 nats), evaluation excluded: the seconds come from the run's own throughput rows.

pythae runs twice: at the pytorch/examples setting of the throughput table (lr 1e-3, batch 128) and at
its own trainer's defaults (lr 1e-4, batch 64). Run it alone: two heavy processes on 2 cores slow each
other many times over.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import update_section
from throughput import ceilings_line, ensure_pythae, matmul_gflops, mnist_npz
from vaekit.apps.report import read_metrics

BENCH = Path(__file__).resolve().parent
TARGET = 105.5

# vaekit's candidates for the fastest way to the target (--calibrate runs each once); BEST is the winner of
# the calibration in bench/RESULTS.md, "Time to quality".
CANDIDATES: dict[str, tuple[list[str], int]] = {
    "default": ([], 12),
    "lr 2e-3": (["optim.lr=0.002"], 10),
    "lr 3e-3": (["optim.lr=0.003"], 10),
    "lr 3e-3 ema": (["optim.lr=0.003", "guard.ema_decay=0.999"], 10),
    "lr 3e-3 cosine, 8 epochs": (["optim.lr=0.003", "optim.lr_schedule=cosine"], 8),
    "lr 4e-3 cosine, 6 epochs": (["optim.lr=0.004", "optim.lr_schedule=cosine"], 6),
    "lr 4e-3 cosine ema, 6 epochs": (["optim.lr=0.004", "optim.lr_schedule=cosine", "guard.ema_decay=0.998"], 6),
    "b256 bf16 lr 3e-3": (["train.batch_size=256", "optim.lr=0.003", "train.precision=bf16"], 10),
    "b256 bf16 lr 4e-3 cosine, 8 epochs": (["train.batch_size=256", "optim.lr=0.004", "train.precision=bf16",
                                            "optim.lr_schedule=cosine"], 8),
    "b512 bf16 lr 6e-3 cosine, 10 epochs": (["train.batch_size=512", "optim.lr=0.006", "train.precision=bf16",
                                             "optim.lr_schedule=cosine", "optim.lr_warmup_steps=100"], 10),
    "lr 3e-3 compiled": (["optim.lr=0.003", "train.compile=true"], 10),
    "b256 bf16 lr 4e-3 cosine compiled, 8 epochs": (["train.batch_size=256", "optim.lr=0.004",
                                                     "train.precision=bf16", "optim.lr_schedule=cosine",
                                                     "train.compile=true"], 8),
    # second round (--round 2), around the first round's winner (lr 3e-3 cosine, 8 epochs: epoch 6)
    "lr 3e-3 cosine, 6 epochs": (["optim.lr=0.003", "optim.lr_schedule=cosine"], 6),
    "lr 3e-3 cosine, 7 epochs": (["optim.lr=0.003", "optim.lr_schedule=cosine"], 7),
    "lr 3e-3 cosine compiled, 7 epochs": (["optim.lr=0.003", "optim.lr_schedule=cosine", "train.compile=true"], 7),
    "lr 3e-3 cosine ema compiled, 7 epochs": (["optim.lr=0.003", "optim.lr_schedule=cosine", "guard.ema_decay=0.998",
                                               "train.compile=true"], 7),
    "b256 bf16 lr 3e-3 cosine compiled, 12 epochs": (["train.batch_size=256", "optim.lr=0.003",
                                                      "train.precision=bf16", "optim.lr_schedule=cosine",
                                                      "train.compile=true"], 12),
    "b512 bf16 lr 4e-3 cosine compiled, 16 epochs": (["train.batch_size=512", "optim.lr=0.004",
                                                      "train.precision=bf16", "optim.lr_schedule=cosine",
                                                      "train.compile=true"], 16),
}
ROUND_2 = list(CANDIDATES)[-6:]
BEST = "b256 bf16 lr 3e-3 cosine compiled, 12 epochs"
BEST_EAGER = "lr 3e-3 cosine, 7 epochs"  # the best without compiling (no C++ compiler, or a first run)


def first_reach(curve: list[dict[str, float]], target: float = TARGET) -> dict[str, float] | None:
    """The first evaluation at or below `target` nats, or None."""
    return next((p for p in curve if p["neg_elbo"] <= target), None)


def vaekit_curve(extra: list[str], epochs: int, src: str | None = None) -> list[dict[str, float]]:
    """One fresh `vaekit train mlp` process; `src` puts another version's source tree first on the path."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())} if src else None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "vaekit", "train", "mlp", "--run-dir", f"{tmp}/run", "--epochs", str(epochs),
               "--quiet", "--set", "train.tensorboard=false", *(arg for item in extra for arg in ("--set", item))]
        subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows = read_metrics(Path(f"{tmp}/run"))
    return [{"epoch": r["epoch"], "train_seconds": r["train_seconds"], "neg_elbo": r["neg_elbo"]}
            for r in rows if r["kind"] == "eval" and r.get("split") == "test"]


def pythae_curve(python: Path, data: Path, epochs: int, lr: float, batch: int,
                 device: str = "cpu") -> list[dict[str, float]]:
    cmd = [str(python), str(BENCH / "pythae_run.py"), str(data), str(epochs), device, "--curve", "--lr", str(lr),
           "--batch", str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["curve"]


def describe(curve: list[dict[str, float]]) -> dict[str, float]:
    hit = first_reach(curve)
    return {"seconds": hit["train_seconds"] if hit else float("inf"), "epoch": hit["epoch"] if hit else float("inf"),
            "best": min(p["neg_elbo"] for p in curve), "epochs_run": len(curve)}


def calibrate(round_: int) -> None:
    names = ROUND_2 if round_ == 2 else [n for n in CANDIDATES if n not in ROUND_2]
    lines = ["| vaekit setting | flags | epochs run | seconds to 105.5 | epoch reached | best -ELBO |",
             "|---|---|---|---|---|---|"]
    for name in names:
        extra, epochs = CANDIDATES[name]
        if "train.compile=true" in extra:
            vaekit_curve(extra, 1)  # fill the compile cache: what a second run of the graph on this machine finds
        d = describe(vaekit_curve(extra, epochs))
        flags = " ".join(f"`--set {e}`" for e in extra) or "(none)"
        lines.append(f"| {name} | {flags} | {epochs} | {d['seconds']:.1f} | {d['epoch']} | {d['best']:.2f} |")
        print(lines[-1], flush=True)
    flag = "--calibrate" + (" --round 2" if round_ == 2 else "")
    body = [f"Command: `.venv/bin/python bench/time_to_quality.py {flag}` ({time.strftime('%Y-%m-%d')}): "
            "one fresh process per setting, training seconds (evaluation excluded) until the test -ELBO first "
            f"reaches {TARGET} nats, judged after each epoch. Compiled settings ran after a 1-epoch run of the same "
            "graph had filled the compile cache (a user's second run on a machine; the first pays ~20 s more).", "",
            *lines]
    update_section("time-to-quality-calibration" + ("-2" if round_ == 2 else ""), "\n".join(body))


def nll_time(run: Path, target: float) -> list[str]:
    """Training seconds until a bench/nll.py run's test NLL (k = 1000, first 1,000 images) first reached `target`."""
    import torch

    import vaekit
    from vaekit.checkpoint import list_checkpoints, unflatten_state
    from vaekit.evaluation.evaluate import evaluate
    from vaekit.storage import read_safetensors
    from vaekit.training.players import model_weights

    rows = read_metrics(run)
    cfg = vaekit.load_config(run / "config.yaml")
    batch = cfg.train.batch_size
    # examples_per_s is cumulative over training steps only, so step * batch / it = training seconds at that row
    clock = [(r["step"], r["step"] * batch / r["examples_per_s"]) for r in rows if r["kind"] == "train"]
    model = vaekit.VAE.from_pretrained(str(run))
    subset = vaekit.load_dataset(cfg.data.name, "test").subset(torch.arange(1000))
    checkpoints = [c for c in list_checkpoints(run / "checkpoints") if not c.name.endswith("00000000.safetensors")]
    scored: dict[int, tuple[int, float]] = {}

    def nll(i: int) -> float:
        if i not in scored:
            tensors, meta = read_safetensors(checkpoints[i])
            state = unflatten_state(json.loads(meta["state"]), tensors)
            model.load_state_dict(model_weights(state))
            scored[i] = (int(state["step"]), evaluate(model, subset, batch_size=100, iw_samples=1000).nll)
            print(f"checkpoint {checkpoints[i].name}: {scored[i][1]:.2f} nats", flush=True)
        return scored[i][1]

    lo, hi = 0, len(checkpoints) - 1
    if nll(hi) > target:
        return [f"{run.name}: not reached ({nll(hi):.2f} nats at the last checkpoint)"]
    while lo < hi:  # the first checkpoint at or below the target
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if nll(mid) <= target else (mid + 1, hi)
    step, value = scored[lo]
    seconds = next(t * step / s for s, t in clock if s >= step)  # the first throughput row at or after it
    return [f"| `{run.name}` ({cfg.model.activation}, batch {batch}, lr {cfg.optim.lr:g}) | {seconds / 60:.1f} | "
            f"{step / math.ceil(60000 / batch):.0f} | {value:.2f} | checkpoints scored: {len(scored)} |"]


def pythae_burda(minutes: float, target: float) -> None:
    """pythae's trainer at its defaults (lr 1e-4, batch 64) on the `burda` network (Burda et al.'s tanh), one fixed
    binarization of the training set, for `minutes`; then the first checkpoint whose NLL (pythae's get_nll, k =
    1000, vaekit's fixed binarized test draw, first 1,000 images) is at or below `target`, found by bisection."""
    import numpy as np
    import torch

    import vaekit

    python = ensure_pythae()
    folder = BENCH / "out" / "pythae-burda"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    data = folder / "binarized.npz"
    train = vaekit.load_dataset("mnist", "train").images
    test = vaekit.load_dataset("binarized-mnist", "test").images[:1000]  # the draw vaekit's rows are scored on
    binary = torch.bernoulli(train.float() / 255, generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    np.savez(data, train_bin=binary.numpy(), test_bin=(test // 255).numpy())
    run = subprocess.run([str(python), str(BENCH / "pythae_run.py"), str(data), "100000", "--burda", str(folder),
                          "--minutes", str(minutes), "--lr", "1e-4", "--batch", "64"],
                         capture_output=True, text=True, check=True)
    print(run.stdout.strip().splitlines()[-1], flush=True)
    checkpoints = sorted(folder.glob("epoch-*.pt"))
    scored: dict[int, dict[str, float]] = {}

    def nll(i: int) -> float:
        if i not in scored:
            out = subprocess.run([str(python), str(BENCH / "pythae_run.py"), str(data), "0", "--nll-of",
                                  str(checkpoints[i]), "--k", "1000"], capture_output=True, text=True, check=True)
            scored[i] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{checkpoints[i].name}: {scored[i]['nll']:.2f} nats", flush=True)
        return scored[i]["nll"]

    lo, hi = 0, len(checkpoints) - 1
    if nll(hi) > target:
        last = scored[hi]
        row = (f"| pythae defaults (lr 1e-4, batch 64), `burda` network (tanh), one fixed binarization | not reached "
               f"in {last['train_seconds'] / 60:.1f} | {last['epoch']:.0f} | {last['nll']:.2f} (last) | "
               f"checkpoints scored: {len(scored)} |")
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if nll(mid) <= target else (mid + 1, hi)
        hit = scored[lo]
        row = (f"| pythae defaults (lr 1e-4, batch 64), `burda` network (tanh), one fixed binarization | "
               f"{hit['train_seconds'] / 60:.1f} | {hit['epoch']:.0f} | {hit['nll']:.2f} | {len(scored)} checkpoints "
               "scored |")
    body = [f"Command: `.venv/bin/python bench/time_to_quality.py --pythae-burda {minutes:g} --nll-target {target:g}` "
            f"({time.strftime('%Y-%m-%d')}). pythae's trainer, checkpoints after every epoch (their saving, "
            "milliseconds, is inside pythae's minutes), scored afterwards with pythae's own `VAE.get_nll` (k = 1000, "
            "the first 1,000 images of vaekit's fixed binarized test draw).", "",
            "| run | training minutes to the target | epoch | NLL there (k = 1000, first 1,000 test images) | |",
            "|---|---|---|---|---|", row]
    update_section("time-to-nll-pythae-burda", "\n".join(body))
    print("\n".join(body))


AB_SETTINGS = ["default", BEST, BEST_EAGER]


def ab(before: str, after: str, repeats: int, names: list[str], seeds: list[int], pythae: bool) -> None:
    """Each vaekit setting (and seed) with the code before and after in turn, and pythae (lr 1e-3) once, per
    repeat."""
    python = ensure_pythae()
    for version in (before, after):  # fill each version's compile cache first, as on a user's second run
        vaekit_curve(CANDIDATES[BEST][0], 1, version)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = mnist_npz(Path(tmp))
        for r in range(repeats):
            for name in names:
                extra, epochs = CANDIDATES[name]
                for seed in seeds:
                    row = name if seeds == [0] else f"{name}, seed {seed}"
                    for version, src in (("before", before), ("after", after)):
                        curve = vaekit_curve([*extra, f"train.seed={seed}"], epochs, src)
                        runs.setdefault((row, version), []).append(describe(curve))
            if pythae:
                runs.setdefault((PYTHAE_AB, ""), []).append(describe(pythae_curve(python, data, 12, 1e-3, 128)))
            print(f"repeat {r + 1}:", {f"{k[0]} {k[1]}": (v[-1]["seconds"], v[-1]["best"]) for k, v in runs.items()},
                  flush=True)
    ab_report(runs, f"--before {before} --after {after} --repeats {repeats}" + (
        f" --settings {' '.join(shlex.quote(n) for n in names)} --seeds {' '.join(map(str, seeds))}"
        if names != AB_SETTINGS or seeds != [0] else "") + ("" if pythae else " --no-pythae"), matmul_gflops())


PYTHAE_AB = "pythae (lr 1e-3, batch 128)"


def ab_report(runs: dict[tuple[str, str], list[dict[str, float]]], flags: str, gflops: dict[str, float]) -> None:
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    pythae = med.get((PYTHAE_AB, ""), math.nan)
    secs = [r["seconds"] for r in runs.get((PYTHAE_AB, ""), [])]
    lines = ["| setting | before: seconds (spread) | after: seconds (spread) | after / before | "
             "pythae / before | pythae / after | best -ELBO before / after |", "|---|---|---|---|---|---|---|"]
    for row in dict.fromkeys(k[0] for k in runs if k[1]):
        b, a = (runs[(row, v)] for v in ("before", "after"))
        spread = [f"{min(r['seconds'] for r in x):.1f}-{max(r['seconds'] for r in x):.1f}" for x in (b, a)]
        mb, ma = med[(row, "before")], med[(row, "after")]
        best = [statistics.median(r["best"] for r in x) for x in (b, a)]
        ratios = [f"{pythae / m:.2f}x" if secs else "-" for m in (mb, ma)]
        lines.append(f"| {row} | {mb:.1f} ({spread[0]}) | {ma:.1f} ({spread[1]}) | {ma / mb:.2f} | "
                     f"{ratios[0]} | {ratios[1]} | {best[0]:.2f} / {best[1]:.2f} |")
    said = f"median {pythae:.1f} s ({min(secs):.1f}-{max(secs):.1f})" if secs else "not run (--no-pythae)"
    body = [f"Command: `.venv/bin/python bench/time_to_quality.py {flags}` ({time.strftime('%Y-%m-%d')}). Seconds "
            "of training until the test -ELBO first reaches 105.5 nats (evaluation excluded, compilation included, "
            "compile caches filled first; inf: not reached); every repeat runs each setting with the code before "
            f"and after in turn, then pythae (lr 1e-3, batch 128): {said}.", "", *lines, "", ceilings_line(gflops)]
    tag = "time-to-quality-ab" + ("" if "--settings" not in flags else "-seeds")
    update_section(tag, "\n".join(body))
    print("\n".join(body))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibrate", action="store_true", help="run every vaekit candidate once instead")
    parser.add_argument("--round", type=int, default=1, choices=[1, 2], help="the calibration's round of candidates")
    parser.add_argument("--nll-run", type=Path, help="a finished bench/nll.py run folder: time to --nll-target")
    parser.add_argument("--nll-target", type=float, default=88.0)
    parser.add_argument("--pythae-burda", type=float, metavar="MINUTES", help="pythae at its defaults on the "
                        "Burda network for MINUTES, then the training time to --nll-target from its checkpoints")
    parser.add_argument("--pythae-default-epochs", type=int, default=30,
                        help="epochs of pythae at its own defaults (lr 1e-4, batch 64), which reach the target late")
    parser.add_argument("--before", help="with --after: the src/ folders of two versions, run in turn")
    parser.add_argument("--after")
    parser.add_argument("--settings", nargs="+", default=AB_SETTINGS, help="with --before/--after: which settings")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="with --before/--after: train.seed values")
    parser.add_argument("--no-pythae", action="store_true", help="with --before/--after: leave pythae out")
    args = parser.parse_args()
    if args.before and args.after:
        ab(args.before, args.after, args.repeats, args.settings, args.seeds, not args.no_pythae)
        return
    if args.calibrate:
        calibrate(args.round)
        return
    if args.nll_run:
        lines = ["| run | training minutes to the target (evaluation excluded) | epoch | NLL there (k = 1000, "
                 "first 1,000 test images) | |", "|---|---|---|---|---|", *nll_time(args.nll_run, args.nll_target)]
        body = [f"Command: `.venv/bin/python bench/time_to_quality.py --nll-run {args.nll_run} --nll-target "
                f"{args.nll_target:g}` ({time.strftime('%Y-%m-%d')}).", "", *lines]
        update_section(f"time-to-nll-{args.nll_run.name}", "\n".join(body))
        print("\n".join(body))
        return
    if args.pythae_burda:
        pythae_burda(args.pythae_burda, args.nll_target)
        return
    python = ensure_pythae()
    best_extra, best_epochs = CANDIDATES[BEST]
    trainers = {
        "vaekit default": lambda: vaekit_curve(*CANDIDATES["default"]),
        f"vaekit best ({BEST})": lambda: vaekit_curve(best_extra, best_epochs),
        f"vaekit best eager ({BEST_EAGER})": lambda: vaekit_curve(*CANDIDATES[BEST_EAGER]),
        "pythae (lr 1e-3, batch 128)": lambda: pythae_curve(python, data, 12, 1e-3, 128),
        "pythae defaults (lr 1e-4, batch 64)": lambda: pythae_curve(python, data, args.pythae_default_epochs,
                                                                    1e-4, 64),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in trainers}
    with tempfile.TemporaryDirectory() as tmp:
        data = mnist_npz(Path(tmp))
        for r in range(args.repeats):
            for name, run in trainers.items():
                if name.startswith("pythae defaults") and r > 0:
                    continue  # minutes per run, and far behind: once is enough to place it
                results[name].append(describe(run()))
            print(f"repeat {r + 1}:", {k: v[-1]["seconds"] for k, v in results.items()}, flush=True)
    report(results, args, matmul_gflops())


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, gflops: dict[str, float]) -> None:
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    ref = med["pythae (lr 1e-3, batch 128)"]
    lines = ["| trainer | seconds to 105.5 (median) | spread | epoch reached | best -ELBO | runs | "
             "pythae (lr 1e-3) / this |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        secs = [r["seconds"] for r in runs]
        epochs = statistics.median(r["epoch"] for r in runs)
        best = statistics.median(r["best"] for r in runs)
        ratio = f"{ref / med[name]:.2f}x" if med[name] < float("inf") else "not reached"
        lines.append(f"| {name} | {med[name]:.1f} | {min(secs):.1f}-{max(secs):.1f} | {epochs:g} | {best:.2f} | "
                     f"{len(runs)} | {ratio} |")
    extra, _ = CANDIDATES[BEST]
    body = [f"Command: `.venv/bin/python bench/time_to_quality.py --repeats {args.repeats}` "
            f"({time.strftime('%Y-%m-%d')}). 784-400-20, Bernoulli, MNIST grey levels; test -ELBO after every epoch; "
            "seconds of training only (evaluation excluded for both, compilation included; the compile cache held "
            "the graph from the calibration, as on a user's second run). vaekit best = "
            f"`{' '.join('--set ' + e for e in extra) or '(defaults)'}` over {CANDIDATES[BEST][1]} epochs; "
            "best eager = "
            f"`{' '.join('--set ' + e for e in CANDIDATES[BEST_EAGER][0])}` over {CANDIDATES[BEST_EAGER][1]} epochs. "
            "Unreached = inf.", "", *lines, "", ceilings_line(gflops)]
    update_section("time-to-quality", "\n".join(body))
    print("\n".join(body))


if __name__ == "__main__":
    main()

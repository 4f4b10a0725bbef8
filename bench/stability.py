"""Stability sweep: vaekit's defaults against a plain loop (Adam, no clipping, no schedule, no guard) and pythae.

Round 2 (the default; `--nets`): the `mlp`, `conv`, `hvae` and `lvae` presets, each as shipped apart from
the swept values, on MNIST grey levels: likelihood {Bernoulli, learned-scale Gaussian with a global scale,
with a per-pixel scale} x precision {fp32, bf16} x learning rate {1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1} x
seeds. The plain loop trains the same `VAE` module with the textbook -ELBO and Adam at the same learning
rate and precision; pythae's trainer runs the cells it can (the `mlp` network, Bernoulli, fp32: its VAE
has no learned-scale Gaussian and no bf16), one epoch (469 steps of batch 128). Per cell: runs diverged
(final test -ELBO non-finite, or worse than the best run of that network and likelihood by more than
|best|), runs aborted (vaekit's guard stopped them with its one-line diagnosis), the median final test
-ELBO of the finite runs, active units per group, skipped updates and rollbacks. Short runs, the same
number of steps for every arm: divergence shows in the first hundreds of steps; the step counts are
sized so that one network's sweep fits a session (`STEPS`), and vaekit's KL warm-up is scaled to half of
the run and its EMA left off (`short_run`). Each network writes its own section.

    .venv/bin/python bench/stability.py --nets mlp hvae --seeds 3      # ~80 min on 2 cores (mlp 36, hvae 46)
    .venv/bin/python bench/stability.py --nets conv --seeds 3 --precisions fp32   # ~20 min (bf16: ~3 h
    .venv/bin/python bench/stability.py --nets lvae --seeds 3 --precisions fp32   # on an AVX2-only CPU)
    .venv/bin/python bench/stability.py --nets mlp --seeds 1 --lrs 0.001 --steps 20   # a quick look

Round 1 (`--round 1`): the turn-1 table (the `mlp` network, Bernoulli and a global Gaussian, lr up to 3e-2).
Run alone on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

import vaekit
from results import update_section
from vaekit.apps.report import read_metrics
from vaekit.data.datasets import load_dataset
from vaekit.models.vae import VAE

BENCH = Path(__file__).resolve().parent

LRS = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2]
LIKELIHOODS = ["bernoulli", "gaussian"]
# round 2
STEPS = {"mlp": 500, "conv": 200, "hvae": 400, "lvae": 100}  # per run; lvae trains ~1,100 examples/s here
LRS_2 = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
LIKELIHOODS_2 = {
    "Bernoulli": ["model.likelihood=bernoulli"],
    "Gaussian, global scale": ["model.likelihood=gaussian", "model.gaussian_scale=global"],
    "Gaussian, per-pixel scale": ["model.likelihood=gaussian", "model.gaussian_scale=pixel"],
}
PRECISIONS = ["fp32", "bf16"]


def short_run(steps: int) -> list[str]:
    """The presets' schedules scaled to a short run: KL warm-up over half of it (hvae and lvae warm up over
    10,000-30,000 steps), and no EMA (lvae's 0.999 would leave 90% of the initial weights after 100 steps)."""
    return [f"objective.kl_warmup_steps={max(1, steps // 2)}", "guard.ema_decay=0"]
Run = dict  # one run's outcome: neg_elbo, active (per group), skipped, rollbacks, aborted


def plain_run(cfg: vaekit.Config, train_set: vaekit.Dataset, test_set: vaekit.Dataset) -> vaekit.EvalResult:
    """The textbook loop: Adam on the -ELBO, nothing else."""
    torch.manual_seed(cfg.train.seed)
    model = VAE(replace(cfg.model, input_shape=list(train_set.shape)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    step = 0
    while step < (cfg.train.steps or 0):
        for x in train_set.batches(cfg.train.batch_size, shuffle=True, generator=gen):
            model.elbo(x).neg_elbo.mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step == cfg.train.steps:
                break
    return vaekit.evaluate(model, test_set)


def vaekit_run(cfg: vaekit.Config) -> tuple[vaekit.EvalResult, int, int]:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        except vaekit.VaekitError as exc:  # TrainingDiverged counts as diverged
            print(f"    vaekit stopped: {exc}")
            nan = float("nan")
            return vaekit.EvalResult("test", 0, nan, nan, nan, nan, nan, 0, nan, []), -1, -1
        skipped, rollbacks = _counts(Path(f"{tmp}/run"))
    assert result.test is not None
    return result.test, skipped, rollbacks


def plain_loop(cfg: vaekit.Config, train_set: vaekit.Dataset, test_set: vaekit.Dataset) -> Run:
    """The textbook loop over the preset's model, at its precision: Adam on the -ELBO, nothing else."""
    torch.manual_seed(cfg.train.seed)
    model = VAE(replace(cfg.model, input_shape=list(train_set.shape)))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    step, steps = 0, cfg.train.steps or 0
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    try:
        while step < steps:
            for x in train_set.batches(cfg.train.batch_size, shuffle=True, generator=gen):
                with cast:
                    loss = model.elbo(x).neg_elbo.mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                if step == steps:
                    break
        result = vaekit.evaluate(model, test_set)
    except (ValueError, RuntimeError) as exc:  # a distribution refusing NaN parameters: diverged
        print(f"    plain loop failed: {type(exc).__name__}: {str(exc)[:100]}")
        return {"neg_elbo": math.nan, "active": [], "skipped": 0, "rollbacks": 0, "aborted": False}
    return {"neg_elbo": result.neg_elbo, "active": result.active_per_group, "skipped": 0, "rollbacks": 0,
            "aborted": False}


def vaekit_defaults(cfg: vaekit.Config) -> Run:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = vaekit.train(cfg, f"{tmp}/run", quiet=True)
        except vaekit.VaekitError as exc:  # TrainingDiverged: the guard stopped it with its diagnosis
            print(f"    vaekit stopped: {str(exc)[:160]}")
            skipped, rollbacks = _counts(Path(f"{tmp}/run"))
            return {"neg_elbo": math.nan, "active": [], "skipped": skipped, "rollbacks": rollbacks, "aborted": True}
        skipped, rollbacks = _counts(Path(f"{tmp}/run"))
    assert result.test is not None
    return {"neg_elbo": result.test.neg_elbo, "active": result.test.active_per_group, "skipped": skipped,
            "rollbacks": rollbacks, "aborted": False}


def _counts(run: Path) -> tuple[int, int]:
    """(skipped updates, rollbacks) from a run's metrics.jsonl: the last row's count, the rollback rows."""
    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    skipped = [r["skipped"] for r in rows if "skipped" in r]
    return (skipped[-1] if skipped else 0), sum(r["kind"] == "rollback" for r in rows)


def pythae_cell(python: Path, data: Path, lr: float, seed: int) -> Run:
    out = subprocess.run([str(python), str(BENCH / "pythae_run.py"), str(data), "1", "--lr", str(lr), "--seed",
                          str(seed)], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"    pythae failed: {out.stderr.strip().splitlines()[-1][:160] if out.stderr.strip() else '?'}")
        return {"neg_elbo": math.nan, "active": [], "skipped": 0, "rollbacks": 0, "aborted": False}
    return {"neg_elbo": json.loads(out.stdout.strip().splitlines()[-1])["neg_elbo"], "active": [], "skipped": 0,
            "rollbacks": 0, "aborted": False}


def round_2(args: argparse.Namespace) -> None:
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    lrs = args.lrs or LRS_2
    python = data = None
    if "mlp" in args.nets and not args.no_pythae:
        from throughput import ensure_pythae, mnist_npz

        python = ensure_pythae()
        data = mnist_npz(Path(tempfile.mkdtemp()))
    for net in args.nets:
        steps = args.steps or STEPS[net]
        results: dict[tuple[str, str, float, str], list[Run]] = {}
        t0 = time.perf_counter()
        for likelihood, lik_set in LIKELIHOODS_2.items():
            for precision in args.precisions:
                for lr in lrs:
                    for seed in range(args.seeds):
                        cfg = vaekit.load_config(net, ["data.name=mnist", *lik_set, f"train.precision={precision}",
                                                       f"optim.lr={lr}", f"train.steps={steps}", f"train.seed={seed}",
                                                       f"train.log_every={steps}", "train.tensorboard=false",
                                                       "train.compile=false", "train.samples=4", *short_run(steps)])
                        cell = (likelihood, precision, lr)
                        results.setdefault((*cell, "plain"), []).append(plain_loop(cfg, train_set, test_set))
                        results.setdefault((*cell, "vaekit"), []).append(vaekit_defaults(cfg))
                        if python is not None and net == "mlp" and likelihood == "Bernoulli" and precision == "fp32":
                            assert data is not None
                            results.setdefault((*cell, "pythae"), []).append(pythae_cell(python, data, lr, seed))
                        got = {arm: runs[-1]["neg_elbo"] for (*c, arm), runs in results.items() if tuple(c) == cell}
                        print(f"{net} {likelihood}, {precision}, lr {lr:g}, seed {seed}: "
                              + ", ".join(f"{a} {v:.1f}" for a, v in got.items())
                              + f" [{time.perf_counter() - t0:.0f} s]", flush=True)
        report_2(net, steps, results, args, time.perf_counter() - t0, lrs)


def report_2(net: str, steps: int, results: dict[tuple[str, str, float, str], list[Run]], args: argparse.Namespace,
             seconds: float, lrs: list[float]) -> None:
    (BENCH / "out").mkdir(exist_ok=True)  # every run, so a later rule can be counted without rerunning
    (BENCH / "out" / f"stability-{net}.json").write_text(json.dumps(
        [{"likelihood": k[0], "precision": k[1], "lr": k[2], "arm": k[3], "runs": v} for k, v in results.items()]))
    cmd = f"--nets {net} --seeds {args.seeds}" + (f" --steps {args.steps}" if args.steps else "")
    cmd += (" --lrs " + " ".join(f"{lr:g}" for lr in args.lrs)) if args.lrs else ""
    cmd += (" --precisions " + " ".join(args.precisions)) if args.precisions != PRECISIONS else ""
    lines = [f"Command: `.venv/bin/python bench/stability.py {cmd}` ({seconds / 60:.1f} min, "
             f"{time.strftime('%Y-%m-%d')}). The `{net}` preset on MNIST grey levels, {steps} steps per run, "
             "test -ELBO in nats (median of the finite runs); diverged = non-finite or worse than this network's "
             "best run of that likelihood by more than |best|; aborted = stopped by vaekit's guard.", "",
             "| likelihood | precision | lr | plain: diverged | plain: -ELBO | vaekit: diverged / aborted "
             "| vaekit: -ELBO | vaekit: active per group | vaekit: skipped / rollbacks | pythae: diverged "
             "| pythae: -ELBO |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    counts: dict[str, list[int]] = {"plain": [0, 0, 0], "vaekit": [0, 0, 0], "pythae": [0, 0, 0]}  # div, abort, n
    hard = {"vaekit": [0, 0, 0]}  # at lr 1e-1
    per_cell = 0  # vaekit runs at lr <= 3e-2 diverged under the wording: against the cell's own best run
    for likelihood in LIKELIHOODS_2:
        finite = [r["neg_elbo"] for (lik, *_), runs in results.items() if lik == likelihood for r in runs
                  if math.isfinite(r["neg_elbo"])]
        best = min(finite) if finite else math.inf
        for precision in args.precisions:
            for lr in lrs:
                cells = []
                here = [r["neg_elbo"] for arm in ("plain", "vaekit", "pythae")
                        for r in results.get((likelihood, precision, lr, arm), []) if math.isfinite(r["neg_elbo"])]
                cell_best = min(here) if here else math.inf
                if lr < 0.1:
                    per_cell += sum(_diverged(r["neg_elbo"], cell_best) and not r["aborted"]
                                    for r in results.get((likelihood, precision, lr, "vaekit"), []))
                for arm in ("plain", "vaekit", "pythae"):
                    runs = results.get((likelihood, precision, lr, arm), [])
                    if not runs:
                        cells += ["", ""] if arm != "vaekit" else ["", "", "", ""]
                        continue
                    div = sum(_diverged(r["neg_elbo"], best) and not r["aborted"] for r in runs)
                    aborted = sum(r["aborted"] for r in runs)
                    tally = hard["vaekit"] if arm == "vaekit" and lr >= 0.1 else counts[arm]
                    tally[0], tally[1], tally[2] = tally[0] + div, tally[1] + aborted, tally[2] + len(runs)
                    ok = [r["neg_elbo"] for r in runs if math.isfinite(r["neg_elbo"])]
                    med = f"{statistics.median(ok):.1f}" if ok else "nan"
                    if arm == "vaekit":
                        active = [r["active"] for r in runs if r["active"]]
                        per_group = ", ".join(f"{statistics.median(a[i] for a in active):.0f}"
                                              for i in range(len(active[0]))) if active else ""
                        cells += [f"{div} / {aborted} of {len(runs)}", med, per_group,
                                  f"{sum(r['skipped'] for r in runs)} / {sum(r['rollbacks'] for r in runs)}"]
                    else:
                        cells += [f"{div} of {len(runs)}", med]
                lines.append(f"| {likelihood} | {precision} | {lr:g} | " + " | ".join(cells) + " |")
    v, h = counts["vaekit"], hard["vaekit"]
    lines += ["", f"vaekit's defaults at lr <= 3e-2: {v[0]} diverged and {v[1]} aborted of {v[2]} runs ({per_cell} "
              "diverged against the best run of their own cell, the issue's wording); at lr 1e-1: "
              f"{h[0]} diverged, {h[1]} stopped by the guard with its diagnosis, {h[2] - h[0] - h[1]} trained, of "
              f"{h[2]}. Plain loop, all rates: {counts['plain'][0]} diverged of {counts['plain'][2]}"
              + (f"; pythae: {counts['pythae'][0]} diverged of {counts['pythae'][2]}." if counts["pythae"][2] else ".")]
    update_section(f"stability-{net}", "\n".join(lines))
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round", type=int, default=2, choices=[1, 2])
    parser.add_argument("--nets", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--steps", type=int, help="steps per run (round 1: default 600; round 2: STEPS per network)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", type=float, nargs="+", help="round 2: these learning rates instead of all six")
    parser.add_argument("--no-pythae", action="store_true", help="round 2: leave pythae's cells out")
    parser.add_argument("--precisions", nargs="+", default=PRECISIONS, choices=PRECISIONS,
                        help="round 2: these precisions only (bf16 is emulated on a CPU without AVX-512: "
                             "a conv run takes ~10x as long as in fp32)")
    args = parser.parse_args()
    if args.round == 2:
        round_2(args)
        return
    args.steps = args.steps or 600
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    results: dict[tuple[str, float, str], list[tuple[float, int, int, int]]] = {}
    t0 = time.perf_counter()
    for likelihood in LIKELIHOODS:
        for lr in LRS:
            for seed in range(args.seeds):
                cfg = vaekit.load_config("mlp", [f"model.likelihood={likelihood}", f"optim.lr={lr}",
                                                 f"train.steps={args.steps}", f"train.seed={seed}",
                                                 f"train.log_every={args.steps}"])
                plain = plain_run(cfg, train_set, test_set)
                ours, skipped, rollbacks = vaekit_run(cfg)
                results.setdefault((likelihood, lr, "plain"), []).append((plain.neg_elbo, plain.active_units, 0, 0))
                results.setdefault((likelihood, lr, "vaekit"), []).append((ours.neg_elbo, ours.active_units,
                                                                           skipped, rollbacks))
                print(f"{likelihood:9s} lr={lr:<6g} seed={seed} plain {plain.neg_elbo:10.2f}  "
                      f"vaekit {ours.neg_elbo:10.2f} (skipped {skipped}, rollbacks {rollbacks})  "
                      f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    report(results, args, time.perf_counter() - t0)


def _diverged(value: float, best: float) -> bool:
    return not math.isfinite(value) or value > best + abs(best)


def report(results: dict[tuple[str, float, str], list[tuple[float, int, int, int]]], args: argparse.Namespace,
           seconds: float) -> None:
    lines = [f"Command: `.venv/bin/python bench/stability.py --round 1 --steps {args.steps} --seeds {args.seeds}` "
             f"({seconds / 60:.1f} min, {time.strftime('%Y-%m-%d')}). The `mlp` network, batch 128, "
             f"{args.steps} steps per run; test -ELBO in nats (median over seeds of the finite runs).", "",
             "| likelihood | lr | plain: diverged | plain: -ELBO | plain: active | vaekit: diverged | vaekit: -ELBO "
             "| vaekit: active | vaekit: skipped / rollbacks |", "|---|---|---|---|---|---|---|---|---|"]
    totals = {"plain": [0, 0], "vaekit": [0, 0]}
    for likelihood in LIKELIHOODS:
        finite = [v[0] for (lik, _, _), runs in results.items() if lik == likelihood for v in runs
                  if math.isfinite(v[0])]
        best = min(finite) if finite else math.inf
        for lr in LRS:
            cells = []
            for arm in ("plain", "vaekit"):
                runs = results[(likelihood, lr, arm)]
                div = sum(_diverged(r[0], best) for r in runs)
                nonfinite = sum(not math.isfinite(r[0]) for r in runs)
                totals[arm][0] += div
                totals[arm][1] += len(runs)
                ok = [r[0] for r in runs if math.isfinite(r[0])]
                med = f"{statistics.median(ok):.1f}" if ok else "nan"
                active = statistics.median(r[1] for r in runs)
                cells += [f"{div}/{len(runs)} ({nonfinite} non-finite)", med, f"{active:.0f}"]
            extra = results[(likelihood, lr, "vaekit")]
            cells.append(f"{sum(r[2] for r in extra)} / {sum(r[3] for r in extra)}")
            lines.append(f"| {likelihood} | {lr:g} | " + " | ".join(cells) + " |")
    lines += ["", f"Diverged runs: plain loop {totals['plain'][0]}/{totals['plain'][1]}, "
              f"vaekit {totals['vaekit'][0]}/{totals['vaekit'][1]}."]
    update_section("stability", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

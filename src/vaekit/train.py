"""The training loop: draw batches by index, call `train_step`, log, evaluate, checkpoint, resume.

Everything a resumed run needs is in `TrainState` plus the data order, which is a pure function
of (seed, epoch), so a run resumed from step t continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaekit.checkpoint import atomic_write_bytes, list_checkpoints, load_latest_checkpoint, load_state, save_checkpoint
from vaekit.config import Config
from vaekit.data import BUILTIN, Dataset, load_dataset
from vaekit.errors import VaekitError
from vaekit.evaluate import EvalResult, evaluate
from vaekit.guards import EMA, StepReport, guarded_update
from vaekit.model import VAE
from vaekit.objectives import elbo_terms, iw_bound, log_weights
from vaekit.schedules import kl_weight, lr_factor


@dataclass
class TrainState:
    model: VAE
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    step: int = 0
    skipped: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))

    def state_dict(self, epoch: float = 0.0) -> dict[str, Any]:
        """Everything a resumed run needs; `epoch` (fractional) is informational, the step decides."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.shadow if self.ema else None,
            "step": self.step,
            "epoch": epoch,
            "skipped": self.skipped,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        load_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = state["ema"]
        self.step, self.skipped = int(state["step"]), state["skipped"]
        torch.set_rng_state(state["rng"])

    def eval_model(self) -> VAE:
        """The model with EMA weights when an EMA is kept, else the live model."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)  # not VAE(cfg): a fresh init would draw from the global RNG
        averaged.load_state_dict(self.ema.state_dict(self.model))
        return averaged


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model: VAE
    test: EvalResult | None
    steps: int
    seconds: float
    examples_per_s: float


def train_step(state: TrainState, x: Tensor, cfg: Config, total_steps: int) -> tuple[StepReport, Tensor]:
    """One guarded update on batch x (B, C, H, W); returns the report and -ELBO (B,) nats."""
    beta = kl_weight(state.step, cfg.objective, total_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.optim.lr * lr_factor(state.step, cfg.optim, total_steps)
    with _autocast(cfg.train.precision):
        out = state.model(x, n_samples=cfg.objective.iw_samples)
    terms = elbo_terms(out, x, state.model.prior)
    if cfg.objective.iw_samples > 1:  # Burda et al. 2016: maximize the k-sample bound
        loss = -iw_bound(log_weights(out, x, state.model.prior)).mean()
    else:
        loss = terms.neg_elbo(beta, cfg.objective.free_bits)
    loss.backward()
    report = guarded_update(state.optimizer, state.model.parameters(), loss, cfg.guard)
    if state.ema is not None:
        state.ema.update(state.model, report.skipped)
    state.skipped += report.skipped
    state.step += 1
    return report, terms.neg_elbo_per_example.detach()


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_state(cfg: Config) -> TrainState:
    model = VAE(cfg.model)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),  # type: ignore[arg-type]
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        fused=True,
    )
    ema = EMA(model, cfg.guard.ema_decay) if cfg.guard.ema_decay > 0 else None
    return TrainState(model=model, optimizer=optimizer, ema=ema)


def load_splits(cfg: Config) -> tuple[Dataset, Dataset | None, Dataset | None]:
    """(train, val or None, test or None) as the config's data section asks."""
    d = cfg.data
    train_set = load_dataset(d.name, "train", d.data_dir, d.val_size, d.val_seed)
    val_set = load_dataset(d.name, "val", d.data_dir, d.val_size, d.val_seed) if d.val_size else None
    base = d.name.removeprefix("binarized-")
    test_set = load_dataset(d.name, "test", d.data_dir) if base in BUILTIN else None
    return train_set, val_set, test_set


def train(cfg: Config, run_dir: str | Path, resume: bool = False, quiet: bool = False) -> TrainResult:
    """Train a VAE as `cfg` says, writing the run directory of DESIGN.md; returns the test score."""
    run_dir = Path(run_dir)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_set, val_set, test_set = load_splits(cfg)
    cfg = replace(cfg, model=replace(cfg.model, input_shape=list(train_set.shape)))
    torch.manual_seed(cfg.train.seed)
    state = build_state(cfg)
    if (run_dir / "checkpoints").is_dir() and list_checkpoints(run_dir / "checkpoints") and not resume:
        raise VaekitError(
            f"run directory {str(run_dir)!r} already holds checkpoints; pass --resume or choose a new --run-dir"
        )
    if resume:
        _resume(state, cfg, run_dir)
    atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())
    log = MetricsLog(run_dir / "metrics.jsonl", keep_until=state.step)

    steps_per_epoch = math.ceil(len(train_set) / cfg.train.batch_size)
    total = cfg.train.steps or cfg.train.epochs * steps_per_epoch
    bar = tqdm(
        total=total, initial=state.step, disable=quiet or not sys.stderr.isatty(), unit="step", dynamic_ncols=True
    )
    start_step = state.step
    t0 = t_train = time.perf_counter()
    running = torch.zeros(()), 0
    while state.step < total:
        epoch, first = divmod(state.step, steps_per_epoch)
        order = torch.randperm(
            len(train_set), generator=torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch)
        )
        for b in range(first, steps_per_epoch):
            x = train_set.batch(order[b * cfg.train.batch_size : (b + 1) * cfg.train.batch_size])
            report, neg_elbo = train_step(state, x, cfg, total)
            running = running[0] + neg_elbo.sum(), running[1] + neg_elbo.shape[0]
            bar.update(1)
            if state.step % cfg.train.log_every == 0 or state.step == total:
                row = _train_row(state, cfg, epoch, report, running, total, start_step, t_train)
                log.write(row)
                bar.set_postfix(neg_elbo=f"{row['neg_elbo']:.2f}", skipped=row["skipped"])
                running = torch.zeros(()), 0
            if cfg.train.checkpoint_every and state.step % cfg.train.checkpoint_every == 0:
                save_checkpoint(
                    run_dir / "checkpoints",
                    state.step,
                    state.state_dict(state.step / steps_per_epoch),
                    cfg.train.keep_checkpoints,
                )
            if state.step >= total:
                break
        paused = time.perf_counter()
        test = _evaluate_epoch(state, cfg, epoch, log, val_set, test_set)
        save_checkpoint(
            run_dir / "checkpoints",
            state.step,
            state.state_dict(state.step / steps_per_epoch),
            cfg.train.keep_checkpoints,
        )
        t_train += time.perf_counter() - paused  # logged throughput counts training steps only
        if test is not None and not quiet:
            bar.write(
                f"epoch {epoch + 1}: test -ELBO {test.neg_elbo:.2f} nats ({test.bits_per_dim:.4f} bits/dim)",
                file=sys.stderr,
            )
    bar.close()
    seconds = time.perf_counter() - t0
    model = state.eval_model()
    final = evaluate(model, test_set, cfg.train.eval_batch_size) if test_set is not None else None
    _export(model, cfg, run_dir, test_set or val_set or train_set)
    examples = (state.step - start_step) * cfg.train.batch_size
    return TrainResult(run_dir, model, final, state.step, seconds, examples / max(seconds, 1e-9))


def _resume(state: TrainState, cfg: Config, run_dir: Path) -> None:
    saved = load_latest_checkpoint(run_dir / "checkpoints")
    if saved is None:
        raise VaekitError(f"nothing to resume in {str(run_dir)!r}: no readable checkpoint in checkpoints/")
    state.load_state_dict(saved, str(run_dir))


def _train_row(
    state: TrainState,
    cfg: Config,
    epoch: int,
    report: StepReport,
    running: tuple[Tensor, int],
    total: int,
    start_step: int,
    t0: float,
) -> dict[str, Any]:
    # The only host sync in the loop: once per `log_every` steps.
    elapsed = time.perf_counter() - t0
    return {
        "kind": "train",
        "step": state.step,
        "epoch": epoch,
        "neg_elbo": running[0].item() / max(running[1], 1),
        "grad_norm": report.grad_norm.item(),
        "skipped": int(state.skipped.item()),
        "beta": kl_weight(state.step - 1, cfg.objective, total),
        "lr": state.optimizer.param_groups[0]["lr"],
        "examples_per_s": (state.step - start_step) * cfg.train.batch_size / max(elapsed, 1e-9),
    }


def _evaluate_epoch(
    state: TrainState, cfg: Config, epoch: int, log: MetricsLog, val_set: Dataset | None, test_set: Dataset | None
) -> EvalResult | None:
    model = state.eval_model()
    test = None
    for data in (val_set, test_set):
        if data is None:
            continue
        result = evaluate(model, data, cfg.train.eval_batch_size)
        log.write(
            {
                "kind": "eval",
                "step": state.step,
                "epoch": epoch + 1,
                "skipped": int(state.skipped.item()),
                **result.to_dict(),
            }
        )
        test = result if data is test_set else test
    return test


def _export(model: VAE, cfg: Config, run_dir: Path, data: Dataset) -> None:
    from vaekit.images import save_grid, side_by_side

    model.save_pretrained(str(run_dir / "model"))
    gen = torch.Generator().manual_seed(cfg.train.seed)
    save_grid(model.sample(cfg.train.samples, generator=gen), run_dir / "samples" / "samples.png")
    n = min(32, len(data))
    per_row = min(8, n)
    x = data.batch(torch.arange(n - n % per_row))
    save_grid(side_by_side(x, model.reconstruct(x), per_row), run_dir / "samples" / "reconstructions.png", nrow=per_row)


class MetricsLog:
    """Append-only JSON lines; on resume, rows past the resumed step are dropped first."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        kept = []
        if keep_until > 0 and path.is_file():
            for line in path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("step", 0) <= keep_until:
                        kept.append(line)
        atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

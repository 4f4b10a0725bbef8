"""The training loop: draw batches by index, call `train_step`, log, evaluate, checkpoint, resume.

Everything a resumed run needs is in `TrainState` plus the data order, which is a pure function
of (seed, epoch), so a run resumed from step t continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaekit.apps.report import write_report
from vaekit.checkpoint import list_checkpoints, load_latest_checkpoint, save_checkpoint
from vaekit.config import Config
from vaekit.data.datasets import Dataset
from vaekit.data.feed import Feed
from vaekit.data.imbalance import epoch_order, loss_weights
from vaekit.errors import Preempted, VaekitError
from vaekit.evaluation.diagnostics import codebook_warnings, collapse_warnings, group_collapse_warnings
from vaekit.evaluation.evaluate import EvalResult, evaluate
from vaekit.models.base import BaseVAE
from vaekit.objectives import build_objective
from vaekit.storage import atomic_write_bytes
from vaekit.training.distributed import Topology, setup, teardown
from vaekit.training.guards import StepReport
from vaekit.training.preempt import StopCheck, StopSignals
from vaekit.training.rollback import roll_back, watch_loss
from vaekit.training.rundir import MetricsLog, data_row, export, train_row
from vaekit.training.schedules import warmup_warning
from vaekit.training.splits import load_splits, num_classes
from vaekit.training.step import TrainState, build_state, train_step
from vaekit.training.tracking import Clock, Tracker
from vaekit.training.watches import DiscriminatorWatch, TermMeans


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    model: BaseVAE
    test: EvalResult | None
    steps: int
    seconds: float
    examples_per_s: float


@dataclass
class _Run:
    """What the loop carries besides the state: the config, the data, the outputs."""

    cfg: Config
    run_dir: Path
    state: TrainState
    train_set: Dataset
    val_set: Dataset | None
    test_set: Dataset | None
    log: MetricsLog
    steps_per_epoch: int
    total: int
    quiet: bool
    topology: Topology = field(default_factory=lambda: Topology(0, 1, torch.device("cpu")))
    warned: bool = False
    stop: StopCheck | None = None
    feed: Feed | None = None  # the training batches, on the training device (train.data_placement)
    train_seconds: float = 0.0  # in training steps so far in this process, evaluation excluded (eval rows log it)
    duel: DiscriminatorWatch | None = None  # an adversarial run's discriminator, judged over windows
    class_weights: Tensor | None = None  # (C,) on the device: data.class_weights, the loss weight of each class
    last_eval: tuple[int, EvalResult] | None = None  # (step, score) of held_out at the newest epoch end: _finish's

    @property
    def held_out(self) -> Dataset | None:  # the final score's set: the test split, or user data's validation split
        return self.test_set if self.test_set is not None else self.val_set

    def checkpoint(self) -> None:
        if self.stop is not None:
            self.stop.checkpointed()
        if self.topology.is_main:
            state = self.state.state_dict(self.state.step / self.steps_per_epoch)
            save_checkpoint(self.run_dir / "checkpoints", self.state.step, state, self.cfg.train.keep_checkpoints)
        self.topology.barrier()  # a rollback on any rank must find this checkpoint written

    def epoch_order(self, epoch: int) -> Tensor:
        """The data order of `epoch`: a pure function of (seed, epoch), so resume needs no RNG for it."""
        gen = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
        return epoch_order(self.train_set.labels, len(self.train_set), self.cfg.data.sampler, gen)


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool = False,
    quiet: bool = False,
    encoder: torch.nn.Module | None = None,
    decoder: torch.nn.Module | None = None,
) -> TrainResult:
    """Train a VAE as `cfg` says, writing its run directory (config, metrics, checkpoints, model, samples, report);
    returns the held-out score.

    `encoder` / `decoder`: your own networks in place of the ones `cfg.model` names (see `VAE`).
    Under torchrun every process calls this; rank 0 alone writes the run directory.
    """
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    build_objective(cfg)  # an objective that cannot train this model fails before the data loads
    splits = load_splits(cfg)
    cfg = replace(cfg, model=replace(cfg.model, input_shape=list(splits[0].shape)),
                  objective=replace(cfg.objective, dataset_size=cfg.objective.dataset_size or len(splits[0])))
    if cfg.model.conditional:
        cfg = replace(cfg, model=replace(cfg.model, num_classes=num_classes(splits[0], cfg.model.num_classes)))
    topology = setup(cfg.train.device, cfg.train.batch_size)
    try:
        return _train(cfg, Path(run_dir), resume, quiet, topology, splits, (encoder, decoder))
    finally:
        teardown(topology)


def _train(
    cfg: Config,
    run_dir: Path,
    resume: bool,
    quiet: bool,
    topology: Topology,
    splits: tuple[Dataset, Dataset | None, Dataset | None],
    nets: tuple[torch.nn.Module | None, torch.nn.Module | None],
) -> TrainResult:
    train_set, val_set, test_set = splits
    # Several processes drop the last, partial batch: every rank needs an equal slice.
    per_epoch = len(train_set) // cfg.train.batch_size if topology.world > 1 else None
    steps_per_epoch = per_epoch or math.ceil(len(train_set) / cfg.train.batch_size)
    total = cfg.train.steps or cfg.train.epochs * steps_per_epoch
    if (short := warmup_warning(cfg.objective, total)) and topology.is_main:
        warnings.warn(short, stacklevel=3)
    torch.manual_seed(cfg.train.seed)
    state = build_state(cfg, topology, nets, total)
    weights = loss_weights(train_set, cfg.data.class_weights, cfg.data.class_weights_beta)
    cfg = replace(cfg, model=state.model.cfg)  # own nets are recorded as model.encoder/decoder=custom
    has_checkpoints = _resume(state, run_dir, resume, topology.is_main)
    main = topology.is_main
    if main:
        atomic_write_bytes(run_dir / "config.yaml", cfg.to_yaml().encode())
    tracker = Tracker(run_dir, cfg.train.tensorboard and main)
    log = MetricsLog(run_dir / "metrics.jsonl", state.step if resume else -1, tracker, enabled=main)
    log.write(data_row(train_set, state.step, cfg.data.sampler, weights))
    run = _Run(
        cfg,
        run_dir,
        state,
        train_set,
        val_set,
        test_set,
        log,
        steps_per_epoch,
        total,
        quiet or not main,
        topology,
        feed=Feed(train_set, topology.device, cfg.train.data_placement, cfg.model.conditional or weights is not None),
        duel=DiscriminatorWatch(cfg.adversarial) if "discriminator" in state.players else None,
        class_weights=weights.to(topology.device) if weights is not None else None,
    )
    # SIGTERM / SIGINT are caught from before the first checkpoint to the end: one that arrives in the loop stops
    # it after the step in flight (Preempted); one that arrives after the last step lets the final files finish.
    with StopSignals() as signals:
        t = cfg.train
        run.stop = StopCheck(signals, topology, t.checkpoint_minutes, t.log_every, t.max_minutes)
        if not has_checkpoints:
            run.checkpoint()  # step 0: a rollback always has somewhere to go
        t0 = time.perf_counter()
        start_step, train_seconds = state.step, _loop(run)
        model = state.eval_model()
        final = _finish(run, model, tracker) if main else None
    examples = (state.step - start_step) * cfg.train.batch_size
    return TrainResult(run_dir, model, final, state.step, time.perf_counter() - t0, examples / max(train_seconds, 1e-9))


def _resume(state: TrainState, run_dir: Path, resume: bool, main: bool) -> bool:
    """Restore the newest checkpoint when resuming (refusing to overwrite one otherwise); whether any exists."""
    has_checkpoints = bool(list_checkpoints(run_dir / "checkpoints"))
    if has_checkpoints and not resume:
        raise VaekitError(f"run directory {str(run_dir)!r} already holds checkpoints; pass --resume or a new --run-dir")
    if resume and not run_dir.is_dir():
        raise VaekitError(f"nothing to resume: run directory {str(run_dir)!r} does not exist")
    if resume and has_checkpoints:
        _restore(state, run_dir)
    elif resume and main:  # killed before its first checkpoint: nothing was lost but the start
        warnings.warn(f"{str(run_dir)!r} holds no checkpoint yet: starting from step 0", stacklevel=3)
    return has_checkpoints


def _finish(run: _Run, model: BaseVAE, tracker: Tracker) -> EvalResult | None:
    """The run's last files: the held-out score, the exported model and samples, the report, TensorBoard images."""
    cfg, data = run.cfg, run.held_out
    k = 10 if cfg.model.conditional else None  # the generative classifier's accuracy, at the end only
    final = None
    if run.last_eval is not None and run.last_eval[0] == run.state.step and k is None:
        final = run.last_eval[1]  # the same model, data and seeded evaluation: the same numbers
    elif data is not None:
        final = evaluate(model, data, cfg.train.eval_batch_size, classify_k=k, per_class=data.labels is not None)
    export(model, run.run_dir, run.test_set or run.val_set or run.train_set, cfg.train.samples, cfg.train.seed)
    write_report(run.run_dir)
    samples = model.sample(16, generator=torch.Generator().manual_seed(cfg.train.seed))
    tracker.images("samples", samples, run.state.step)
    tracker.close()
    return final


def _loop(run: _Run) -> float:
    """Train to `run.total` steps; returns the seconds spent in training steps (evaluation excluded)."""
    progress = _Progress(run)
    while run.state.step < run.total:
        epoch, first = divmod(run.state.step, run.steps_per_epoch)
        if _epoch(run, progress, epoch, first):
            continue  # rolled back: restart the epoch arithmetic from the restored step
        paused = progress.clock()
        run.train_seconds = paused - progress.t_train
        _end_of_epoch(run, epoch, progress.bar)
        progress.t_train += progress.clock() - paused  # logged throughput counts training steps only
    progress.bar.close()
    return run.train_seconds  # the final evaluation is not training time either


def _epoch(run: _Run, progress: _Progress, epoch: int, first: int) -> bool:
    """Steps `first`.. of `epoch`, to the epoch's end or the run's; True when a rollback cut the epoch short."""
    state, cfg = run.state, run.cfg
    for index, x, labels in _epoch_batches(run, epoch, first):  # the global batch: under DDP a rank keeps its rows
        rows = run.topology.rows(len(index)) if run.topology.world > 1 else None
        report, score = train_step(state, x, cfg, run.total, rows, labels, run.class_weights)
        progress.add(score, report.terms)
        _watch_discriminator(run, report)
        if state.step % cfg.train.log_every == 0 or state.step == run.total:
            progress.log(epoch, report)
        if _guard(run, index, x, report):
            progress.bar.n = state.step
            return True
        _stop_or_checkpoint(run, progress)
        if state.step >= run.total:
            break
    return False


def _watch_discriminator(run: _Run, report: StepReport) -> None:
    """Warn (once per verdict) and log when the discriminator wins outright or stops learning."""
    found = run.duel.add(report.terms) if run.duel is not None else None
    if found is not None:
        run.log.write({"kind": "discriminator", "step": run.state.step, **found})
        if not run.quiet:
            warnings.warn(f"{found['message']} (step {run.state.step})", stacklevel=3)


def _guard(run: _Run, index: Tensor, x: Tensor, report: StepReport) -> bool:
    """Roll back after a streak of skipped updates or a risen training loss; True when it did."""
    state, guard = run.state, run.cfg.guard
    check_every = max(1, guard.rollback_after // 4)
    stuck = guard.rollback_after and state.step % check_every == 0 and state.longest_streak() >= guard.rollback_after
    assert report.per_example_loss is not None  # both step paths report what they minimized
    risen = watch_loss(state, guard, run.topology, report.per_example_loss)
    if not stuck and risen is None:
        return False
    roll_back(state, guard, run.run_dir, run.log, index, x, report, risen)
    return True


def _stop_or_checkpoint(run: _Run, progress: _Progress) -> None:
    """After SIGTERM / SIGINT keep the step in flight and stop (Preempted); else checkpoint when one is due."""
    step = run.state.step
    signum, due, spent = run.stop.after_step(step) if run.stop is not None else (None, False, False)
    if spent and step < run.total:  # the time budget: this step is the run's last, finished as a planned one
        run.total = step
        run.log.write({"kind": "time_budget", "step": step, "max_minutes": run.cfg.train.max_minutes})
        if not run.quiet:
            progress.bar.write(f"train.max_minutes={run.cfg.train.max_minutes:g} reached: stopping at step {step}",
                               file=sys.stderr)
    if signum is not None:
        run.checkpoint()
        run.log.write({"kind": "preempted", "step": step, "signal": signum})
        progress.bar.close()
        raise Preempted(signum, step, str(run.run_dir))
    if due or (run.cfg.train.checkpoint_every and step % run.cfg.train.checkpoint_every == 0):
        run.checkpoint()


class _Progress:
    """The loop's running score, training clock and progress bar."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.bar = tqdm(
            total=run.total,
            initial=run.state.step,
            disable=run.quiet or not sys.stderr.isatty(),
            unit="step",
            dynamic_ncols=True,
        )
        self.clock = Clock(run.topology.device)
        self.t_train, self.start_step = self.clock(), run.state.step
        self.total, self.count = torch.zeros(()), 0  # the objective's score since the last log row
        self.terms = TermMeans()  # the objective's logged terms since the last log row

    def add(self, score: Tensor, terms: dict[str, Tensor]) -> None:
        self.total, self.count = self.total + score.sum(), self.count + score.shape[0]
        self.terms.add(terms)
        self.bar.update(1)

    def log(self, epoch: int, report: StepReport) -> None:
        run = self.run
        row = train_row(run.state, run.cfg, epoch, report, (self.total, self.count), run.total, self.start_step,
                         self.t_train)
        run.log.write(row | self.terms.flush())
        name = run.state.objective.score_name
        self.bar.set_postfix({name: f"{row[name]:.2f}", "skipped": row["skipped"]})
        self.total, self.count = torch.zeros(()), 0


def _epoch_batches(run: _Run, epoch: int, first: int) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """(index, batch, labels) from step `first` of `epoch` on, in the epoch's fixed order, on the device."""
    assert run.feed is not None
    return run.feed.epoch(run.epoch_order(epoch), run.cfg.train.batch_size, first, run.steps_per_epoch)


def _end_of_epoch(run: _Run, epoch: int, bar: tqdm[Any]) -> None:
    test = _evaluate_epoch(run, epoch)
    run.checkpoint()
    if test is not None and not run.quiet:
        bar.write(
            f"epoch {epoch + 1}: test -ELBO {test.neg_elbo:.2f} nats ({test.bits_per_dim:.4f} bits/dim)",
            file=sys.stderr,
        )


def _restore(state: TrainState, run_dir: Path) -> None:
    saved = load_latest_checkpoint(run_dir / "checkpoints")
    if saved is None:
        raise VaekitError(f"nothing to resume in {str(run_dir)!r}: no readable checkpoint in checkpoints/")
    state.load_state_dict(saved, str(run_dir))


def _evaluate_epoch(run: _Run, epoch: int) -> EvalResult | None:
    if not run.topology.is_main:
        return None  # rank 0 evaluates and logs; the others wait at the next checkpoint's barrier
    model = run.state.eval_model()
    test = None
    for data in (run.val_set, run.test_set):
        if data is None:
            continue
        result = evaluate(model, data, run.cfg.train.eval_batch_size, per_class=data.labels is not None)
        found = (
            codebook_warnings(result.code_usage, result.code_perplexity or 1.0, result.codebook_size or 0)
            if result.code_usage is not None else collapse_warnings(result.kl, result.active_units, model.latent_dim)
        )
        if len(result.kl_per_group) > 1:
            found += group_collapse_warnings(result.kl_per_group)
        run.log.write(
            {
                "kind": "eval",
                "step": run.state.step,
                "epoch": epoch + 1,
                "skipped": int(run.state.skipped.item()),
                "grad_norm": float(run.state.grad_norm),
                "rollbacks": run.state.rollbacks,
                "train_seconds": round(run.train_seconds, 4),
                "warnings": found,
                **result.to_dict(),
            }
        )
        if found and not run.warned:  # each diagnosis once, at the first evaluation that finds any
            run.warned = True
            for message in found:
                warnings.warn(f"{message} (at epoch {epoch + 1}; logged at every evaluation)", stacklevel=2)
        test = result if data is run.test_set else test
        if data is run.held_out:
            run.last_eval = (run.state.step, result)
    return test

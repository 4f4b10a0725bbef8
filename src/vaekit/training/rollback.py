"""Rollback: after a streak of skipped updates or a risen loss, back to the last good checkpoint with a lower
learning rate and clip norm (a rollback never replays the same updates), or stop with a diagnosis."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor

from vaekit.checkpoint import load_latest_checkpoint
from vaekit.config import GuardConfig
from vaekit.errors import TrainingDiverged
from vaekit.storage import atomic_write_bytes
from vaekit.training.distributed import Topology
from vaekit.training.guards import StepReport
from vaekit.training.rundir import MetricsLog
from vaekit.training.step import TrainState


def watch_loss(state: TrainState, guard: GuardConfig, topology: Topology, loss: Tensor) -> float | None:
    """Count this step's per-example losses (the objective at its KL weight) in the loss watch; at the end of a
    window, its mean if it rose too far."""
    if state.watch is None:
        return None
    state.watch.add(loss)
    if state.step == 1 or state.step % guard.loss_window == 0:  # step 1 sets the run's start
        return state.watch.close(topology.all_sum)
    return None


def roll_back(
    state: TrainState,
    guard: GuardConfig,
    run_dir: Path,
    log: MetricsLog,
    index: Tensor,
    x: Tensor,
    report: StepReport,
    risen: float | None = None,
) -> None:
    """After a streak of skipped updates, or a window whose loss (at the step's KL weight) rose `risen` nats above
    the run's best: back to the last good checkpoint with a lower learning rate and clip norm, or stop with a
    diagnosis."""
    streak_step, streak = state.step, state.longest_streak()
    what = _cause(state, risen)
    if state.rollbacks >= guard.max_rollbacks:
        _stop(state, run_dir, index, x, report, risen, what)
    rollbacks = state.rollbacks + 1
    # every player's remedy changes (a lower learning rate and clip norm); its skip count is history, not undone
    remedies = {
        name: (p.lr_scale * guard.rollback_lr_factor, p.clip_scale * guard.rollback_clip_factor, p.skipped.clone())
        for name, p in state.players.items()
    }
    watch = state.watch
    good = None if risen is None or watch is None else (lambda saved: watch.healthy(saved.get("loss_watch")))
    saved = load_latest_checkpoint(run_dir / "checkpoints", good)
    if saved is None:
        raise TrainingDiverged(f"training diverged at step {streak_step} and no checkpoint is readable to roll back to")
    state.load_state_dict(saved, str(run_dir))
    state.rollbacks = rollbacks
    for name, (lr_scale, clip_scale, skipped) in remedies.items():
        player = state.players[name]
        player.lr_scale, player.clip_scale = lr_scale, clip_scale
        player.skipped.copy_(skipped)  # in place: a compiled step keeps these tensors
        player.streak.zero_()
    lr_scale, clip_scale = state.players["model"].lr_scale, state.players["model"].clip_scale
    log.truncate(state.step)
    log.write(
        {
            "kind": "rollback",
            "step": state.step,
            "from_step": streak_step,
            "cause": "loss rose" if risen is not None else "skipped in a row",
            "skipped_in_a_row": streak,
            "window_loss": risen,
            "rollbacks": rollbacks,
            "lr_scale": lr_scale,
            "clip_scale": clip_scale,
        }
    )
    warnings.warn(
        f"{what} at step {streak_step}: rolled back to step {state.step} "
        f"with the learning rate x{lr_scale:g}{_clip_note(guard.clip_grad_norm, clip_scale)} "
        f"(rollback {rollbacks} of {guard.max_rollbacks})",
        stacklevel=2,
    )


def _cause(state: TrainState, risen: float | None) -> str:
    """What triggered the rollback: the risen loss, or the longest streak of skips and whose it was."""
    if risen is not None:
        assert state.watch is not None
        return f"the training loss rose to {risen:.4g} nats (the run's start or best: {state.watch.reference:.4g})"
    who, streak = max(((name, int(p.streak)) for name, p in state.players.items()), key=lambda item: item[1])
    return f"{streak} updates in a row skipped" + ("" if who == "model" else f" (the {who}'s)")


def _stop(
    state: TrainState, run_dir: Path, index: Tensor, x: Tensor, report: StepReport, risen: float | None, what: str
) -> NoReturn:
    """No rollback left: write divergence.json (the step, the cause, the batch) and stop with the diagnosis."""
    streak_step, streak = state.step, int(state.streak)
    dump = run_dir / "divergence.json"
    stats = {
        "step": streak_step,
        "cause": "loss rose" if risen is not None else "skipped in a row",
        "skipped_in_a_row": streak,
        "skipped_total": int(state.skipped),
        "rollbacks": state.rollbacks,
        "lr": state.optimizer.param_groups[0]["lr"],
        "grad_norm": float(report.grad_norm),
        "window_loss": risen,
        "batch_index": index.tolist(),
        "batch_min": float(x.min()),
        "batch_max": float(x.max()),
        "batch_mean": float(x.mean()),
        "batch_nonfinite": int((~torch.isfinite(x)).sum()),
    }
    atomic_write_bytes(dump, (json.dumps(stats, indent=1) + "\n").encode())
    hint = "optim.lr_warmup_steps" if risen is not None else "guard.clip_grad_norm"
    raise TrainingDiverged(
        f"training diverged: {what} at step {streak_step} (grad norm {float(report.grad_norm):.3g}) after "
        f"{state.rollbacks} rollbacks; lower optim.lr (now {stats['lr']:.3g}) or set {hint}, or check the data; "
        f"batch details in {dump}"
    )


def _clip_note(clip: float | None, scale: float) -> str:
    return f" and the clip norm x{scale:g} (now {clip * scale:g})" if clip is not None and scale != 1 else ""

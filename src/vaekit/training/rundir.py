"""What a run writes besides checkpoints: metrics.jsonl, the exported model, sample grids."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaekit.apps.images import save_grid, save_reconstructions
from vaekit.config import Config
from vaekit.data.datasets import Dataset
from vaekit.data.imbalance import class_counts
from vaekit.models.base import BaseVAE
from vaekit.storage import atomic_write_bytes
from vaekit.training.guards import StepReport
from vaekit.training.schedules import kl_weight
from vaekit.training.step import TrainState
from vaekit.training.tracking import Tracker


def data_row(train_set: Dataset, step: int, sampler: str, weights: torch.Tensor | None) -> dict[str, Any]:
    """The metrics row of what the run trains on: its size, class counts (long-tailed with data.imbalance), the
    sampler and the class weights (report.html's per-class section reads it)."""
    labels = train_set.labels
    counts = class_counts(labels).tolist() if labels is not None else None
    return {"kind": "data", "step": step, "n": len(train_set), "class_counts": counts, "sampler": sampler,
            "class_weights": [round(w, 6) for w in weights.tolist()] if weights is not None else None}


class MetricsLog:
    """Append-only JSON lines; on resume or rollback, rows past the restored step are dropped first."""

    def __init__(self, path: Path, keep_until: int, tracker: Tracker | None = None, enabled: bool = True) -> None:
        self.path = path
        self.tracker = tracker
        self.enabled = enabled  # only rank 0 writes under DDP
        self.truncate(keep_until)

    def truncate(self, keep_until: int) -> None:
        """Keep rows up to step `keep_until` (all rollback rows: they are history); -1 starts afresh."""
        if not self.enabled:
            return
        kept = []
        if keep_until >= 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(json.JSONDecodeError, AttributeError):
                    row = json.loads(line)
                    if row.get("step", 0) <= keep_until or row.get("kind") == "rollback":
                        kept.append(line)
        atomic_write_bytes(self.path, "".join(f"{line}\n" for line in kept).encode())

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.row(row)


def export(model: BaseVAE, run_dir: Path, data: Dataset, n_samples: int, seed: int) -> None:
    """`model/` (safetensors + JSON), `samples/samples.png` and `samples/reconstructions.png`."""
    model.save_pretrained(str(run_dir / "model"))
    gen = torch.Generator().manual_seed(seed)
    save_grid(model.sample(n_samples, generator=gen), run_dir / "samples" / "samples.png")
    save_reconstructions(model, data, 32, run_dir / "samples" / "reconstructions.png")


def train_row(
    state: TrainState,
    cfg: Config,
    epoch: int,
    report: StepReport,
    running: tuple[Tensor, int],
    total: int,
    start_step: int,
    t0: float,
) -> dict[str, Any]:
    """The metrics row of the last `log_every` steps: the running mean of the objective's score and the step's
    guard numbers."""
    # The only host sync in the loop: once per `log_every` steps (before the clock: the steps queued count).
    score = running[0].item() / max(running[1], 1)
    elapsed = time.perf_counter() - t0
    return {
        "kind": "train",
        "step": state.step,
        "epoch": epoch,
        state.objective.score_name: score,  # the running mean of the objective's score: neg_elbo for the ELBO
        "grad_norm": report.grad_norm.item(),
        "skipped": int(state.skipped.item()),
        "beta": kl_weight(state.step - 1, cfg.objective, total),
        "lr": state.optimizer.param_groups[0]["lr"],
        "examples_per_s": (state.step - start_step) * cfg.train.batch_size / max(elapsed, 1e-9),
        "compiled": state.compiled is not None,  # train.compile (auto decides per run)
    }

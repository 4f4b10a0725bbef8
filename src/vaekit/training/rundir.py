"""What a run writes besides checkpoints: metrics.jsonl, the exported model, sample grids."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from vaekit.apps.images import save_grid, save_reconstructions
from vaekit.data.datasets import Dataset
from vaekit.data.imbalance import class_counts
from vaekit.models.base import BaseVAE
from vaekit.storage import atomic_write_bytes
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

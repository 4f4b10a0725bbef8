"""Optional TensorBoard logging: scalars for every metrics row and the sample grids at the end; the loop's clock.

Used only when the `tensorboard` package is installed (`pip install vaekit[tensorboard]`) and
`train.tensorboard` is true; the run then holds `tensorboard/` events beside `metrics.jsonl`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class Clock:
    """perf_counter after the device's queued work is done: on a GPU the steps run ahead of the host, and the
    time they take must count as training, not as the evaluation that follows (once per epoch and log row)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class Tracker:
    """A no-op unless TensorBoard is importable."""

    def __init__(self, run_dir: Path, enabled: bool) -> None:
        self.writer: Any = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def row(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        prefix = row.get("split", row.get("kind", "train"))
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                self.writer.add_scalar(f"{prefix}/{key}", value, global_step=row["step"])

    def images(self, tag: str, images: Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_images(tag, images, global_step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

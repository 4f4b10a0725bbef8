"""Preemption: SIGTERM and SIGINT finish the step in flight, then the loop checkpoints and stops.

Cluster schedulers send SIGTERM some seconds before they kill a job; Ctrl-C sends SIGINT. The
handler only records the signal; the training loop looks at it after every step (under DDP at
every log step, where the ranks agree on it with one all-reduce, so all of them stop at the same
step), writes a checkpoint and raises `Preempted`. A second signal of either kind while that
checkpoint is written is ignored: the checkpoint is atomic and takes well under a second.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from types import FrameType, TracebackType

import torch

from vaekit.training.distributed import Topology

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """A context manager that records SIGTERM / SIGINT instead of dying, and restores the old handlers."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)  # type: ignore[arg-type]


class StopCheck:
    """Decides, after a step, whether to stop (a signal), to checkpoint (`train.checkpoint_minutes` passed) and
    whether the run's time budget (`train.max_minutes`, counted from this object's creation) is spent."""

    def __init__(
        self, signals: StopSignals, topology: Topology, checkpoint_minutes: float, log_every: int,
        max_minutes: float = 0.0,
    ) -> None:  # fmt: skip
        self.signals, self.topology = signals, topology
        self.every_s = 60 * checkpoint_minutes
        self.last = time.monotonic()
        self.deadline = self.last + 60 * max_minutes if max_minutes > 0 else math.inf
        self.log_every = log_every

    def after_step(self, step: int) -> tuple[int | None, bool, bool]:
        """(signal number to stop for, or None; whether a wall-clock checkpoint is due; whether the budget is spent)."""
        if self.topology.world > 1 and step % self.log_every:
            return None, False, False  # ranks decide together, at log steps only
        signum = self.signals.signum or 0
        now = time.monotonic()
        due = bool(self.every_s) and now - self.last >= self.every_s
        spent = now >= self.deadline
        if self.topology.world > 1:  # rank 0's clock and any rank's signal decide for every rank
            main, device = self.topology.is_main, self.topology.device
            flags = torch.tensor([float(signum), float(due and main), float(spent and main)], device=device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            signum, due, spent = int(flags[0]), bool(flags[1]), bool(flags[2])
        return (signum or None), due, spent

    def checkpointed(self) -> None:
        self.last = time.monotonic()

"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class VaekitError(Exception):
    """Bad usage or bad input: the message names the problem and what to do about it."""


class ConfigError(VaekitError):
    """An unknown key, a wrong type or an impossible value in a config."""


class DataError(VaekitError):
    """A data set that is missing, corrupt, of the wrong shape or holds NaN."""


class CheckpointError(VaekitError):
    """A checkpoint or exported model that is missing, truncated or of another architecture."""


class TrainingDiverged(VaekitError):
    """Training kept skipping updates after every rollback: the hyperparameters need changing."""


class Preempted(Exception):
    """SIGTERM or SIGINT stopped training after a checkpoint; `vaekit train --resume` continues it.

    Not a VaekitError: the CLI exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT),
    as a process killed by that signal would, so job schedulers see the usual code.
    """

    def __init__(self, signum: int, step: int, run_dir: str) -> None:
        import signal

        self.signum, self.step, self.run_dir = signum, step, run_dir
        self.signal_name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal_name} at step {step}; a checkpoint of that step is in {run_dir}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

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

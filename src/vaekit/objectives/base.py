"""The contract every objective keeps: what it is given (the nets, a batch, the step's knobs) and what it returns.

An objective reads a model's outputs and returns losses; it never builds a network or touches an optimizer
(LAYOUT.md). The training step calls `loss` once per player and never asks which objective it runs, so adding one
is a new file, its line in `objectives/__init__.py` and its row in tests/test_objective_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from vaekit.config import ModelConfig
from vaekit.errors import ConfigError
from vaekit.models.base import BaseVAE
from vaekit.models.distributions import DiagonalGaussian
from vaekit.models.outputs import VAEOutput


@dataclass(frozen=True)
class Knobs:
    """The schedules at one step: what an objective may weigh its terms by."""

    kl_weight: float | Tensor  # beta at this step (a device tensor inside the compiled step)
    group_weights: list[float] | None = None  # per-group KL weights, top first (objective.group_warmup_steps)
    kl_balance: bool = False  # NVAE's KL balancing, on while the KL weight ramps up
    step: int = 0  # the training step (the adversarial objective's discriminator start and ramp)


@dataclass(frozen=True)
class Batch:
    x: Tensor  # (B, C, H, W) in [0, 1]
    y: Tensor | None = None  # (B,) labels of a conditional model
    eps: Tensor | None = None  # (S, B, D) the reparameterization noise when the step draws it (DDP, compiled)
    memo: dict[str, Tensor] = field(default_factory=dict)  # values an earlier player's loss leaves for a later one's
    # this step: detached (the adversarial objective's reconstructions, judged by the discriminator), or a later
    # player's own loss with its graph (a VQ model's code prior, run once)
    weight: Tensor | None = None  # (B,) each example's loss weight (data.class_weights; mean 1 over the data)

    def mean(self, values: Tensor) -> Tensor:
        """The batch mean of per-example `values` (B, ...) over dim 0, each example weighted by `weight` if any: what
        an objective reduces its loss terms with, so class reweighting reaches every objective the same way."""
        if self.weight is None:
            return values.mean(0)
        return (values * self.weight.view(-1, *([1] * (values.dim() - 1)))).mean(0)


@dataclass(frozen=True)
class Nets:
    """The networks a step trains, and how to run the model this step (itself, its DDP wrapper, or a functional call
    over the compiled step's weights, under the run's autocast)."""

    model: BaseVAE  # for its attributes (latent_dim, group_dims, ...)
    forward: Callable[..., VAEOutput]  # forward(x, n_samples=S, eps=eps, y=y) -> VAEOutput
    others: dict[str, nn.Module] = field(default_factory=dict)  # the other players' networks, by player name
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext  # the run's autocast, for the other players
    # and for model calls outside `forward`
    frozen: dict[str, nn.Module] = field(default_factory=dict)  # fixed networks a loss reads (LPIPS), by name


@dataclass(frozen=True)
class LossOut:
    loss: Tensor  # () what the optimizer minimizes
    per_example: Tensor  # (B,) nats, detached: the same loss per example, what the loss watch judges
    score: Tensor  # (B,) nats, detached: what the run reports (`Objective.score_name` says which quantity)
    terms: dict[str, Tensor] = field(default_factory=dict)  # named (B,) detached values for the log


class Objective(Protocol):
    """A registry entry of `objectives/__init__.py`, built from the run's `ObjectiveConfig`."""

    @property
    def score_name(self) -> str:
        """The name of `LossOut.score`: "neg_elbo", or the objective's own quantity."""
        ...

    @property
    def samples(self) -> int:
        """Posterior samples per example the forward pass draws (the noise the step draws for it)."""
        ...

    @property
    def players(self) -> tuple[str, ...]:
        """The parameter sets this objective trains, updated in this order each step; "model" is always one."""
        ...

    def check(self, model: ModelConfig) -> None:
        """Raise `ConfigError` (one line) when this objective cannot train a model of this kind."""
        ...

    def compile_blocker(self) -> str | None:
        """Why the compiled step cannot run this objective, or None when it can."""
        ...

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut | None:
        """What `player`'s optimizer minimizes this step, with the model's score and logged terms; None when
        `player` sits this step out (no update, its guard state untouched; never the model)."""
        ...


def forward_at_mean(nets: Nets, batch: Batch) -> VAEOutput:
    """The forward pass with z at the posterior mean (zero noise): the deterministic autoencoders' codes."""
    zero = torch.zeros(1, batch.x.shape[0], nets.model.latent_dim, device=batch.x.device)
    return nets.forward(batch.x, n_samples=1, eps=zero, y=batch.y)


def gaussian_posterior(out: VAEOutput) -> DiagonalGaussian:
    """The one diagonal-Gaussian posterior (B, D) of a model `require_one_gaussian_group` admitted."""
    q = out.groups[0].q
    assert isinstance(q, DiagonalGaussian), "require_one_gaussian_group admits Gaussian posteriors only"
    return q


def require_one_gaussian_group(model: ModelConfig, name: str, prior: bool = False) -> None:
    """A one-line error unless the model has one diagonal-Gaussian latent group (and, with `prior`, the standard
    normal prior): what the family's objectives read (their terms are over that group's posterior and codes)."""
    if model.kind != "vae" or model.posterior != "gaussian":
        raise ConfigError(f"objective.name={name} reads one Gaussian latent group: use model.kind=vae and "
                          f"model.posterior=gaussian (this model: kind {model.kind}, posterior {model.posterior})")
    if prior and model.prior != "standard-normal":
        raise ConfigError(f"objective.name={name} matches the codes to N(0, I): use model.prior=standard-normal "
                          f"(this model: {model.prior})")

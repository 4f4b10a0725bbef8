"""One guarded update: the training state, the step, and building both from a config.

`TrainState` holds everything a resumed run needs; `train_step` applies one update to it: the objective's loss at
the step's knobs (objectives/), then the guards, Adam and the EMA; it never asks which objective it runs.
`build_state` makes the model, the objective, fused Adam, EMA, DDP wrapper, fp16 scaler and (with `train.compile`)
the compiled whole step, built from the same functions.
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from vaekit.config import Config
from vaekit.errors import VaekitError
from vaekit.models.base import BaseVAE
from vaekit.models.outputs import VAEOutput
from vaekit.models.vae import build_model
from vaekit.objectives import Batch, Nets, Objective, build_objective
from vaekit.training.compiled import Counters, WholeStep, autocast, graph_key, is_warm, supported
from vaekit.training.distributed import Topology
from vaekit.training.guards import EMA, LossWatch, NormHistory, StepReport, count_skip_, guarded_update
from vaekit.training.players import Player, frozen_networks, player_network, player_optim, players_state
from vaekit.training.regularizers import SpectralPenalty
from vaekit.training.schedules import kl_weight, knobs_at, lr_factor

# `train.compile: auto` compiles a run of at least this many full steps, the measured break-even of the compiled
# step on this project's 2-core CPU (bench/compile_break_even.py, bench/RESULTS.md "Compiled whole step"): with an
# empty compile cache 4,600-13,700 steps (20-33 s of compiling), with this graph already in the cache 900-1,900.
AUTO_COMPILE_STEPS = 15_000
AUTO_COMPILE_STEPS_WARM = 2_000
# A run with a time budget (`train.max_minutes`) stops by the clock, so its step count says nothing: `auto` compiles it
# only when the budget exceeds the break-even in eager seconds (the same table: 122-148 s cold for the burda and hvae
# steps, 15-19 s warm).
AUTO_COMPILE_SECONDS = 150
AUTO_COMPILE_SECONDS_WARM = 20


@dataclass
class TrainState:
    """Everything a resumed run needs: the players (the model, and any network an objective adds) and the run's own
    state; `model`, `optimizer`, `ema`, `skipped`, ... read the model player's."""

    players: dict[str, Player]
    objective: Objective
    step: int = 0
    rollbacks: int = 0
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    compiled: WholeStep | None = None  # train.compile: forward, backward, guards and Adam as one compiled graph
    spectral: SpectralPenalty | None = None  # objective.spectral_reg > 0
    watch: LossWatch | None = None  # guard.loss_rise: the training loss in windows (rollback when it rises)
    frozen: dict[str, torch.nn.Module] = field(default_factory=dict)  # fixed networks the objective reads (LPIPS)

    @property
    def net(self) -> torch.nn.Module | None:
        """The model's DDP wrapper in multi-process runs (checkpoints hold `model`)."""
        return self.players["model"].wrapped

    @property
    def model(self) -> BaseVAE:
        return self.players["model"].module  # type: ignore[return-value]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.players["model"].optimizer

    @property
    def ema(self) -> EMA | None:
        return self.players["model"].ema

    @property
    def history(self) -> NormHistory:
        return self.players["model"].history

    @property
    def skipped(self) -> Tensor:
        return self.players["model"].skipped

    @property
    def streak(self) -> Tensor:
        return self.players["model"].streak

    @property
    def grad_norm(self) -> Tensor:
        return self.players["model"].grad_norm

    @property
    def lr_scale(self) -> float:
        return self.players["model"].lr_scale

    @property
    def device(self) -> torch.device:
        return self.grad_norm.device

    def state_dict(self, epoch: float = 0.0) -> dict[str, Any]:
        """Everything a resumed run needs; `epoch` (fractional) is informational, the step decides."""
        return {
            "players": {name: player.state_dict() for name, player in self.players.items()},
            "step": self.step,
            "epoch": epoch,
            "spectral": self.spectral.state_dict() if self.spectral is not None else None,
            "loss_watch": self.watch.state_dict() if self.watch is not None else None,
            "rollbacks": self.rollbacks,
            "rng": torch.get_rng_state(),
            # on CUDA the reparameterization noise comes from the device's generator
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        """Restore `state_dict`'s output, or a checkpoint written before players (the model's state at the top)."""
        for name, saved in players_state(state).items():
            self.players[name].load_state_dict(saved, source)
        self.step, self.rollbacks = int(state["step"]), int(state["rollbacks"])
        if self.watch is not None and state.get("loss_watch") is not None:  # older checkpoints: watch afresh
            self.watch.load_state_dict(state["loss_watch"])
        if self.spectral is not None and state.get("spectral") is not None:
            self.spectral.load_state_dict(state["spectral"])
        torch.set_rng_state(state["rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def longest_streak(self) -> int:
        """The longest run of updates skipped in a row now, over every player (one host sync)."""
        return max(int(p.streak) for p in self.players.values())

    def counters(self) -> Counters:
        """What the compiled step updates in place besides weights and Adam: the skip counters and the EMA."""
        return Counters(self.skipped, self.streak, self.ema)

    def eval_model(self) -> BaseVAE:
        """The model with EMA weights when an EMA is kept, else the live model."""
        return self.players["model"].averaged()  # type: ignore[return-value]


def train_step(
    state: TrainState,
    x: Tensor,
    cfg: Config,
    total_steps: int,
    rows: slice | None = None,
    y: Tensor | None = None,
    class_weights: Tensor | None = None,
) -> tuple[StepReport, Tensor]:
    """One guarded update on batch x (B, C, H, W) (labels y (B,) for a conditional model, or to weigh each example
    by `class_weights` (C,)); returns the report and the objective's score (B,) nats (the -ELBO, or what
    `state.objective.score_name` names).

    With `rows` (DDP), x is the global batch: this rank keeps its rows, and the reparameterization
    noise is drawn for the whole global batch so every rank's slice matches a single-process run.
    """
    for player in state.players.values():
        for group in player.optimizer.param_groups:
            group["lr"] = player.base_lr * player.lr_scale * lr_factor(state.step, cfg.optim, total_steps)
    device = state.device
    eps = None
    if rows is not None:
        eps = torch.randn(state.objective.samples, x.shape[0], state.model.latent_dim)[:, rows].to(device)
        x = x[rows]
        y = y[rows] if y is not None else None
    x = x.to(device, non_blocking=True)  # a no-op for batches the feed already placed on the device
    y = y.to(device, non_blocking=True) if y is not None else None
    weight = class_weights[y] if class_weights is not None and y is not None else None
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # an epoch's smaller last batch runs eager: compiling a second graph for it costs more than it saves
    whole = state.compiled is not None and x.shape[0] == cfg.train.batch_size
    done = _compiled_update(state, x, cfg, total_steps, y) if whole else None
    if done is None:  # the compiled step also updated the EMA and the counters
        done = _eager_update(state, Batch(x, y, eps, weight=weight), cfg, total_steps)
    state.players["model"].grad_norm = done[0].grad_norm
    state.step += 1
    return done


def _eager_update(state: TrainState, batch: Batch, cfg: Config, total_steps: int) -> tuple[StepReport, Tensor]:
    """Each player's guarded update in the objective's order; the model player's report (with every player's
    logged terms) and score."""
    knobs = knobs_at(state.step, cfg.objective, total_steps, len(state.model.group_dims))
    others = {name: player.wrapped or player.module for name, player in state.players.items() if name != "model"}
    nets = Nets(state.model, _forward(state, cfg), others, lambda: autocast(cfg.train.precision, batch.x.device.type),
                state.frozen)
    reports: dict[str, tuple[StepReport, Tensor]] = {}
    terms: dict[str, Tensor] = {}
    for name in state.objective.players:
        player = state.players[name]
        out = state.objective.loss(name, nets, batch, knobs)
        if out is None:  # this player sits the step out
            continue
        loss = out.loss + state.spectral() if state.spectral is not None and name == "model" else out.loss
        if len(state.players) > 1:  # an earlier player's loss may have reached these weights: only this one's counts
            player.optimizer.zero_grad(set_to_none=True)
        report = replace(_backward_and_update(state, player, loss, cfg), per_example_loss=out.per_example)
        if player.ema is not None:
            player.ema.update(player.module, report.skipped, step=state.step)
        count_skip_(player.skipped, player.streak, report.skipped)  # in place, on the device: no sync per step
        player.grad_norm = report.grad_norm
        reports[name] = (report, out.score)
        terms |= out.terms
        if name != "model":
            terms |= {f"{name}.grad_norm": report.grad_norm, f"{name}.skipped": report.skipped.float()}
    report, score = reports["model"]
    return replace(report, terms=terms), score


def _forward(state: TrainState, cfg: Config) -> Callable[..., VAEOutput]:
    """The model (its DDP wrapper in multi-process runs) under the run's autocast; the loss terms stay in fp32."""
    net = state.net or state.model

    def forward(x: Tensor, **kwargs: Any) -> VAEOutput:
        with autocast(cfg.train.precision, x.device.type):
            return net(x, **kwargs)

    return forward


def _compiled_update(
    state: TrainState, x: Tensor, cfg: Config, total_steps: int, y: Tensor | None
) -> tuple[StepReport, Tensor] | None:
    """The whole step compiled, or None (and eager from then on) if compiling fails, e.g. with no C++ compiler."""
    assert state.compiled is not None
    # the stream eager rsample draws
    eps = torch.randn(state.objective.samples, x.shape[0], state.model.latent_dim, device=x.device)
    clip = cfg.guard.clip_grad_norm
    scales = (state.lr_scale, state.players["model"].clip_scale)

    ema = state.ema

    def knobs(step: int) -> tuple[float, float, float, float, float]:  # the schedules, a block of steps at a time
        lr = cfg.optim.lr * scales[0] * lr_factor(step, cfg.optim, total_steps)
        return (
            kl_weight(step, cfg.objective, total_steps),
            lr,
            clip * scales[1] if clip is not None else math.inf,
            ema.decay_at(step) if ema is not None else 0.0,
            float(step < cfg.optim.lr_warmup_steps),
        )

    try:
        return state.compiled(x, eps, state.step, knobs, scales, state.counters(), y)
    except Exception as err:  # any compiler failure: train on, uncompiled
        first_line = (str(err).splitlines() or [""])[0][:200]
        warnings.warn(
            f"torch.compile failed ({type(err).__name__}: {first_line}); training on without it "
            "(set train.compile=false to skip the attempt)",
            stacklevel=2,
        )
        state.compiled = None
        return None


def _backward_and_update(state: TrainState, player: Player, loss: Tensor, cfg: Config) -> StepReport:
    optimizer, params = player.optimizer, player.params
    warming = state.step < cfg.optim.lr_warmup_steps  # norms grow with the learning rate: not outliers
    if state.scaler is None:
        loss.backward()
        return guarded_update(optimizer, params, loss, cfg.guard, None, player.history, player.clip_scale, warming)
    scaler = state.scaler  # fp16: scale the loss, unscale the grads, then the same guard
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    report = guarded_update(
        optimizer,
        params,
        loss,
        cfg.guard,
        step=lambda: scaler.step(optimizer),
        history=player.history,
        clip_scale=player.clip_scale,
        warming=warming,
    )
    scaler.update()
    return report


def build_state(
    cfg: Config,
    topology: Topology | None = None,
    nets: tuple[torch.nn.Module | None, torch.nn.Module | None] = (None, None),
    total_steps: int = 0,
    others: dict[str, torch.nn.Module] | None = None,
) -> TrainState:
    """The model (with `nets`, a user's own (encoder, decoder), where given) as the "model" player (fused Adam, EMA,
    guard state), the objective's other players over the networks in `others`, DDP, scaler, compile."""
    device = topology.device if topology else torch.device("cpu")
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise VaekitError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    objective = build_objective(cfg)
    model = build_model(cfg.model, *nets).to(device)
    if cfg.train.channels_last:  # before the optimizer: Adam's moments take the parameters' layout
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
    networks = {  # each other player: its network, its optimizer
        name: others[name] if others is not None and name in others else player_network(name, cfg, model)
        for name in objective.players if name != "model"
    }
    inside = [net for net in networks.values() if any(net is m for m in model.modules())]
    if inside and topology is not None and topology.world > 1:
        raise VaekitError(f"objective {cfg.objective.name} trains a network inside the model as its own player, "
                          "which multi-process runs do not support yet; train in one process")
    players = {"model": Player.build(model, cfg, device, leave_out=inside)}
    for name, network in networks.items():
        players[name] = Player.build(network.to(device), cfg, device, optim=player_optim(name, cfg))
    state = TrainState(players=players, objective=objective, frozen=frozen_networks(cfg, device))
    if topology is not None and topology.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        for player in players.values():  # every player's gradients are averaged over the processes
            player.wrapped = torch.nn.parallel.DistributedDataParallel(player.module, device_ids=ids)
    if cfg.train.precision == "fp16":
        state.scaler = torch.amp.GradScaler("cuda")
    if cfg.guard.loss_rise is not None:
        state.watch = LossWatch(cfg.guard.loss_rise * math.prod(model.cfg.input_shape or [1]), device)
    if cfg.objective.spectral_reg > 0:
        state.spectral = SpectralPenalty(model, cfg.objective.spectral_reg)
    if compile_whole_step(cfg, total_steps, state.net is not None, state.spectral is not None, device):
        state.compiled = WholeStep(model, objective, state.optimizer, state.history, cfg)
    return state


def compile_whole_step(cfg: Config, total_steps: int, distributed: bool, spectral: bool, device: torch.device) -> bool:
    """Whether this run compiles its step: `train.compile` true, or `auto` on a run long enough to pay.

    `auto` compiles on the CPU and CUDA when the run has at least `AUTO_COMPILE_STEPS` full steps
    (`AUTO_COMPILE_STEPS_WARM` when this machine has compiled the same graph before, so its kernels are cached),
    a time budget (`train.max_minutes`), if any, of at least `AUTO_COMPILE_SECONDS` (`_WARM`), and a C++ compiler
    (inductor needs one on the CPU); a run it cannot compile stays eager silently.
    `true` on an unsupported run warns and stays eager.
    """
    setting = cfg.train.compile
    if setting is False:
        return False
    reason = supported(cfg, distributed, spectral)
    if setting is True:
        if reason is not None:
            warnings.warn(f"train.compile does not apply to {reason}; running uncompiled", stacklevel=3)
        return reason is None
    if reason is not None or device.type not in ("cpu", "cuda"):
        return False
    warm = is_warm(graph_key(cfg, device))
    if total_steps < (AUTO_COMPILE_STEPS_WARM if warm else AUTO_COMPILE_STEPS):
        return False
    budget = 60 * cfg.train.max_minutes
    if 0 < budget < (AUTO_COMPILE_SECONDS_WARM if warm else AUTO_COMPILE_SECONDS):
        return False
    return device.type == "cuda" or shutil.which(os.environ.get("CXX", "g++")) is not None

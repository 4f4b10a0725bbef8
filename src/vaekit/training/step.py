"""One guarded update: the training state, the step, and building both from a config.

`TrainState` holds everything a resumed run needs; `train_step` applies one update to it: the objective's loss at
the step's knobs (objectives/), then the guards, Adam and the EMA; it never asks which objective it runs.
`build_state` makes the model, the objective, fused Adam, EMA, DDP wrapper, fp16 scaler and (with `train.compile`)
the compiled whole step, built from the same functions.
"""

from __future__ import annotations

import copy
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
from vaekit.storage import load_state
from vaekit.training.compiled import Counters, WholeStep, autocast, graph_key, is_warm, supported
from vaekit.training.distributed import Topology
from vaekit.training.guards import EMA, LossWatch, NormHistory, StepReport, count_skip_, guarded_update
from vaekit.training.regularizers import SpectralPenalty
from vaekit.training.schedules import kl_weight, knobs_at, lr_factor

# `train.compile: auto` compiles a run of at least this many full steps, the measured break-even of the compiled
# step on this project's 2-core CPU (bench/compile_break_even.py, bench/RESULTS.md "Compiled whole step"): with an
# empty compile cache 4,600-13,700 steps (20-33 s of compiling), with this graph already in the cache 900-1,900.
AUTO_COMPILE_STEPS = 15_000
AUTO_COMPILE_STEPS_WARM = 2_000


@dataclass
class TrainState:
    model: BaseVAE
    objective: Objective
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    step: int = 0
    skipped: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))  # total skipped updates
    streak: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))  # skipped in a row, now
    lr_scale: float = 1.0  # lowered by each rollback
    clip_scale: float = 1.0  # lowered by each rollback, with the learning rate
    history: NormHistory = field(default_factory=lambda: NormHistory(100))  # recent gradient norms (outlier rule)
    rollbacks: int = 0
    grad_norm: Tensor = field(default_factory=lambda: torch.zeros(()))  # of the latest step, for evaluation rows
    net: torch.nn.Module | None = None  # the DDP wrapper in multi-process runs; checkpoints hold `model`
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    compiled: WholeStep | None = None  # train.compile: forward, backward, guards and Adam as one compiled graph
    spectral: SpectralPenalty | None = None  # objective.spectral_reg > 0
    watch: LossWatch | None = None  # guard.loss_rise: the training loss in windows (rollback when it rises)

    def state_dict(self, epoch: float = 0.0) -> dict[str, Any]:
        """Everything a resumed run needs; `epoch` (fractional) is informational, the step decides."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.shadow if self.ema else None,
            "step": self.step,
            "epoch": epoch,
            "skipped": self.skipped.clone(),  # the live tensors change in place
            "streak": self.streak.clone(),
            "lr_scale": self.lr_scale,
            "clip_scale": self.clip_scale,
            "norm_history": self.history.state_dict(),
            "spectral": self.spectral.state_dict() if self.spectral is not None else None,
            "loss_watch": self.watch.state_dict() if self.watch is not None else None,
            "rollbacks": self.rollbacks,
            "rng": torch.get_rng_state(),
            # on CUDA the reparameterization noise comes from the device's generator
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    @property
    def device(self) -> torch.device:
        return self.grad_norm.device

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        """Restore `state_dict`'s output (tensors read back on the CPU go to this state's device)."""
        device = self.device
        load_state(self.model, state["model"], source)
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
        _match_layouts(self.optimizer)
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        self.step = int(state["step"])
        self.skipped.copy_(state["skipped"])  # in place: a compiled (captured) step keeps these tensors
        self.streak.copy_(state["streak"])
        self.lr_scale, self.rollbacks = float(state["lr_scale"]), int(state["rollbacks"])
        self.clip_scale = float(state.get("clip_scale", 1.0))
        if state.get("norm_history") is not None:  # checkpoints of vaekit 0.1 have none: start the history afresh
            self.history.load_state_dict(state["norm_history"])
        if self.watch is not None and state.get("loss_watch") is not None:  # older checkpoints: watch afresh
            self.watch.load_state_dict(state["loss_watch"])
        if self.spectral is not None and state.get("spectral") is not None:
            self.spectral.load_state_dict(state["spectral"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def counters(self) -> Counters:
        """What the compiled step updates in place besides weights and Adam: the skip counters and the EMA."""
        return Counters(self.skipped, self.streak, self.ema)

    def eval_model(self) -> BaseVAE:
        """The model with EMA weights when an EMA is kept, else the live model."""
        if self.ema is None:
            return self.model
        averaged = copy.deepcopy(self.model)  # not VAE(cfg): a fresh init would draw from the global RNG
        averaged.load_state_dict(self.ema.state_dict(self.model))
        return averaged


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored moment its parameter's memory layout (channels_last convolutions): checkpoints hold
    them contiguous, and CUDA's fused Adam refuses moments whose strides differ from the parameter's."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def train_step(
    state: TrainState, x: Tensor, cfg: Config, total_steps: int, rows: slice | None = None, y: Tensor | None = None
) -> tuple[StepReport, Tensor]:
    """One guarded update on batch x (B, C, H, W) (labels y (B,) for a conditional model); returns the
    report and the objective's score (B,) nats (the -ELBO, or what `state.objective.score_name` names).

    With `rows` (DDP), x is the global batch: this rank keeps its rows, and the reparameterization
    noise is drawn for the whole global batch so every rank's slice matches a single-process run.
    """
    for group in state.optimizer.param_groups:
        group["lr"] = cfg.optim.lr * state.lr_scale * lr_factor(state.step, cfg.optim, total_steps)
    device = state.device
    eps = None
    if rows is not None:
        eps = torch.randn(state.objective.samples, x.shape[0], state.model.latent_dim)[:, rows].to(device)
        x = x[rows]
        y = y[rows] if y is not None else None
    x = x.to(device, non_blocking=True)  # a no-op for batches the feed already placed on the device
    y = y.to(device, non_blocking=True) if y is not None else None
    if cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    # an epoch's smaller last batch runs eager: compiling a second graph for it costs more than it saves
    whole = state.compiled is not None and x.shape[0] == cfg.train.batch_size
    done = _compiled_update(state, x, cfg, total_steps, y) if whole else None
    if done is None:  # the compiled step also updated the EMA and the counters
        done = _eager_update(state, Batch(x, y, eps), cfg, total_steps)
    state.grad_norm = done[0].grad_norm
    state.step += 1
    return done


def _eager_update(state: TrainState, batch: Batch, cfg: Config, total_steps: int) -> tuple[StepReport, Tensor]:
    knobs = knobs_at(state.step, cfg.objective, total_steps, len(state.model.group_dims))
    out = state.objective.loss(Nets(state.model, _forward(state, cfg)), batch, knobs)
    loss = out.loss + state.spectral() if state.spectral is not None else out.loss
    report = replace(_backward_and_update(state, loss, cfg), per_example_loss=out.per_example)
    if state.ema is not None:
        state.ema.update(state.model, report.skipped, step=state.step)
    count_skip_(state.skipped, state.streak, report.skipped)  # in place, on the device: no sync per step
    return report, out.score


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
    scales = (state.lr_scale, state.clip_scale)

    ema = state.ema

    def knobs(step: int) -> tuple[float, float, float, float]:  # the schedules, evaluated a block of steps at a time
        lr = cfg.optim.lr * scales[0] * lr_factor(step, cfg.optim, total_steps)
        return (
            kl_weight(step, cfg.objective, total_steps),
            lr,
            clip * scales[1] if clip is not None else math.inf,
            ema.decay_at(step) if ema is not None else 0.0,
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


def _backward_and_update(state: TrainState, loss: Tensor, cfg: Config) -> StepReport:
    if state.scaler is None:
        loss.backward()
        return guarded_update(
            state.optimizer, state.model.parameters(), loss, cfg.guard, None, state.history, state.clip_scale
        )
    scaler = state.scaler  # fp16: scale the loss, unscale the grads, then the same guard
    scaler.scale(loss).backward()
    scaler.unscale_(state.optimizer)
    report = guarded_update(
        state.optimizer,
        state.model.parameters(),
        loss,
        cfg.guard,
        step=lambda: scaler.step(state.optimizer),
        history=state.history,
        clip_scale=state.clip_scale,
    )
    scaler.update()
    return report


def build_state(
    cfg: Config,
    topology: Topology | None = None,
    nets: tuple[torch.nn.Module | None, torch.nn.Module | None] = (None, None),
    total_steps: int = 0,
) -> TrainState:
    """The model (with `nets`, a user's own (encoder, decoder), where given), fused Adam, EMA, DDP, scaler, compile."""
    device = topology.device if topology else torch.device("cpu")
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise VaekitError("train.precision=fp16 needs a CUDA device; use bf16 on CPU")
    objective = build_objective(cfg.objective, cfg.model)
    model = build_model(cfg.model, *nets).to(device)
    if cfg.train.channels_last:  # before the optimizer: Adam's moments take the parameters' layout
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in torch's stubs
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),  # type: ignore[arg-type]
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # fused Adam also takes found_inf: skipped steps need no sync
    )
    ema = EMA(model, cfg.guard.ema_decay, cfg.guard.ema_warmup_power) if cfg.guard.ema_decay > 0 else None
    history = NormHistory(cfg.guard.skip_window, device)
    state = TrainState(model=model, objective=objective, optimizer=optimizer, ema=ema, history=history)
    for name in ("skipped", "streak", "grad_norm"):
        setattr(state, name, getattr(state, name).to(device))
    if topology is not None and topology.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        state.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.train.precision == "fp16":
        state.scaler = torch.amp.GradScaler("cuda")
    if cfg.guard.loss_rise is not None:
        state.watch = LossWatch(cfg.guard.loss_rise * math.prod(model.cfg.input_shape or [1]), device)
    if cfg.objective.spectral_reg > 0:
        state.spectral = SpectralPenalty(model, cfg.objective.spectral_reg)
    if compile_whole_step(cfg, total_steps, state.net is not None, state.spectral is not None, device):
        state.compiled = WholeStep(model, objective, optimizer, state.history, cfg)
    return state


def compile_whole_step(cfg: Config, total_steps: int, distributed: bool, spectral: bool, device: torch.device) -> bool:
    """Whether this run compiles its step: `train.compile` true, or `auto` on a run long enough to pay.

    `auto` compiles on the CPU and CUDA when the run has at least `AUTO_COMPILE_STEPS` full steps
    (`AUTO_COMPILE_STEPS_WARM` when this machine has compiled the same graph before, so its kernels are cached)
    and a C++ compiler is there (inductor needs one on the CPU); a run it cannot compile stays eager silently.
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
    if total_steps < (AUTO_COMPILE_STEPS_WARM if is_warm(graph_key(cfg, device)) else AUTO_COMPILE_STEPS):
        return False
    return device.type == "cuda" or shutil.which(os.environ.get("CXX", "g++")) is not None

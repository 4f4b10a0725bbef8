"""The whole training step as one compiled graph (`train.compile`).

The eager step's own pieces, compiled into one graph with no host sync: the objective's `loss` (through
`torch.func.grad_and_value`, so autograd is traced into the same graph), the guards' `total_norm`, `clip_coef`,
`skip_decision` and `count_skip_`, the eager step's update (torch's fused Adam, `torch.optim.adam.adam` with the
optimizer's settings, the clip factor as its `grad_scale` and the skip as its `found_inf`) and the EMA's
`ema_blend_`. Nothing here restates a loss or an optimizer formula. The step reads and writes the very tensors eager
training uses (the parameters, `torch.optim.Adam`'s `exp_avg`, `exp_avg_sq` and `step`, the norm history, the
counters, the EMA shadow), so checkpoints are the same files either way and a run can resume eagerly from a compiled
one. A skipped update leaves weights, moments and EMA as they were, in both paths.

The learning rate, the KL weight, the clip norm and the EMA's decay enter as one device tensor (`knobs`), copied on the
device from a block of 1,024 steps' schedules sent over at once, so schedules neither recompile nor
allocate nor transfer per step. On CUDA the step is captured as a CUDA graph and replayed. Compiled
code is cached on disk (`cache_dir`): the first run of a network on a machine pays the compilation,
later processes load it (the graph is still traced).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.adam import adam as torch_adam

from vaekit.config import Config
from vaekit.objectives import Batch, Knobs, Nets, Objective, build_objective
from vaekit.training.guards import (
    EMA,
    NormHistory,
    StepReport,
    clip_coef,
    count_skip_,
    ema_blend_,
    ema_weight,
    skip_decision,
    total_norm,
)

KNOB_BLOCK = 1024  # steps whose schedules go to the device in one copy


def cache_dir() -> Path:
    """Where compiled kernels persist across processes: $TORCHINDUCTOR_CACHE_DIR, else ~/.cache/vaekit/inductor."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vaekit" / "inductor"


def use_persistent_cache() -> None:
    """Point inductor's on-disk caches at `cache_dir()` (unless the user set TORCHINDUCTOR_CACHE_DIR)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        path = cache_dir()
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)


def graph_key(cfg: Config, device: torch.device) -> str:
    """What the compiled graph depends on: the model, the loss and guard settings, precision, batch, torch, device."""
    parts = {
        "model": dataclasses.asdict(cfg.model),
        "objective": dataclasses.asdict(cfg.objective),
        "guard": dataclasses.asdict(cfg.guard),
        "optim": [cfg.optim.betas, cfg.optim.eps, cfg.optim.weight_decay],
        "train": [cfg.train.precision, cfg.train.batch_size, cfg.train.channels_last],
        "torch": torch.__version__,
        "device": device.type,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def is_warm(key: str) -> bool:
    """Has this machine compiled this graph before (its kernels are in the on-disk cache)?"""
    return (cache_dir() / "vaekit-warm" / key).is_file()


def _mark_warm(key: str) -> None:
    with contextlib.suppress(OSError):
        (cache_dir() / "vaekit-warm").mkdir(parents=True, exist_ok=True)
        (cache_dir() / "vaekit-warm" / key).touch()


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class Counters:
    """What a step updates besides the weights and Adam's state: the skip counters and the EMA shadow."""

    skipped: Tensor  # total skipped updates (long, 0-d)
    streak: Tensor  # skipped in a row (long, 0-d)
    ema: EMA | None  # the EMA whose shadow weights the step averages, or None


class WholeStep:
    """One guarded Adam update of `model` as a compiled function (see the module's docstring).

    On CUDA the graph is captured once and replayed (`mode="reduce-overhead"`: CUDA graphs through
    inductor's cudagraph trees); every tensor the step keeps from one call to the next (weights, Adam's
    state, the norm history, the counters, the EMA shadow) is marked as a static address, so a replay
    copies only the batch and its noise in. Outputs the caller keeps past the next step live in this
    object's own buffers (`grad_norm`, `skip`): a replay overwrites a graph's outputs.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        history: NormHistory,
        cfg: Config,
    ) -> None:
        self.model, self.objective, self.optimizer, self.history, self.cfg = model, objective, optimizer, history, cfg
        group = optimizer.param_groups[0]  # read once: the step sets group["lr"], which a graph must not guard on
        self.adam = AdamSettings(group["betas"][0], group["betas"][1], group["eps"], group["weight_decay"])
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = device = self.params[0].device
        self.knobs = torch.zeros(5, device=device)  # beta, lr, clip norm (inf: none), EMA decay, in lr warm-up
        self.grad_norm = torch.zeros((), device=device)  # of the latest compiled step
        self.skip = torch.zeros((), dtype=torch.bool, device=device)
        self._table = torch.zeros(0, 5, device=device)  # the knobs of KNOB_BLOCK steps from `_table_from` on
        self._table_from, self._table_scales = -1, (math.nan, math.nan)
        self._marked: tuple[int, ...] = ()
        self.key, self.warmed = graph_key(cfg, device), False
        use_persistent_cache()
        self.cuda_graphs = device.type == "cuda"
        mode = "reduce-overhead" if self.cuda_graphs else None
        self.compiled: Callable[..., Tensor] = torch.compile(_own_step(self), dynamic=False, mode=mode)

    def _adam_state(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Adam's moments and step counts, created as `torch.optim.Adam` (fused) creates them on its first step."""
        m, v, t = [], [], []
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m.append(state["exp_avg"])
            v.append(state["exp_avg_sq"])
            t.append(state["step"])
        return m, v, t

    def knob_row(
        self, step: int, knobs: Callable[[int], tuple[float, float, float, float, float]], scales: tuple[float, float]
    ) -> None:
        """Fill `self.knobs` with step `step`'s (KL weight, lr, clip norm, EMA decay, 1 in the lr warm-up) from a block
        kept on the device.

        The schedules are evaluated on the host KNOB_BLOCK steps at a time and sent over in one copy; a
        step then copies its row on the device (no host-to-device transfer and no sync per step). A
        rollback's new scales start a new block.
        """
        at = step - self._table_from
        if not 0 <= at < self._table.shape[0] or scales != self._table_scales:
            rows = torch.tensor([knobs(s) for s in range(step, step + KNOB_BLOCK)], dtype=torch.float32)
            self._table = rows.to(self.device)
            self._table_from, self._table_scales, at = step, scales, 0
        self.knobs.copy_(self._table[at])

    def __call__(
        self,
        x: Tensor,
        eps: Tensor,
        step: int,
        knobs: Callable[[int], tuple[float, float, float, float, float]],
        scales: tuple[float, float],
        counters: Counters,
        y: Tensor | None = None,
    ) -> tuple[StepReport, Tensor]:
        """One update on batch `x` (labels `y` for a conditional model) with noise `eps` at step `step`
        (`knobs(step)` gives its schedules); updates `counters` in place."""
        self.knob_row(step, knobs, scales)
        m, v, t = self._adam_state()
        shadow = [counters.ema.shadow[n] for n in self.names] if counters.ema is not None else []
        kept = [*self.params, *m, *v, *t, self.history.log_norms, self.history.count, counters.skipped,
                counters.streak, *shadow, self.knobs, self.grad_norm, self.skip]
        marks = (id(m[0]), id(t[0]), id(self.history.log_norms), id(counters.skipped), id(shadow[0]) if shadow else 0)
        if marks != self._marked:  # new tensors (first call, resume, rollback): cudagraphs need them marked
            for tensor in kept:
                torch._dynamo.mark_static_address(tensor, guard=False)
            self._marked = marks
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        watched = self.compiled(
            self.params, m, v, t, self.history.log_norms, self.history.count, x, eps, self.knobs,
            (counters.skipped, counters.streak, self.grad_norm, self.skip), shadow,
            y,
        )
        if counters.ema is not None and len(shadow) < len(counters.ema.shadow):
            names = set(self.names)  # float buffers of a user's own nets are averaged eagerly
            counters.ema.update(self.model, self.skip, [k for k in counters.ema.shadow if k not in names], step)
        if not self.warmed:  # compiled and ran: the next run of this graph on this machine starts warm
            self.warmed = True
            _mark_warm(self.key)
        return StepReport(grad_norm=self.grad_norm, skipped=self.skip, per_example_loss=watched[1]), watched[0]

    def _step(
        self,
        params: list[Tensor],
        exp_avg: list[Tensor],
        exp_avg_sq: list[Tensor],
        steps: list[Tensor],
        log_norms: Tensor,
        count: Tensor,
        x: Tensor,
        eps: Tensor,
        knobs: Tensor,
        outputs: tuple[Tensor, Tensor, Tensor, Tensor],
        shadow: list[Tensor],
        y: Tensor | None,
    ) -> Tensor:
        beta, lr, clip, decay, warming = knobs[0], knobs[1], knobs[2], knobs[3], knobs[4] > 0
        grads, loss, watched = self._gradients(params, x, eps, y, Knobs(kl_weight=beta))
        grad_norm = total_norm(grads)
        coef = clip_coef(clip, grad_norm)  # clip = inf when guard.clip_grad_norm is off: a factor of 1
        history = NormHistory.over(log_norms, count)
        skip = skip_decision(loss, grad_norm, self.cfg.guard, history, warming)
        with torch.no_grad():
            _adam_unless_skipped(self.adam, (params, grads, exp_avg, exp_avg_sq, steps), lr, skip, coef)
            if shadow:
                ema_blend_(shadow, params, ema_weight(decay, skip, shadow[0].dtype))
            skipped, streak, norm_out, skip_out = outputs
            count_skip_(skipped, streak, skip)
            norm_out.copy_(grad_norm.detach())
            skip_out.copy_(skip)
        return watched  # (2, B): the objective's score and its per-example loss

    def _gradients(
        self, params: list[Tensor], x: Tensor, eps: Tensor, y: Tensor | None, knobs: Knobs
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """The objective's loss and its gradients with respect to `params`, as a function of the weights."""
        precision = self.cfg.train.precision

        def loss_fn(weights: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            def forward(inputs: Tensor, **kwargs: object) -> Any:
                with autocast(precision, inputs.device.type):
                    return torch.func.functional_call(self.model, weights, (inputs,), kwargs)

            out = self.objective.loss("model", Nets(self.model, forward), Batch(x, y, eps), knobs)  # type: ignore[arg-type]
            assert out is not None  # the model never sits a step out
            return out.loss, torch.stack([out.score, out.per_example]).detach()

        detached = {n: p.detach() for n, p in zip(self.names, params, strict=True)}
        grads_by_name, (loss, watched) = torch.func.grad_and_value(loss_fn, has_aux=True)(detached)
        return [grads_by_name[n] for n in self.names], loss, watched


def _own_step(whole: WholeStep) -> Callable[..., Tensor]:
    """`whole._step` over a copy of its code object: dynamo keeps its compiled graphs, and its limit of 8
    recompilations, per code object, so without the copy a process that compiles a ninth network's step (a
    benchmark, a notebook) would run that step's Python uncompiled."""
    code = WholeStep._step.__code__.replace()
    return types.MethodType(types.FunctionType(code, WholeStep._step.__globals__, "_step"), whole)


@dataclasses.dataclass(frozen=True)
class AdamSettings:
    """The optimizer's settings besides the learning rate (which arrives as a knob)."""

    beta1: float
    beta2: float
    eps: float
    weight_decay: float


def _adam_unless_skipped(
    settings: AdamSettings,
    tensors: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]],
    lr: Tensor,
    skip: Tensor,
    coef: Tensor,
) -> None:
    """The eager step's update (`guards.fused_adam_step`): torch's fused Adam (`torch.optim.adam.adam`, the
    optimizer's settings) in place, the gradients scaled by the clip factor inside it (`grad_scale`) and the skip
    handed over as `found_inf`, so a skipped step changes nothing."""
    params, grads, exp_avg, exp_avg_sq, steps = tensors
    torch_adam(
        params, grads, exp_avg, exp_avg_sq, [], steps,
        foreach=False, capturable=False, differentiable=False, fused=True, grad_scale=1.0 / coef,
        found_inf=skip.to(torch.float32), has_complex=False, amsgrad=False, beta1=settings.beta1,
        beta2=settings.beta2, lr=lr, weight_decay=settings.weight_decay, eps=settings.eps, maximize=False,
    )  # fmt: skip


def supported(cfg: Config, distributed: bool, spectral: bool) -> str | None:
    """Why the whole step cannot be compiled for this run, or None when it can."""
    if distributed:
        return "several processes (DDP)"
    objective = build_objective(cfg)
    if objective.players != ("model",):
        return f"an objective with several players ({', '.join(objective.players)})"
    if (blocker := objective.compile_blocker()) is not None:
        return blocker
    if spectral:
        return "spectral regularization (objective.spectral_reg)"
    if cfg.data.class_weights != "none":
        return "class weights (data.class_weights)"
    if cfg.train.precision == "fp16":
        return "fp16 with a gradient scaler"
    return None

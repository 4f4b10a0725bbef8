"""The whole training step as one compiled graph (`train.compile`).

Forward, backward (`torch.func.grad_and_value`, so autograd is traced into the same graph), gradient
clipping, the guards' skip decision, Adam and the skip counters all run inside one
`torch.compile`'d function, with no host sync. The step reads and writes the very tensors eager
training uses (the parameters, `torch.optim.Adam`'s `exp_avg`, `exp_avg_sq` and `step`, the norm
history, the counters), so checkpoints are the same files either way and a run can resume eagerly
from a compiled one. A skipped update leaves weights and moments as they were, as the eager
fused-Adam path does (`torch.where` on every tensor it would change).

The learning rate, the KL weight and the clip norm enter as one tensor (`knobs`), so schedules
neither recompile nor allocate. Compiled code is cached on disk (`cache_dir`): the first run of a
network on a machine pays the compilation, later processes load it (the graph is still traced).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import Config
from vaekit.models.objectives import elbo_terms
from vaekit.training.guards import NormHistory, StepReport


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
        "objective": [cfg.objective.free_bits, cfg.objective.free_bits_group],
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


class WholeStep:
    """One guarded Adam update of `model` as a compiled function: `step(x, eps, beta, lr, clip_scale)`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, history: NormHistory, cfg: Config) -> None:
        self.model, self.optimizer, self.history, self.cfg = model, optimizer, history, cfg
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        device = self.params[0].device
        self.knobs = torch.zeros(3, device=device)  # beta, lr, clip norm (inf: no clipping)
        self.host_knobs = torch.zeros(3)  # filled per step and copied over: no allocation in the step
        self.key, self.warmed = graph_key(cfg, device), False
        use_persistent_cache()
        self.compiled: Callable[..., tuple[Tensor, Tensor, Tensor]] = torch.compile(
            self._step, dynamic=False
        )

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

    def __call__(self, x: Tensor, eps: Tensor, beta: float, lr: float, clip_scale: float) -> tuple[StepReport, Tensor]:
        clip = self.cfg.guard.clip_grad_norm
        for i, value in enumerate((beta, lr, clip * clip_scale if clip is not None else math.inf)):
            self.host_knobs[i] = value
        self.knobs.copy_(self.host_knobs)
        m, v, t = self._adam_state()
        grad_norm, skip, neg_elbo = self.compiled(
            self.params, m, v, t, self.history.log_norms, self.history.count, x, eps, self.knobs
        )
        if not self.warmed:  # compiled and ran: the next run of this graph on this machine starts warm
            self.warmed = True
            _mark_warm(self.key)
        return StepReport(grad_norm=grad_norm, skipped=skip), neg_elbo

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
    ) -> tuple[Tensor, Tensor, Tensor]:
        cfg, guard, optim = self.cfg, self.cfg.guard, self.cfg.optim
        beta, lr, clip = knobs[0], knobs[1], knobs[2]
        free_bits = (cfg.objective.free_bits, cfg.objective.free_bits_group)

        def loss_fn(weights: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            with autocast(cfg.train.precision, x.device.type):
                out = torch.func.functional_call(self.model, weights, (x,), {"eps": eps})
            terms = elbo_terms(out, x)
            return terms.neg_elbo(beta, *free_bits), terms.neg_elbo_per_example.detach()

        detached = {n: p.detach() for n, p in zip(self.names, params, strict=True)}
        grads_by_name, (loss, neg_elbo) = torch.func.grad_and_value(loss_fn, has_aux=True)(detached)
        grads = [grads_by_name[n] for n in self.names]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        coef = torch.clamp(clip / (grad_norm + 1e-6), max=1.0)  # as clip_grad_norm_
        skip = torch.zeros((), dtype=torch.bool, device=x.device)
        if guard.skip_nonfinite:
            skip = skip | ~torch.isfinite(grad_norm) | ~torch.isfinite(loss)
        if guard.skip_grad_norm is not None:
            skip = skip | (grad_norm > guard.skip_grad_norm)
        if guard.skip_outlier is not None:
            history = NormHistory.over(log_norms, count)
            skip = skip | (grad_norm > history.limit(guard.skip_outlier, guard.skip_warmup))
            history.push(grad_norm)
        keep = ~skip
        beta1, beta2 = optim.betas
        with torch.no_grad():
            for p, g, m, v, t in zip(params, grads, exp_avg, exp_avg_sq, steps, strict=True):
                # torch.optim.Adam (L2 weight decay on the gradient), written out so that it fuses with the rest
                g = g * coef
                if optim.weight_decay:
                    g = g + optim.weight_decay * p
                t_new = t + 1
                m_new = torch.lerp(m, g, 1 - beta1)
                v_new = v * beta2 + (1 - beta2) * g * g
                denom = (v_new.sqrt() / torch.sqrt(1 - beta2**t_new)) + optim.eps
                p_new = p - (lr / (1 - beta1**t_new)) * m_new / denom
                p.copy_(torch.where(keep, p_new, p))
                m.copy_(torch.where(keep, m_new, m))
                v.copy_(torch.where(keep, v_new, v))
                t.copy_(torch.where(keep, t_new, t))
        return grad_norm.detach(), skip, neg_elbo


def supported(cfg: Config, distributed: bool, spectral: bool) -> str | None:
    """Why the whole step cannot be compiled for this run, or None when it can."""
    obj = cfg.objective
    if distributed:
        return "several processes (DDP)"
    if obj.iw_samples > 1:
        return "importance-weighted training (objective.iw_samples > 1)"
    if obj.group_warmup_steps or obj.kl_balance:
        return "per-group KL weights (objective.group_warmup_steps, objective.kl_balance)"
    if cfg.model.conditional:
        return "conditional models"
    if spectral:
        return "spectral regularization (objective.spectral_reg)"
    if cfg.train.precision == "fp16":
        return "fp16 with a gradient scaler"
    return None

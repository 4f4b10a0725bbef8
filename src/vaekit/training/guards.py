"""Gradient guards (after VDVAE's train.py): clip, skip non-finite or huge updates, count skips.

The skip decision stays on the device: with fused Adam the optimizer is handed a `found_inf` flag
(the protocol torch's GradScaler uses), so a skipped step leaves weights and moments untouched
without a host sync. Other optimizers fall back to one `.item()` per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaekit.config import GuardConfig


@dataclass(frozen=True)
class StepReport:
    grad_norm: Tensor  # () the total gradient norm before clipping (inf/nan when non-finite)
    skipped: Tensor  # () bool: the update was not applied


def guarded_update(
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    loss: Tensor,
    cfg: GuardConfig,
    step: Callable[[], object] | None = None,
) -> StepReport:
    """Clip gradients, apply the optimizer step unless it is non-finite or too large, zero grads.

    `step` replaces `optimizer.step` (fp16 passes its GradScaler's step; the grads are unscaled).
    """
    params = [p for p in params if p.grad is not None]
    if cfg.clip_grad_norm is not None:
        grad_norm = nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm, foreach=True)
    else:
        grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
    skip = torch.zeros((), dtype=torch.bool, device=grad_norm.device)
    if cfg.skip_nonfinite:
        skip = skip | ~torch.isfinite(grad_norm) | ~torch.isfinite(loss.detach())
    if cfg.skip_grad_norm is not None:
        skip = skip | (grad_norm > cfg.skip_grad_norm)
    if step is not None:
        if not bool(skip):
            step()
    elif optimizer.defaults.get("fused"):
        optimizer.found_inf = skip.to(torch.float32)  # type: ignore[attr-defined]
        optimizer.grad_scale = None  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]
    elif not bool(skip):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepReport(grad_norm=grad_norm.detach(), skipped=skip)


class EMA:
    """Exponential moving average of a model's floating-point state; skipped steps leave it as is."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, skipped: Tensor) -> None:
        current = model.state_dict()
        keys = list(self.shadow)
        shadow = [self.shadow[k] for k in keys]
        weight = (1.0 - self.decay) * (~skipped).to(shadow[0].dtype)  # 0 on a skipped step
        delta = torch._foreach_sub([current[k] for k in keys], shadow)
        torch._foreach_mul_(delta, weight)
        torch._foreach_add_(shadow, delta)

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state with the averaged weights in place of the live ones."""
        return {**model.state_dict(), **self.shadow}

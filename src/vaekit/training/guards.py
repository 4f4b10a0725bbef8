"""Gradient guards (after VDVAE's train.py): clip, skip non-finite or outlying updates, count skips.

An update is an outlier when its gradient norm is far above the run's own recent norms
(`NormHistory`: the median of the last `guard.skip_window` finite norms, in log space, widened by
their spread), not above an absolute number: VDVAE's fixed threshold stalls a model whose ordinary
norm sits above it (VDVAE issue 25), and its users tune it per data set by hand. Every finite norm
enters the history, skipped or not, so a lasting change of scale is accepted within half a window
instead of stalling; during the first `guard.skip_warmup` steps nothing is judged an outlier.

Skips catch single bad updates; `LossWatch` catches a run that goes bad without a streak of them (a
learned Gaussian scale at a high learning rate blows the -ELBO up to 1e9 nats inside 25 steps, with a
skip here and there): it rolls the run back when the training loss (the objective's own), averaged over
`guard.loss_window` steps, rises `guard.loss_rise` nats per data dimension above the lower of where the run
started and its best window.

The skip decision stays on the device: with fused Adam the optimizer is handed a `found_inf` flag
(the protocol torch's GradScaler uses), so a skipped step leaves weights and moments untouched
without a host sync, and the clip factor as its `grad_scale`, so clipping costs no pass of its own.
Other optimizers clip in place and fall back to one `.item()` per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import GuardConfig


@dataclass(frozen=True)
class StepReport:
    grad_norm: Tensor  # () the total gradient norm before clipping (inf/nan when non-finite)
    skipped: Tensor  # () bool: the update was not applied
    # (B,) nats: the objective's own per-example loss, what the step minimized (the loss watch judges it: under a
    # KL warm-up the -ELBO at weight 1 rises by design as the KL grows; IWAE may worsen the -ELBO as its bound improves)
    per_example_loss: Tensor | None = None
    # what the objective logs this step, every player's (LossOut.terms, detached, (B,) each), with each other
    # player's gradient norm and skip as "<player>.grad_norm" and "<player>.skipped"
    terms: dict[str, Tensor] = field(default_factory=dict)


MAD_TO_STD = 1.4826  # the median absolute deviation of a normal distribution is 0.6745 sigma


class NormHistory:
    """The last `window` finite gradient norms (log), on the device, and the outlier limit they imply.

    limit = exp(median + max(log(skip_outlier), 6 sigma)), sigma = 1.4826 * MAD of the log norms: an
    update at least `skip_outlier` times the recent median, and beyond six robust standard
    deviations of it, is skipped. While the learning rate warms up (`warming`) the norms grow with it by design
    (the `cifar` preset's rise ~700 -> ~16,000 by step 30), so the limit is also at least `skip_outlier` times the
    window's largest norm: steady growth is ordinary, a jump of that factor is still an outlier. No host sync: the
    limit is a device tensor.
    """

    def __init__(self, window: int, device: torch.device | str = "cpu") -> None:
        self.log_norms = torch.zeros(window, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)  # finite norms seen so far

    @classmethod
    def over(cls, log_norms: Tensor, count: Tensor) -> NormHistory:
        """A history over existing tensors (the compiled step passes them in as its inputs)."""
        history = cls.__new__(cls)
        history.log_norms, history.count = log_norms, count
        return history

    def limit(self, outlier: float, warmup: int, warming: bool | Tensor = False) -> Tensor:
        window = self.log_norms.shape[0]
        filled = torch.arange(window, device=self.count.device) < self.count.clamp(max=window)
        values = torch.where(filled, self.log_norms, torch.nan)
        median = values.nanmedian()
        mad = (values - median).abs().nanmedian()
        log_limit = median + torch.clamp(6 * MAD_TO_STD * mad, min=math.log(outlier))
        if warming is not False:  # the lr warm-up: growth relative to the window's largest norm
            peak = torch.where(filled, self.log_norms, -torch.inf).max() + math.log(outlier)
            log_limit = torch.where(torch.as_tensor(warming), torch.maximum(log_limit, peak), log_limit)
        return torch.where(self.count >= max(warmup, 1), torch.exp(log_limit), torch.inf)

    def push(self, grad_norm: Tensor) -> None:
        finite = torch.isfinite(grad_norm)
        at = (self.count % self.log_norms.shape[0]).view(1)
        value = torch.where(finite, torch.log(grad_norm.float().clamp(min=1e-30)), self.log_norms[at][0])
        self.log_norms.index_put_((at,), value.view(1))
        self.count += finite.long()

    def state_dict(self) -> dict[str, Tensor]:
        return {"log_norms": self.log_norms, "count": self.count}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.log_norms = state["log_norms"].to(self.log_norms.device).clone()
        self.count = state["count"].to(self.count.device).clone()


class LossWatch:
    """The training loss (the objective's own per-example loss) in windows of steps, and whether the latest window
    rose too far.

    Per-example losses are summed on the device (one host sync per window, where the window closes).
    The first step's batch mean is the run's start; every later window mean is judged against
    reference = min(start, best window so far): above reference + `rise` nats it has risen.
    """

    def __init__(self, rise: float, device: torch.device | str = "cpu") -> None:
        self.rise = rise  # nats per example (guard.loss_rise times the data dimensions)
        self.total = torch.zeros((), dtype=torch.float64, device=device)  # finite losses of the open window
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.start, self.best, self.last = math.nan, math.inf, math.nan

    def add(self, loss: Tensor) -> None:
        """Count one step's per-example training losses (non-finite ones are the skip rule's business)."""
        finite = torch.isfinite(loss)
        self.total += torch.where(finite, loss, 0).sum(dtype=torch.float64)
        self.count += finite.sum(dtype=torch.float64)

    @property
    def reference(self) -> float:
        return min(self.start, self.best) if math.isfinite(self.start) else self.best

    def close(self, reduce: Callable[[Tensor], Tensor] | None = None) -> float | None:
        """End the open window; returns its mean when it rose above reference + rise, else None.

        `reduce` sums the window over processes (DDP) so that every rank judges the same number."""
        both = torch.stack([self.total, self.count])
        if reduce is not None:
            both = reduce(both)
        total, count = both.tolist()
        self.total.zero_()
        self.count.zero_()
        if count == 0:
            return None
        mean = total / count
        if math.isnan(self.start):
            self.start = mean
            return None
        risen = mean > self.reference + self.rise
        self.best, self.last = min(self.best, mean), mean
        return mean if risen else None

    def healthy(self, state: dict[str, Any] | None) -> bool:
        """Whether a checkpoint's saved watch was within half the rise of today's reference (or had no window)."""
        if not state or not math.isfinite(float(state["last"])):
            return True
        return float(state["last"]) <= self.reference + self.rise / 2

    def state_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.clone(),
            "count": self.count.clone(),
            "start": self.start,
            "best": self.best,
            "last": self.last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total.copy_(state["total"])
        self.count.copy_(state["count"])
        self.start, self.best, self.last = float(state["start"]), float(state["best"]), float(state["last"])


def total_norm(grads: list[Tensor]) -> Tensor:
    """() the 2-norm of all gradients together (as `clip_grad_norm_` measures it); inf/nan when one is non-finite."""
    return nn.utils.get_total_norm(grads, foreach=True)


def clip_coef(max_norm: float | Tensor, grad_norm: Tensor) -> Tensor:
    """() the factor that scales gradients of total norm `grad_norm` to at most `max_norm` (`clip_grads_with_norm_`'s
    rule); 1 when they are within it."""
    return torch.clamp(max_norm / (grad_norm + 1e-6), max=1.0)


def clip_(grads: list[Tensor], max_norm: float | Tensor, grad_norm: Tensor) -> None:
    """Scale `grads` in place to a total norm of at most `max_norm` (optimizers without fused Adam's grad_scale)."""
    torch._foreach_mul_(grads, clip_coef(max_norm, grad_norm))


def skip_decision(
    loss: Tensor, grad_norm: Tensor, cfg: GuardConfig, history: NormHistory | None, warming: bool | Tensor = False
) -> Tensor:
    """() bool on the device, no host sync: skip this update (non-finite, above `skip_grad_norm`, or an outlier
    against the run's recent norms, which this norm then joins; `warming`: in the lr warm-up, see NormHistory)."""
    skip = torch.zeros((), dtype=torch.bool, device=grad_norm.device)
    if cfg.skip_nonfinite:
        skip = skip | ~torch.isfinite(grad_norm) | ~torch.isfinite(loss.detach())
    if cfg.skip_grad_norm is not None:
        skip = skip | (grad_norm > cfg.skip_grad_norm)
    if history is not None and cfg.skip_outlier is not None:
        skip = skip | (grad_norm > history.limit(cfg.skip_outlier, cfg.skip_warmup, warming))
        history.push(grad_norm.detach())
    return skip


def count_skip_(skipped: Tensor, streak: Tensor, skip: Tensor) -> None:
    """Add this step's skip to the total, and to the streak of skips in a row (reset by an applied update)."""
    skipped.add_(skip.long())
    streak.add_(1).mul_(skip.long())


def guarded_update(
    optimizer: torch.optim.Optimizer,
    params: Iterable[nn.Parameter],
    loss: Tensor,
    cfg: GuardConfig,
    step: Callable[[], object] | None = None,
    history: NormHistory | None = None,
    clip_scale: float = 1.0,
    warming: bool = False,
) -> StepReport:
    """Clip gradients, apply the optimizer step unless it is non-finite or an outlier, zero grads.

    `step` replaces `optimizer.step` (fp16 passes its GradScaler's step; the grads are unscaled).
    `history` judges outliers against the run's recent norms (and records this one);
    `clip_scale` multiplies `cfg.clip_grad_norm` (a rollback lowers it); `warming`: the lr warms up.
    """
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = total_norm(grads)
    max_norm = cfg.clip_grad_norm * clip_scale if cfg.clip_grad_norm is not None else None
    skip = skip_decision(loss, grad_norm, cfg, history, warming)
    fused = step is None and optimizer.defaults.get("fused")
    if max_norm is not None and not fused:
        clip_(grads, max_norm, grad_norm)
    if step is not None:
        if not bool(skip):
            step()
    elif fused:
        fused_adam_step(optimizer, skip, clip_coef(max_norm, grad_norm) if max_norm is not None else None)
    elif not bool(skip):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepReport(grad_norm=grad_norm.detach(), skipped=skip)


def fused_adam_step(optimizer: torch.optim.Optimizer, skip: Tensor, coef: Tensor | None) -> None:
    """Fused Adam's step with no host sync: gradients scaled by the clip factor `coef` inside the kernel (as its
    `grad_scale`, which divides), and nothing changed when `skip` (as its `found_inf`, GradScaler's protocol)."""
    optimizer.found_inf = skip.to(torch.float32)  # type: ignore[attr-defined]
    optimizer.grad_scale = None if coef is None else 1.0 / coef  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]


def ema_weight(decay: float | Tensor, skipped: Tensor, dtype: torch.dtype) -> Tensor:
    """() the weight of the new weights in the average: 1 - decay, or 0 on a skipped step."""
    return (1.0 - decay) * (~skipped).to(dtype)


def ema_blend_(shadow: list[Tensor], current: list[Tensor], weight: Tensor) -> None:
    """shadow += weight * (current - shadow), in place, in one pass (a linear interpolation)."""
    torch._foreach_lerp_(shadow, current, [weight] * len(shadow))


class EMA:
    """Exponential moving average of a model's floating-point state; skipped steps leave it as is."""

    def __init__(self, model: nn.Module, decay: float, warmup_power: float = 0.0) -> None:
        self.decay, self.warmup_power = decay, warmup_power
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        """The decay of the update at (0-based) `step`: min(decay, 1 - (1 + step)^-power) with a warm-up.

        The first update then replaces the initial weights outright, and the average reaches back about
        1 / (1 - decay_t) steps, never past the start of training (crowsonkb's EMA warm-up).
        """
        if self.warmup_power <= 0:
            return self.decay
        return min(self.decay, 1.0 - (1.0 + step) ** -self.warmup_power)

    @torch.no_grad()
    def update(self, model: nn.Module, skipped: Tensor, keys: list[str] | None = None, step: int = 0) -> None:
        """Average in `model`'s state after the update at `step` (only `keys`, when given: the compiled step
        averages the rest itself)."""
        current = model.state_dict()
        keys = list(self.shadow) if keys is None else keys
        if not keys:
            return
        shadow = [self.shadow[k] for k in keys]
        ema_blend_(shadow, [current[k] for k in keys], ema_weight(self.decay_at(step), skipped, shadow[0].dtype))

    def state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """The model's state with the averaged weights in place of the live ones."""
        return {**model.state_dict(), **self.shadow}

"""What the loop watches besides the guards: the objective's logged terms, averaged between log rows, and the
discriminator of an adversarial run, judged over windows of steps.

Both keep their sums on the device and read them once per log row or window, so they add no host sync per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from vaekit.config import AdversarialConfig

WIN_REMEDY = (
    "lower adversarial.lr, or turn on adversarial.r1 (e.g. 10), adversarial.lecam (e.g. 0.3) or "
    "adversarial.spectral_norm; a later adversarial.disc_start lets the autoencoder learn first"
)
STALL_REMEDY = (
    "raise adversarial.lr, or set adversarial.disc_norm=none (BatchNorm on small batches can blind it); "
    "its term then only adds noise to the autoencoder's gradient"
)


@dataclass
class TermMeans:
    """Running sums of each logged term (B,) since the last row; `flush` returns their means and starts afresh."""

    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, terms: dict[str, Tensor]) -> None:
        for name, value in terms.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value.sum() if name in self.sums else value.sum()
            self.counts[name] = self.counts.get(name, 0) + value.numel()

    def flush(self) -> dict[str, float]:
        if not self.sums:
            return {}
        names = sorted(self.sums)
        values = torch.stack([self.sums[n] for n in names]).tolist()  # one host sync for all terms
        means = {n: v / self.counts[n] for n, v in zip(names, values, strict=True)}
        self.sums, self.counts = {}, {}
        return means


@dataclass
class DiscriminatorWatch:
    """Judges the discriminator over the last `watch_window` steps it trained, every fifth of a window: an outright
    win (its accuracy on real and fake images, averaged, at least `win_accuracy`) or a stall (at chance with the
    same logits for real and fake). Each verdict is given once per run, with its remedy."""

    cfg: AdversarialConfig
    ring: Tensor | None = None  # (window, 2) per trained step: mean accuracy, mean logit gap (real - fake)
    steps: int = 0
    given: set[str] = field(default_factory=set)

    def add(self, terms: dict[str, Tensor]) -> dict[str, float | str] | None:
        """Record one step's terms; the verdict row when one is due (else None). One host sync per check."""
        if "acc_real" not in terms:
            return None  # the discriminator sat this step out
        accuracy = 0.5 * (terms["acc_real"].float().mean() + terms["acc_fake"].float().mean())
        gap = terms["logits_real"].float().mean() - terms["logits_fake"].float().mean()
        window = self.cfg.watch_window
        if self.ring is None:
            self.ring = torch.zeros(window, 2, device=accuracy.device)
        self.ring[self.steps % window] = torch.stack([accuracy, gap])
        self.steps += 1
        if self.steps < window or self.steps % max(1, window // 5):
            return None
        mean_accuracy, mean_gap = self.ring.mean(0).tolist()
        return self.verdict(mean_accuracy, mean_gap)

    def verdict(self, accuracy: float, gap: float) -> dict[str, float | str] | None:
        if accuracy >= self.cfg.win_accuracy:
            verdict, remedy = "wins outright", WIN_REMEDY
        elif accuracy <= 0.52 and abs(gap) < 0.01:
            verdict, remedy = "has stopped learning", STALL_REMEDY
        else:
            return None
        if verdict in self.given:
            return None
        self.given.add(verdict)
        message = (
            f"the discriminator {verdict}: accuracy {accuracy:.3f} on real and fake images over the last "
            f"{self.cfg.watch_window} steps it trained (logit gap {gap:.2f}); {remedy}"
        )
        return {"verdict": verdict, "accuracy": accuracy, "logit_gap": gap, "message": message}

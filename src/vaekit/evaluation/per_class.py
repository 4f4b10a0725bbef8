"""Per-class evaluation: what one average hides on long-tailed data (the imbalance issue; the article's Q5).

Each class's -ELBO (with its standard error), reconstruction term -E_q[log p(x|z)], KL, the squared error of the
decoder's mean, active units counted within the class, and the importance-sampled NLL when it was estimated. The
per-class -ELBOs, weighted by their counts, average to the overall -ELBO (the same per-example values).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaekit.evaluation.diagnostics import active_units


def per_class_rows(
    labels: Tensor, values: dict[str, Tensor], means: Tensor, nll: Tensor | None = None
) -> list[dict[str, float | int | None]]:
    """One row per class present in `labels` (N,), ascending.

    values: per-example (N,) `neg_elbo`, `log_px`, `kl` (nats) and `mse` (per pixel); means: (N, D) posterior means
    (active units: Var over the class's examples of E_q[z_d] > 0.01); nll: (N,) nats, or None.
    """
    labels, means = labels.cpu(), means.float().cpu()
    values = {key: v.float().cpu() for key, v in values.items()}
    nll = nll.float().cpu() if nll is not None else None
    rows: list[dict[str, float | int | None]] = []
    for label in torch.unique(labels).tolist():
        mask = labels == label
        n = int(mask.sum())
        ne = values["neg_elbo"][mask]
        row: dict[str, float | int | None] = {
            "label": int(label),
            "n": n,
            "neg_elbo": ne.mean().item(),
            "neg_elbo_se": _se(ne),
            "rec": -values["log_px"][mask].mean().item(),
            "kl": values["kl"][mask].mean().item(),
            "mse": values["mse"][mask].mean().item(),
            "active_units": active_units(means[mask]) if n > 1 else 0,
            "nll": None,
            "nll_se": None,
        }
        if nll is not None:
            row |= {"nll": nll[mask].mean().item(), "nll_se": _se(nll[mask])}
        rows.append(row)
    return rows


def describe(rows: list[dict[str, float | int | None]]) -> str:
    """The rows as an aligned text table (the CLI's `eval --per-class`)."""
    head = f"{'class':>5} {'n':>6} {'-ELBO':>9} {'± se':>6} {'-log p(x|z)':>11} {'KL':>7} {'MSE':>8} {'AU':>4}"
    has_nll = any(r["nll"] is not None for r in rows)
    lines = [head + (f" {'NLL':>9}" if has_nll else "")]
    for r in rows:
        line = (f"{r['label']:>5} {r['n']:>6} {r['neg_elbo']:>9.2f} {r['neg_elbo_se']:>6.2f} {r['rec']:>11.2f} "
                f"{r['kl']:>7.2f} {r['mse']:>8.5f} {r['active_units']:>4}")
        lines.append(line + (f" {r['nll']:>9.2f}" if has_nll and r["nll"] is not None else ""))
    return "\n".join(lines)


def _se(values: Tensor) -> float:
    n = values.shape[0]
    return values.std().item() / math.sqrt(n) if n > 1 else float("nan")

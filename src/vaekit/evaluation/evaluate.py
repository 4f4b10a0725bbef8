"""Evaluation: the ELBO (and optionally the importance-sampled NLL) over a whole split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from vaekit.data.datasets import BINARIZED_TEST_SEED, Dataset
from vaekit.data.imbalance import require_labels
from vaekit.evaluation.diagnostics import active_units, mutual_information
from vaekit.evaluation.per_class import per_class_rows
from vaekit.models.base import BaseVAE
from vaekit.models.bounds import bits_per_dim, elbo_terms
from vaekit.models.outputs import Posterior
from vaekit.models.quantizers import codebook_stats
from vaekit.models.vq import VQVAE, QuantizedPosterior

EVAL_SEED = 1234  # fixed draws of z, so the same weights always score the same


@dataclass(frozen=True)
class EvalResult:
    split: str
    n: int
    neg_elbo: float  # nats per example, single-sample estimate, lower is better
    neg_elbo_se: float  # standard error across examples
    log_px: float  # nats per example, E_q[log p(x|z)]
    kl: float  # nats per example
    bits_per_dim: float  # neg_elbo / (D ln 2)
    active_units: int  # dims with Var_x(E_q[z_d]) > 0.01 (Burda et al. 2016), over all groups
    mutual_info: float | None  # I(x; z_top) estimate, nats (diagnostics.mutual_information); None for a flow
    kl_per_dim: list[float | None]  # nats per latent dimension, top group first; None where the KL is Monte Carlo
    kl_per_group: list[float] = field(default_factory=list)  # nats per group, top first
    active_per_group: list[int] = field(default_factory=list)
    group_dims: list[int] = field(default_factory=list)
    kl_estimate: list[str] = field(default_factory=list)  # per group: "closed-form" or "monte-carlo"
    nll: float | None = None  # importance-sampled -log p(x), nats, when asked for
    nll_se: float | None = None
    nll_bits_per_dim: float | None = None
    iw_samples: int | None = None
    binarization_seed: int | None = None  # the one fixed draw of a binarized held-out split, when there is one
    class_accuracy: float | None = None  # a conditional model's argmax_y log p(x | y) against the labels
    classify_k: int | None = None  # importance samples per class for class_accuracy
    per_class: list[dict[str, Any]] | None = None  # one row per class (evaluation/per_class.py), when asked for
    # a VQ model's codebook over this split (its kl is then -log p(codes), the code part of the two-part code)
    codebook_size: int | None = None  # K
    code_usage: float | None = None  # the fraction of the K codes used at least once
    code_perplexity: float | None = None  # exp(entropy) of the code frequencies: K at best, 1 when one code is all
    codes_unused: int | None = None  # codes no example of this split uses

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


MI_EXAMPLES = 2000  # posteriors used for I(x; z): O(N^2) pairs; the estimate's bias is at most log N


@dataclass
class _Scores:
    """Per-batch pieces of an evaluation, concatenated at the end."""

    neg_elbo: list[Tensor] = field(default_factory=list)  # (B,) each
    log_px: list[Tensor] = field(default_factory=list)
    kl_groups: list[list[Tensor]] = field(default_factory=list)  # per batch, per group (B, D_l) or (B, 1)
    means: list[Tensor] = field(default_factory=list)  # (B, D) posterior means
    top_q: list[Posterior] = field(default_factory=list)  # empty for a flow (q's density unknown off its samples)
    nll: list[Tensor] = field(default_factory=list)
    hits: list[Tensor] = field(default_factory=list)  # a conditional model's correct class guesses
    labels: list[Tensor] = field(default_factory=list)  # per-class evaluation: the labels and (B,) squared errors
    mse: list[Tensor] = field(default_factory=list)
    closed: tuple[bool, ...] = ()
    code_counts: Tensor | None = None  # a VQ model's code counts (K,)


@torch.no_grad()
def evaluate(
    model: BaseVAE,
    data: Dataset,
    batch_size: int = 1000,
    iw_samples: int | None = None,
    seed: int = EVAL_SEED,
    classify_k: int | None = None,
    per_class: bool = False,
) -> EvalResult:
    """Score every example of `data`; with `iw_samples = k` also estimate -log p(x) with k samples.

    A conditional model is scored given each example's label; with `classify_k` it is also used as a
    generative classifier, argmax_y log p(x | y) with `classify_k` importance samples per class. With
    `per_class`, `EvalResult.per_class` holds each class's scores (data without labels: a one-line error).
    """
    if per_class:
        require_labels(data, "per-class evaluation")
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    try:
        scores = _score(model, data, batch_size, gen, iw_samples, classify_k, per_class)
    finally:
        model.train(was_training)
    return _result(model, data, scores, gen, iw_samples, classify_k)


def _score(
    model: BaseVAE,
    data: Dataset,
    batch_size: int,
    gen: torch.Generator,
    iw_samples: int | None,
    classify_k: int | None,
    per_class: bool = False,
) -> _Scores:
    scores = _Scores()
    device = next(model.parameters()).device
    for x, labels in data.labelled_batches(batch_size, generator=gen):
        x = x.to(device)
        y = labels if model.num_classes else None
        out = model(x, generator=gen, y=y)
        terms = elbo_terms(out, x)
        scores.closed = terms.closed_form
        scores.neg_elbo.append(terms.neg_elbo)
        scores.log_px.append(terms.log_px)
        scores.kl_groups.append([kl if kl.dim() == 2 else kl[:, None] for kl in terms.kl_groups])
        # posterior means: a hierarchy's along its mean path (each group given the means above)
        scores.means.append((out.groups[0].posterior_mean if len(out.groups) == 1 else model.encode(x, y).mean).float())
        q = out.groups[0].q
        if isinstance(q, QuantizedPosterior) and isinstance(model, VQVAE):
            counts = torch.bincount(q.indices.flatten().cpu(), minlength=model.num_codes)
            scores.code_counts = counts if scores.code_counts is None else scores.code_counts + counts
        elif out.groups[0].log_q is None:
            scores.top_q.append(q)
        if iw_samples:
            scores.nll.append(-model.log_likelihood(x, k=iw_samples, generator=gen, y=y))
        if classify_k and y is not None:
            scores.hits.append((model.classify(x, classify_k, gen).cpu() == y).float())
        if per_class and labels is not None:
            scores.labels.append(labels)
            scores.mse.append((out.px.mean[0].float() - x).pow(2).flatten(1).mean(1).cpu())
    return scores


def _result(
    model: BaseVAE,
    data: Dataset,
    scores: _Scores,
    gen: torch.Generator,
    iw_samples: int | None,
    classify_k: int | None,
) -> EvalResult:
    ne, mean = torch.cat(scores.neg_elbo), torch.cat(scores.means)
    per_group = [torch.cat(parts) for parts in zip(*scores.kl_groups, strict=True)]  # (N, D_l) or (N, 1) Monte Carlo
    dims = list(model.group_dims)
    kl_per_dim: list[float | None] = []
    for kl, is_closed, d in zip(per_group, scores.closed, dims, strict=True):
        kl_per_dim += [round(v, 5) for v in kl.mean(0).tolist()] if is_closed else [None] * d
    extra: dict[str, Any] = {}
    if scores.hits:
        extra = {"class_accuracy": torch.cat(scores.hits).mean().item(), "classify_k": classify_k}
    if scores.labels:
        values = {"neg_elbo": ne, "log_px": torch.cat(scores.log_px), "mse": torch.cat(scores.mse),
                  "kl": torch.stack([kl.sum(-1) for kl in per_group]).sum(0)}
        nll = torch.cat(scores.nll) if iw_samples else None
        extra["per_class"] = per_class_rows(torch.cat(scores.labels), values, mean, nll)
    if scores.code_counts is not None:
        usage, perplexity = codebook_stats(scores.code_counts.float())
        extra |= {"codebook_size": int(scores.code_counts.numel()), "code_usage": usage,
                  "code_perplexity": perplexity, "codes_unused": int((scores.code_counts == 0).sum())}
        kl_per_dim = []  # one number per code vector coordinate says nothing: the code usage says it
    if iw_samples:
        nl = torch.cat(scores.nll)
        extra |= {
            "nll": nl.mean().item(),
            "nll_se": _se(nl),
            "iw_samples": iw_samples,
            "nll_bits_per_dim": float(bits_per_dim(nl.mean().item(), model.dims)),
        }
    return EvalResult(
        split=data.split,
        n=ne.shape[0],
        neg_elbo=ne.mean().item(),
        neg_elbo_se=_se(ne),
        log_px=torch.cat(scores.log_px).mean().item(),
        kl=torch.stack([kl.sum(-1) for kl in per_group]).sum(0).mean().item(),
        bits_per_dim=float(bits_per_dim(ne.mean().item(), model.dims)),
        active_units=active_units(mean),
        mutual_info=_top_mutual_information(scores.top_q, gen),
        kl_per_dim=kl_per_dim,
        kl_per_group=[round(kl.sum(-1).mean().item(), 5) for kl in per_group],
        active_per_group=[active_units(m) for m in mean.split(dims, dim=-1)],
        group_dims=dims,
        kl_estimate=["closed-form" if c else "monte-carlo" for c in scores.closed],
        binarization_seed=BINARIZED_TEST_SEED if data.name.startswith("binarized-") and data.split != "train" else None,
        **extra,
    )


def _top_mutual_information(top_q: list[Posterior], gen: torch.Generator) -> float | None:
    """I(x; z_top) from the top group's posteriors (None for a flow, whose density is known only at its samples)."""
    return mutual_information(top_q, gen, limit=MI_EXAMPLES) if top_q else None


def _se(values: Tensor) -> float:
    n = values.shape[0]
    return values.std().item() / math.sqrt(n) if n > 1 else float("nan")

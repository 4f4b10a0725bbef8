"""Disentanglement metrics with disentanglement_lib's definitions and defaults (Locatello et al. 2019), in PyTorch and
scikit-learn, on any data set whose `Dataset.factors` holds its generative factors' classes (N, K).

The representation is the posterior mean. Points are drawn uniformly from the data set; where a metric fixes a
factor, examples sharing that factor's value are drawn uniformly from the set, which on a full factor grid
(dsprites-like) is disentanglement_lib's intervention itself. Each example is encoded once and kept.

- BetaVAE score (Higgins et al. 2017): batch 64, 10,000 training and 5,000 evaluation points; a point is the mean
  |z1 - z2| over 64 pairs that share one random factor; logistic regression's evaluation accuracy.
- FactorVAE score (Kim & Mnih 2018): batch 64, 10,000 / 5,000 votes, global variances from 10,000 points, codes
  with standard deviation below 0.05 pruned; a vote is (the fixed factor, the code of least variance relative to
  its global variance); the majority-vote classifier's evaluation accuracy.
- MIG (Chen et al. 2018): 10,000 points, each code discretized into 20 equal-width bins; per factor the gap between
  the two largest mutual informations over the factor's entropy, averaged.
- DCI (Eastwood & Williams 2018): 10,000 / 5,000 points, gradient-boosted trees (scikit-learn's defaults) per
  factor; disentanglement and completeness from the importance matrix, informativeness as test accuracy.
- SAP (Kumar et al. 2018): 10,000 / 5,000 points, a linear SVM (C = 0.01, balanced) per code and factor; the mean
  gap between the two best codes' test accuracies.
- Modularity and explicitness (Ridgeway & Zemel 2018): 10,000 / 5,000 points; modularity from the 20-bin mutual
  information, explicitness as the test ROC-AUC of a logistic regression per factor.

`fast=True` divides every count by 10 (batches stay 64): a quick look, named "fast" in the result, not comparable
with published numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaekit.data.datasets import Dataset
from vaekit.errors import DataError
from vaekit.models.base import BaseVAE

BATCH = 64
BINS = 20
PRUNE = 0.05
COUNTS = {"train": 10_000, "eval": 5_000, "variance": 10_000}
CodeFn = Callable[[np.ndarray], np.ndarray]  # example indices (n,) -> their codes (n, D)


class Codes:
    """Posterior means of a data set's examples, encoded on first use and kept: (n,) indices -> (n, D) float64."""

    def __init__(self, model: BaseVAE, data: Dataset, batch_size: int = 500) -> None:
        self.model, self.data, self.batch_size = model, data, batch_size
        self.table = torch.zeros(len(data), model.latent_dim, dtype=torch.float64)
        self.done = torch.zeros(len(data), dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, index: np.ndarray) -> np.ndarray:
        idx = torch.from_numpy(np.asarray(index, dtype=np.int64))
        todo = torch.unique(idx[~self.done[idx]])
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            x = self.data.batch(part).to(self.model.device)
            self.table[part] = self.model.encode(x).mean.double().cpu()
            self.done[part] = True
        return self.table[idx].numpy()


@dataclass
class FactorData:
    """A labelled data set's factors (N, K), and examples grouped by each factor's value."""

    factors: np.ndarray
    groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per factor: order, first position per value, count

    @classmethod
    def of(cls, data: Dataset, need: int) -> FactorData:
        if data.factors is None:
            raise DataError(f"disentanglement metrics need the data's generative factors, and {data.name!r} has none; "
                            "use dsprites-like, dsprites, or an .npz with a 'factors' (N, K) array")
        if len(data) < need:
            raise DataError(f"{data.name!r} {data.split} has {len(data)} examples; the metrics draw from at least "
                            f"{need} (a factor value with too few examples cannot be measured): use a larger split")
        factors = data.factors.numpy().astype(np.int64)
        groups = []
        for k in range(factors.shape[1]):
            order = np.argsort(factors[:, k], kind="stable")
            values, first, count = np.unique(factors[order, k], return_index=True, return_counts=True)
            lookup = np.full(values.max() + 1, -1)
            lookup[values] = np.arange(len(values))
            groups.append((order, first[lookup], count[lookup]))
        return cls(factors, groups)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, len(self.factors), n)

    def sharing(self, k: int, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """For each example of `index`, a random example with the same value of factor k."""
        order, first, count = self.groups[k]
        value = self.factors[index, k]
        return order[first[value] + (rng.random(len(index)) * count[value]).astype(np.int64)]


def beta_vae_score(codes: CodeFn, f: FactorData, rng: np.random.Generator, n_train: int, n_eval: int) -> float:
    from sklearn.linear_model import LogisticRegression

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, f.factors.shape[1], n)
        feats = [np.abs(codes(first) - codes(f.sharing(k, first, rng))).mean(0)
                 for k in labels for first in [f.random(BATCH, rng)]]
        return np.stack(feats), labels

    x_train, y_train = points(n_train)
    model = LogisticRegression(random_state=0).fit(x_train, y_train)
    x_eval, y_eval = points(n_eval)
    return float(model.score(x_eval, y_eval))


def factor_vae_score(codes: CodeFn, f: FactorData, rng: np.random.Generator, n_train: int, n_eval: int,
                     n_variance: int) -> tuple[float, int]:
    """(evaluation accuracy, active codes)."""
    variances = codes(f.random(n_variance, rng)).var(0, ddof=1)
    active = np.sqrt(variances) >= PRUNE
    if not active.any():
        return 0.0, 0

    def votes(n: int) -> np.ndarray:
        table = np.zeros((f.factors.shape[1], len(variances)), dtype=np.int64)
        for k in rng.integers(0, f.factors.shape[1], n):
            batch = f.sharing(k, np.repeat(f.random(1, rng), BATCH), rng)
            ratio = codes(batch).var(0, ddof=1)[active] / variances[active]
            table[k, np.flatnonzero(active)[np.argmin(ratio)]] += 1
        return table

    classifier = votes(n_train).argmax(0)  # per code, the factor it votes for most
    evaluation = votes(n_eval)
    return float(evaluation[classifier, np.arange(len(variances))].sum() / evaluation.sum()), int(active.sum())


def discretize(codes: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(N, D) codes -> bin indices per code, equal-width bins over each code's range (numpy's histogram edges)."""
    out = np.zeros_like(codes, dtype=np.int64)
    for d in range(codes.shape[1]):
        out[:, d] = np.digitize(codes[:, d], np.histogram(codes[:, d], bins)[1][:-1])
    return out


def mutual_info_matrix(discrete: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(D, K) nats between each discretized code and each factor."""
    from sklearn.metrics import mutual_info_score

    return np.array([[mutual_info_score(factors[:, k], discrete[:, d]) for k in range(factors.shape[1])]
                     for d in range(discrete.shape[1])])


def mig(codes: np.ndarray, factors: np.ndarray) -> float:
    from sklearn.metrics import mutual_info_score

    m = np.sort(mutual_info_matrix(discretize(codes), factors), axis=0)[::-1]
    entropy = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])
    return float(np.mean((m[0] - m[1]) / entropy))


def _boosted_trees(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> tuple[np.ndarray, float]:
    """One factor's gradient-boosted trees (disentanglement_lib's defaults): |feature importances|, test accuracy."""
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=0).fit(x, y)
    return np.abs(model.feature_importances_), float(np.mean(model.predict(xt) == yt))


def dci(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
        jobs: int | None = None) -> dict[str, float]:
    """DCI from one boosted-trees classifier per factor, fitted in `jobs` processes (default: one per CPU this
    process may use, at most one per factor; scikit-learn's trees are single-threaded and each fit is seeded, so
    the scores do not depend on it). The 40- and 32-class factors' fits are most of the metrics' time."""
    from joblib import Parallel, cpu_count, delayed

    (x, y), (xt, yt) = train, test
    jobs = jobs or min(y.shape[1], cpu_count())  # joblib's count heeds the process's CPU affinity and cgroup quota
    by_cost = sorted(range(y.shape[1]), key=lambda k: -len(np.unique(y[:, k])))  # the many-class fits start first
    fits = Parallel(n_jobs=jobs)(delayed(_boosted_trees)(x, y[:, k], xt, yt[:, k]) for k in by_cost)
    importance, accuracy = np.zeros((x.shape[1], y.shape[1])), np.zeros(y.shape[1])
    for k, (weights, correct) in zip(by_cost, fits, strict=True):
        importance[:, k], accuracy[k] = weights, correct
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    per_code = 1.0 - _entropy(importance + 1e-11, axis=1)  # over factors, base K
    per_factor = 1.0 - _entropy(importance + 1e-11, axis=0)  # over codes, base D
    return {"disentanglement": float(np.sum(per_code * weights.sum(1) / weights.sum())),
            "completeness": float(np.sum(per_factor * weights.sum(0) / weights.sum())),
            "informativeness": float(np.mean(accuracy))}


def _entropy(weights: np.ndarray, axis: int) -> np.ndarray:
    """The entropy of `weights` normalized along `axis`, in the base of that axis's length (scipy.stats.entropy)."""
    p = weights / weights.sum(axis, keepdims=True)
    return -(p * np.log(p)).sum(axis) / np.log(weights.shape[axis])


def sap(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    from sklearn.svm import LinearSVC

    (x, y), (xt, yt) = train, test
    scores = np.zeros((x.shape[1], y.shape[1]))
    for d in range(x.shape[1]):
        for k in range(y.shape[1]):
            model = LinearSVC(C=0.01, class_weight="balanced").fit(x[:, d : d + 1], y[:, k])
            scores[d, k] = np.mean(model.predict(xt[:, d : d + 1]) == yt[:, k])
    top = np.sort(scores, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def modularity(codes: np.ndarray, factors: np.ndarray) -> float:
    squared = mutual_info_matrix(discretize(codes), factors) ** 2
    largest = squared.max(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = 1.0 - (squared.sum(1) - largest) / (largest * (squared.shape[1] - 1.0))
    return float(np.mean(np.where(largest == 0, 0.0, score)))


def explicitness(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    (x, y), (xt, yt) = train, test
    mean, std = x.mean(0), x.std(0) + 1e-12
    aucs = []
    for k in range(y.shape[1]):
        model = LogisticRegression(max_iter=1000).fit((x - mean) / std, y[:, k])
        proba = model.predict_proba((xt - mean) / std)
        onehot = label_binarize(yt[:, k], classes=model.classes_)
        onehot = np.hstack([1 - onehot, onehot]) if onehot.shape[1] == 1 else onehot
        aucs.append(roc_auc_score(onehot, proba))
    return float(np.mean(aucs))


def disentanglement(model: BaseVAE, data: Dataset, fast: bool = False, seed: int = 0) -> dict[str, Any]:
    """Every metric above for `model`'s posterior means on `data` (its `factors`), as one JSON-ready dict; `fast`
    divides the counts by 10."""
    was_training = model.training
    model.eval()
    codes, started = Codes(model, data), time.perf_counter()
    try:
        scores = score_codes(codes, data, fast, seed)
    finally:
        model.train(was_training)
    return {"data": data.name, "split": data.split, "representation": "posterior mean",
            "encoded": int(codes.done.sum()), "seconds": round(time.perf_counter() - started, 1), **scores}


def score_codes(codes: CodeFn, data: Dataset, fast: bool = False, seed: int = 0) -> dict[str, Any]:
    """The metrics of any representation `codes` (indices -> (n, D) codes) of `data`."""
    n = {k: v // 10 if fast else v for k, v in COUNTS.items()}
    f = FactorData.of(data, 2 * BATCH)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = f.random(n["train"], rng), f.random(n["eval"], rng)
    train, test = (codes(train_idx), f.factors[train_idx]), (codes(test_idx), f.factors[test_idx])
    factor_vae, active = factor_vae_score(codes, f, rng, n["train"], n["eval"], n["variance"])
    return {"mode": "fast" if fast else "disentanglement_lib defaults", "counts": n, "seed": seed,
            "beta_vae": beta_vae_score(codes, f, rng, n["train"], n["eval"]), "factor_vae": factor_vae,
            "factor_vae_active_codes": active, "mig": mig(*train), **dci(train, test), "sap": sap(train, test),
            "modularity": modularity(*train), "explicitness": explicitness(train, test)}


def table_codes(table: Tensor) -> CodeFn:
    """A fixed representation (N, D), e.g. an oracle made of the true factors, as a code function."""
    values = table.double().numpy()
    return lambda index: values[np.asarray(index, dtype=np.int64)]

"""Generation at a chosen class balance: a remedy for long-tailed data that acts when sampling, not training.

A model whose latent density is a mixture (a fitted GMM sampler, or a `mog` / `vamp` prior) is drawn at a class
balance pi by reweighting its components by the classes they hold. With r_k(z) the responsibility of component k
for a training example's latent (its posterior mean; a hierarchy's top group for a prior or a top-group sampler),
J[k, c] the sum of r_k over the class-c examples and P(k | c) = J[k, c] / sum_k J[k, c], the new weights are
w'_k = sum_c pi_c P(k | c). Samples follow pi as far as the components are pure in class (one shared by two
classes passes its mix on): the sample-quality classifier's histogram (`class_coverage`) measures how far. A
conditional model draws its labels from pi instead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vaekit.apps.samplers import Sampler, latent_draws, sampler_latents
from vaekit.apps.samplers.gmm import GmmSampler
from vaekit.data.datasets import Dataset
from vaekit.data.imbalance import class_counts, require_labels
from vaekit.errors import ConfigError
from vaekit.models.base import BaseVAE
from vaekit.models.distributions import GaussianMixture, pairwise_log_density

Draws = Callable[[int, torch.Generator | None], Tensor]  # (n, generator) -> (n, latent_dim)


def parse_balance(spec: str, labels: Tensor, classes: int) -> list[float]:
    """The class balance `spec` names: `uniform`, `train` (the training split's own), or C comma-separated weights
    (normalized); a one-line error for anything else."""
    if spec == "uniform":
        return [1.0 / classes] * classes
    if spec == "train":
        counts = class_counts(labels, classes)[:classes].double()
        return (counts / counts.sum()).tolist()
    try:
        weights = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ConfigError(f"--class-balance {spec!r}: use uniform, train or {classes} weights, e.g. 1,1,2") from None
    if len(weights) != classes or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"--class-balance {spec!r}: give {classes} non-negative weights, not all 0 (one per class)")
    return [w / sum(weights) for w in weights]


def component_given_class(responsibilities: Tensor, labels: Tensor, classes: int) -> Tensor:
    """(K, C) P(k | c): each class's examples' responsibilities (N, K), summed and normalized over components."""
    onehot = torch.nn.functional.one_hot(labels.long(), classes).to(responsibilities.dtype)  # (N, C)
    joint = responsibilities.T @ onehot  # (K, C)
    return joint / joint.sum(0, keepdim=True).clamp_min(1e-30)


def reweighted(p_k_given_c: Tensor, balance: list[float]) -> Tensor:
    """(K,) w'_k = sum_c pi_c P(k | c); classes absent from training (a column of zeros) give nothing."""
    pi = torch.tensor(balance, dtype=p_k_given_c.dtype)
    weights = p_k_given_c @ pi
    if weights.sum() <= 0:
        raise ConfigError("no mixture component holds any class of this balance")
    return weights / weights.sum()


class OneModePrior(ConfigError):
    """Generation at a class balance asked of a model whose prior has one component and no fitted sampler."""


@torch.no_grad()
def balanced_draws(model: BaseVAE, train: Dataset, balance: list[float], sampler: Sampler | None = None) -> Draws:
    """Latents at class balance `balance` from a GMM sampler, else from the model's mixture prior (see the module's
    docstring); `train` is the labelled split the model (and sampler) were fitted on."""
    labels = require_labels(train, "generation at a class balance")
    if sampler is not None and not isinstance(sampler, GmmSampler):
        raise ConfigError(f"the {sampler.name} sampler has no components to reweight; use --sampler gmm or a "
                          "mixture prior (model.prior: mog or vamp)")
    z = sampler_latents(model, train)[0].cpu()
    if sampler is not None:
        z = z[:, : sampler.means.shape[1]]  # a top-group sampler fits the top group alone
        log_r = _gmm_log_joint(sampler, z)
        weights = reweighted(component_given_class(log_r.softmax(-1), labels, len(balance)), balance)
        return latent_draws(model, GmmSampler(weights, sampler.means, sampler.scale_tril, sampler.info))
    prior = model.prior_distribution()
    if not isinstance(prior, GaussianMixture):
        raise OneModePrior("the standard normal prior has one mode: fit a GMM sampler (vaekit fit-sampler RUN "
                          "--sampler gmm) or train a mixture prior (model.prior: mog or vamp) to sample at a balance")
    mean, logvar = prior.mean.detach().float().cpu(), prior.logvar.detach().float().cpu()
    log_r = pairwise_log_density(z[:, : mean.shape[1]], mean, logvar) + prior.log_weights.detach().float().cpu()
    weights = reweighted(component_given_class(log_r.softmax(-1).double(), labels, len(balance)), balance)
    mixture = GaussianMixture(mean, logvar, weights.float().log())

    def draw(n: int, generator: torch.Generator | None = None) -> Tensor:
        return model.sample_latents(n, generator=generator, top=mixture.sample(n, generator).to(model.device))

    return draw


def _gmm_log_joint(sampler: GmmSampler, z: Tensor) -> Tensor:
    """(N, K) log w_k + log N(z; mean_k, L_k L_k^T), in float64."""
    gaussians = torch.distributions.MultivariateNormal(sampler.means.double(), scale_tril=sampler.scale_tril.double())
    return gaussians.log_prob(z.double()[:, None, :]) + sampler.weights.double().log()


def balanced_labels(balance: list[float], n: int, generator: torch.Generator | None = None) -> Tensor:
    """(n,) a conditional model's labels drawn from `balance`."""
    return torch.multinomial(torch.tensor(balance), n, replacement=True, generator=generator)

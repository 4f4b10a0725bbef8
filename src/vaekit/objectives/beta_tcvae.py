"""`beta-tcvae`: the KL split into index-code mutual information, total correlation and dimension-wise KL, each
weighted (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", Eq. 2 and Sec. 3.2):

    loss = -log p(x|z) + tc_alpha * MI + beta * TC + tc_gamma * DWKL
    MI = E[log q(z|x) - log q(z)],  TC = E[log q(z) - sum_d log q(z_d)],  DWKL = E[sum_d log q(z_d) - log p(z)]

(so with every weight 1 it is the ELBO, its KL a Monte Carlo estimate). q(z) = (1/N) sum_n q(z|x_n) is the
aggregate posterior over the N training images; a batch of B estimates it at each example's sample z_i by
log sum_j w_ij q(z_i | x_j):

- `weighted` (minibatch weighted sampling): w_ij = 1 / (N B) for all j, Chen et al.'s estimator. Its log q(z) is
  offset by a constant (-log N where the posteriors overlap, -log B where each example's own term dominates), so
  its reported TC is shifted too; the gradient does not see the offset.
- `stratified` (minibatch stratified sampling): with M = B - 1, w_ii = 1 / N (the example's own posterior),
  w_i,i+1 = (N - M) / (N M) (one member standing for the rest of the data set; i + 1 taken mod B) and 1 / M for the
  others. Every row sums to 1, and sum_j w_ij q(z_i|x_j) estimates q(z_i) = (1/N) q(z_i|x_i) + (1/N) sum_{n != i}
  q(z_i|x_n) without the offset, so TC estimates the non-negative total correlation itself. The rtqichen and
  pythae matrices step by B instead of B + 1 through the flattened matrix, so they fill columns 0 and 1 instead
  of the diagonal and the one beside it: each example's own posterior gets 1 / M, not 1 / N (measured at B = 64,
  N = 60,000; one row sums to 1.016).

Constants are kept in both: dropping log(N B) turns the estimate negative (YannDubs/disentangling-vae #60).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.errors import ConfigError
from vaekit.models.bounds import elbo_terms
from vaekit.models.distributions import LOG_2PI
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets, gaussian_posterior, require_one_gaussian_group


def log_weights(batch_size: int, dataset_size: int, estimator: str) -> Tensor:
    """(B, B) log w_ij of the estimator (see the module's docstring)."""
    b, n = batch_size, dataset_size
    if estimator == "weighted" or b == 1:
        return torch.full((b, b), -math.log(n * b)) if estimator == "weighted" else torch.full((1, 1), -math.log(n))
    m = b - 1
    w = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(b)
    w[rows, (rows + 1) % b] = (n - m) / (n * m)
    w[rows, rows] = 1.0 / n
    return w.log().float()


def tc_decomposition(z: Tensor, mean: Tensor, logvar: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per example (B,) nats: (MI, TC, DWKL) at samples z (B, D) of posteriors N(mean, exp(logvar)) (B, D), the
    aggregate posterior estimated with log weights log_w (B, B)."""
    diff = z[:, None, :] - mean[None, :, :]  # (B_i, B_j, D): sample i under example j's posterior
    log_q = -0.5 * (LOG_2PI + logvar[None] + diff.pow(2) * torch.exp(-logvar[None]))  # (B, B, D)
    log_q_given_x = log_q.diagonal(dim1=0, dim2=1).sum(0)  # (B,) log q(z_i | x_i)
    log_qz = torch.logsumexp(log_q.sum(-1) + log_w, dim=1)  # (B,)
    log_q_marginals = torch.logsumexp(log_q + log_w[..., None], dim=1).sum(-1)  # (B,)
    log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)  # (B,) the standard normal prior
    return log_q_given_x - log_qz, log_qz - log_q_marginals, log_q_marginals - log_pz


@dataclass(frozen=True)
class BetaTcvae:
    cfg: ObjectiveConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model",)
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        require_one_gaussian_group(model, "beta-tcvae", prior=True)

    def compile_blocker(self) -> str | None:
        return None

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        if self.cfg.dataset_size is None:
            raise ConfigError("objective.name=beta-tcvae needs objective.dataset_size (training fills it in from the "
                              "training split; set it when calling the objective yourself)")
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        q = gaussian_posterior(out)
        z, mean, logvar = out.groups[0].z[0].float(), q.mean.float(), q.logvar.float()  # (B, D) each
        log_w = log_weights(z.shape[0], self.cfg.dataset_size, self.cfg.tc_estimator).to(z.device)
        mi, tc, dwkl = tc_decomposition(z, mean, logvar, log_w)
        c = self.cfg
        penalty = c.tc_alpha * batch.mean(mi) + knobs.kl_weight * batch.mean(tc) + c.tc_gamma * batch.mean(dwkl)
        loss = -batch.mean(terms.log_px) + penalty
        per_example = (c.tc_alpha * mi + knobs.kl_weight * tc + c.tc_gamma * dwkl - terms.log_px).detach()
        log = {"log_px": terms.log_px.detach(), "kl": terms.kl.detach(), "mi": mi.detach(), "tc": tc.detach(),
               "dwkl": dwkl.detach()}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

"""`adversarial`: the VAE with a discriminator, the article's joining of the autoencoder's and the GAN's strengths.

Two players, updated in this order each step:
- "model" minimizes  w_px * -log p(x|z) + w_f * ||D_f(x) - D_f(x_rec)||^2 / 2 + beta * KL + d * w * lambda * L_G,
  where D_f are the discriminator's last hidden features (Larsen et al. 2016's reconstruction in the
  discriminator's feature space), L_G the generator's adversarial loss on the reconstructions (and, with
  `judge_prior`, on decoded prior samples, as Larsen et al.), d the start-and-ramp factor (0 before
  `disc_start`), w `adversarial.weight` and lambda the adaptive weight of Esser et al. 2021:
  ||grad L_rec|| / (||grad L_G|| + 1e-4) at the decoder's last layer, clamped to [0, 1e4] and detached
  (taming-transformers vqperceptual.py, calculate_adaptive_weight). L_rec is the reconstruction part (pixels,
  features, LPIPS when `adversarial.lpips` names its weight files: models/perceptual.py).
- "discriminator" minimizes the hinge loss (taming's hinge_d_loss) or the non-saturating one (Goodfellow et al.
  2014) on the real batch against the model's reconstructions of it, detached, from this step's model pass (as
  taming does: both from one forward), plus R1 (Mescheder et al. 2018) and LeCam (Tseng et al. 2021) when asked; it
  sits out the steps before `disc_start`.

The score is the -ELBO, so likelihood and sample quality sit side by side; the adversarial terms are logged apart
(`gen`, `adaptive_weight`, `disc_loss`, `acc_real`, `acc_fake`, ...). The loss watch judges the ELBO part of the
model's loss (-log p(x|z) + beta KL per example): a discriminator that ruins the likelihood rolls the run back.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaekit.config import AdversarialConfig, ModelConfig, ObjectiveConfig
from vaekit.errors import ConfigError
from vaekit.models.base import BaseVAE
from vaekit.models.bounds import elbo_terms
from vaekit.models.discriminators import build_discriminator
from vaekit.models.perceptual import lpips_files
from vaekit.objectives.base import Batch, Knobs, LossOut, Nets
from vaekit.objectives.elbo import weighted_kl

ADAPTIVE_MAX = 1e4  # taming's clamp of the adaptive weight
ADAPTIVE_EPS = 1e-4  # taming's denominator offset


@dataclass(frozen=True)
class Adversarial:
    cfg: ObjectiveConfig
    adv: AdversarialConfig
    score_name: str = "neg_elbo"
    players: tuple[str, ...] = ("model", "discriminator")
    samples: int = 1

    def check(self, model: ModelConfig) -> None:
        if self.adv.adaptive and self.adv.pixel_weight == 0 and self.adv.feature_weight == 0 and not self.adv.lpips:
            raise ConfigError(
                "adversarial.adaptive weighs the adversarial term against the reconstruction terms, and "
                "pixel_weight, feature_weight and lpips are all off; turn one on or set adversarial.adaptive=false"
            )
        if self.adv.lpips:
            lpips_files(self.adv.lpips)  # before the data loads: a missing file is named at once
        if self.adv.lpips and model.input_shape is not None and min(model.input_shape[1:]) < 16:
            raise ConfigError(f"adversarial.lpips needs images of at least 16x16 (VGG16 pools them 4 times); "
                              f"these are {model.input_shape[1]}x{model.input_shape[2]}: set adversarial.lpips=null")
        if model.input_shape is not None:
            with torch.device("meta"):  # the size check only: nothing is allocated
                build_discriminator(tuple(model.input_shape), self.adv)  # type: ignore[arg-type]

    def compile_blocker(self) -> str | None:
        return "the adversarial objective (a discriminator player, autograd.grad for its adaptive weight)"

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut | None:
        if player == "model":
            return self._autoencoder(nets, batch, knobs)
        if knobs.step < self.adv.disc_start:
            return None  # the discriminator sits out its warm-up: taming's disc_factor 0
        return self._discriminator(nets, batch)

    def ramp(self, step: int) -> float:
        """The generator's adversarial factor d at `step`: 0 before disc_start, then linear over disc_ramp to 1."""
        if step < self.adv.disc_start:
            return 0.0
        return min(1.0, (step - self.adv.disc_start + 1) / self.adv.disc_ramp) if self.adv.disc_ramp else 1.0

    def _autoencoder(self, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        out = nets.forward(batch.x, n_samples=1, eps=batch.eps, y=batch.y)
        terms = elbo_terms(out, batch.x)
        kl = weighted_kl(terms, self.cfg.free_bits, self.cfg.free_bits_group, knobs.group_weights, knobs.kl_balance,
                         batch.mean)
        fake = out.px.mean[0]  # (B, C, H, W): the likelihood's mean, differentiable for every likelihood
        batch.memo["fake"] = fake.detach()
        disc, factor = nets.others["discriminator"], self.ramp(knobs.step)
        judged = None  # the discriminator's (logits, features) of the reconstructions, when a term reads them
        if factor > 0 or self.adv.feature_weight > 0:
            with nets.autocast():
                judged = disc(fake)
        rec, log = self._reconstruction(terms.log_px, fake, batch, judged, nets)
        loss = rec + knobs.kl_weight * kl
        if factor > 0:
            assert judged is not None
            gen = self._generator(judged[0], disc, nets, batch)
            weight = adaptive_weight(rec, gen.mean(), nets.model) if self.adv.adaptive else gen.new_ones(())
            loss = loss + factor * self.adv.weight * weight * gen.mean()
            log |= {"gen": gen.detach(), "adaptive_weight": weight.expand_as(gen)}
        per_example = (knobs.kl_weight * terms.kl - terms.log_px).detach()
        log |= {"log_px": terms.log_px.detach(), "kl": terms.kl.detach()}
        return LossOut(loss=loss, per_example=per_example, score=terms.neg_elbo.detach(), terms=log)

    def _reconstruction(
        self, log_px: Tensor, fake: Tensor, batch: Batch, judged: tuple[Tensor, Tensor] | None, nets: Nets
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_rec, the reconstruction terms the adaptive weight compares against: pixels, discriminator features
        (of the reconstructions: `judged`) and LPIPS, each a batch mean (weighted by class, as `Batch.mean`)."""
        x = batch.x
        rec = -self.adv.pixel_weight * batch.mean(log_px)
        log: dict[str, Tensor] = {}
        if self.adv.feature_weight > 0:
            assert judged is not None
            with nets.autocast(), torch.no_grad():
                real_features = nets.others["discriminator"](x)[1]  # the target: no gradient to the discriminator
            feature = 0.5 * (judged[1] - real_features).pow(2).sum(1)  # (B,)
            rec = rec + self.adv.feature_weight * batch.mean(feature)
            log["feature_rec"] = feature.detach()
        if "lpips" in nets.frozen:
            with nets.autocast():
                perceptual = nets.frozen["lpips"](fake, x).float()  # (B,)
            rec = rec + self.adv.lpips_weight * batch.mean(perceptual)
            log["lpips"] = perceptual.detach()
        return rec, log

    def _generator(self, logits_fake: Tensor, disc: nn.Module, nets: Nets, batch: Batch) -> Tensor:
        """L_G per example (B,): on the reconstructions' logits, and averaged with decoded prior samples'
        (judge_prior)."""
        gen = generator_loss(logits_fake, self.adv.loss)
        if not self.adv.judge_prior:
            return gen
        with nets.autocast():
            z = nets.model.sample_latents(logits_fake.shape[0], y=batch.y)
            prior_fake = nets.model.decode(z, batch.y).mean
            batch.memo["prior_fake"] = prior_fake.detach()
            return 0.5 * (gen + generator_loss(disc(prior_fake)[0], self.adv.loss))

    def _discriminator(self, nets: Nets, batch: Batch) -> LossOut:
        disc, real = nets.others["discriminator"], batch.x.detach().requires_grad_(self.adv.r1 > 0)
        fakes = [batch.memo["fake"], *([batch.memo["prior_fake"]] if "prior_fake" in batch.memo else [])]
        with nets.autocast():
            logits_real = disc(real)[0]  # real and fake apart, as taming: BatchNorm sees each set alone
            logits_fakes = [disc(f)[0] for f in fakes]
        real_term, fake_term = disc_terms(logits_real, logits_fakes, self.adv.loss)
        per_example = 0.5 * (real_term + fake_term)  # (B,)
        loss = per_example.mean()
        log = {"disc_loss": per_example.detach(), "logits_real": logits_real.mean(1).detach(),
               "logits_fake": logits_fakes[0].mean(1).detach(), "acc_real": (logits_real > 0).float().mean(1),
               "acc_fake": (logits_fakes[0] < 0).float().mean(1)}
        if self.adv.r1 > 0:
            penalty = r1_penalty(logits_real, real)
            loss = loss + 0.5 * self.adv.r1 * penalty.mean()
            log["r1"] = penalty.detach()
        if self.adv.lecam > 0:
            loss = loss + self.adv.lecam * lecam_penalty(disc, logits_real, logits_fakes[0], self.adv.lecam_decay)
        return LossOut(loss=loss, per_example=per_example.detach(), score=per_example.detach(), terms=log)


def generator_loss(logits_fake: Tensor, kind: str) -> Tensor:
    """(B,) the generator's loss on the logits (B, P) of its images: hinge's -D (taming's g_loss, for both of its
    losses) or the non-saturating softplus(-D) = -log sigmoid(D)."""
    return (-logits_fake if kind == "hinge" else F.softplus(-logits_fake)).mean(1)


def disc_terms(logits_real: Tensor, logits_fakes: list[Tensor], kind: str) -> tuple[Tensor, Tensor]:
    """(B,) the real and the fake halves of the discriminator's loss (fakes averaged over the sets given)."""
    if kind == "hinge":
        real = F.relu(1 - logits_real).mean(1)
        fake = torch.stack([F.relu(1 + f).mean(1) for f in logits_fakes]).mean(0)
    else:
        real = F.softplus(-logits_real).mean(1)
        fake = torch.stack([F.softplus(f).mean(1) for f in logits_fakes]).mean(0)
    return real, fake


def adaptive_weight(rec: Tensor, gen: Tensor, model: BaseVAE) -> Tensor:
    """() Esser et al.'s lambda = ||grad_W rec|| / (||grad_W gen|| + 1e-4), W the decoder's last layer, in
    [0, 1e4], detached; both gradients taken with the graph kept for the step's backward."""
    layer = model.output_layer()
    if layer is None:
        raise ConfigError(
            "adversarial.adaptive weighs the adversarial term at the decoder's last layer, and this model has none "
            "(a Linear or Conv2d making the likelihood's parameters); set adversarial.adaptive=false"
        )
    rec_grad = torch.autograd.grad(rec, layer, retain_graph=True)[0]
    gen_grad = torch.autograd.grad(gen, layer, retain_graph=True)[0]
    return (rec_grad.norm() / (gen_grad.norm() + ADAPTIVE_EPS)).clamp(0, ADAPTIVE_MAX).detach()


def r1_penalty(logits_real: Tensor, real: Tensor) -> Tensor:
    """(B,) ||grad_x sum D(x)||^2 per real image (Mescheder et al. 2018), with the graph kept for the backward."""
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(1)


def lecam_penalty(disc: nn.Module, logits_real: Tensor, logits_fake: Tensor, decay: float) -> Tensor:
    """() LeCam's E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2], a the running means of the logits kept in
    the discriminator's buffers (google/lecam-gan's decay 0.99), updated after they are read."""
    base = getattr(disc, "module", disc)  # under DDP the buffers live on the wrapped module
    anchor_real, anchor_fake = base.get_buffer("lecam_real"), base.get_buffer("lecam_fake")
    penalty = F.relu(logits_real - anchor_fake).pow(2).mean() + F.relu(anchor_real - logits_fake).pow(2).mean()
    with torch.no_grad():
        anchor_real.lerp_(logits_real.mean(), 1 - decay)
        anchor_fake.lerp_(logits_fake.mean(), 1 - decay)
    return penalty

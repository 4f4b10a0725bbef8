"""Range checks of a built config that types alone cannot express (called by `load.config_from_dict`)."""

from __future__ import annotations

from vaekit.config.schema import Config, ModelConfig
from vaekit.errors import ConfigError


def validate(cfg: Config) -> None:
    """Range checks that types alone cannot express."""
    for ok, message in [*_model_checks(cfg), *_vq_checks(cfg), *_training_checks(cfg), *_adversarial_checks(cfg)]:
        if not ok:
            raise ConfigError(message)
    _validate_hierarchy(cfg.model)
    if cfg.model.input_shape is not None and (len(cfg.model.input_shape) != 3 or min(cfg.model.input_shape) < 1):
        raise ConfigError("model.input_shape must be three positive sizes (C, H, W) or null")


def _validate_hierarchy(m: ModelConfig) -> None:
    if m.num_classes is not None and m.num_classes < 2:
        raise ConfigError("model.num_classes must be >= 2 or null")
    if m.kind == "vae" and m.groups:
        raise ConfigError("model.groups is set but model.kind is vae; set model.kind=hierarchical or drop groups")
    if m.kind != "hierarchical":  # other kinds (a registry entry of a later issue, or a user's) check their own
        return
    if len(m.groups) < 1:
        raise ConfigError("model.kind=hierarchical needs model.groups, the latent size per group (top first)")
    if m.posterior != "gaussian":
        raise ConfigError(
            f"model.posterior={m.posterior} applies to one-group models (model.kind=vae); "
            "a hierarchy's groups are Gaussian"
        )
    if m.block == "resconv":
        if len(m.group_scales) != len(m.groups):
            raise ConfigError(
                f"model.group_scales needs one downsampling factor per group ({len(m.groups)}), "
                f"got {len(m.group_scales)}"
            )
        if any(f < 1 or f & (f - 1) for f in m.group_scales):
            raise ConfigError("model.group_scales must be powers of 2 (1, 2, 4, ...)")
        if any(a < b for a, b in zip(m.group_scales, m.group_scales[1:], strict=False)):
            raise ConfigError("model.group_scales must not grow from top to bottom (the top group is the coarsest)")


def _vq_checks(cfg: Config) -> list[tuple[bool, str]]:
    """A VQ model's quantizer and code prior (model.vq)."""
    vq = cfg.model.vq
    return [
        (vq.codebook_size >= 2, "model.vq.codebook_size must be >= 2"),
        (vq.code_dim >= 1, "model.vq.code_dim must be >= 1"),
        (len(vq.fsq_levels) >= 1 and min(vq.fsq_levels) >= 2, "model.vq.fsq_levels must be one or more levels >= 2"),
        (0 <= vq.decay < 1, "model.vq.decay must be in [0, 1)"),
        (vq.dead_threshold >= 0, "model.vq.dead_threshold must be >= 0"),
        (vq.kmeans_iters >= 0, "model.vq.kmeans_iters must be >= 0"),
        (vq.prior_kernel >= 3 and vq.prior_kernel % 2 == 1, "model.vq.prior_kernel must be odd and >= 3"),
        (vq.prior_layers >= 1 and vq.prior_channels >= 1, "model.vq.prior_layers and prior_channels must be >= 1"),
        (vq.prior_lr > 0, "model.vq.prior_lr must be > 0"),
        (cfg.objective.commitment >= 0, "objective.commitment must be >= 0"),
    ]


def _model_checks(cfg: Config) -> list[tuple[bool, str]]:
    """The model's, the data's and the objective's ranges: (holds, the one-line error when it does not)."""
    return [
        (cfg.model.latent_dim >= 1, "model.latent_dim must be >= 1"),
        (all(h >= 1 for h in cfg.model.hidden), "model.hidden widths must be >= 1"),
        (all(h >= 1 for h in cfg.model.decoder_hidden or [1]), "model.decoder_hidden widths must be >= 1"),
        (cfg.model.min_scale > 0, "model.min_scale must be > 0"),
        (cfg.model.mixture_components >= 1, "model.mixture_components must be >= 1"),
        (cfg.model.logvar_min < cfg.model.logvar_max, "model.logvar_min must be below model.logvar_max"),
        (cfg.data.val_size is None or cfg.data.val_size >= 0, "data.val_size must be >= 0 or null"),
        (cfg.data.channels in (None, 1, 3), "data.channels must be 1, 3 or null"),
        (0 <= cfg.data.noise < 1, "data.noise must be in [0, 1)"),
        (cfg.data.image_size is None or cfg.data.image_size >= 1, "data.image_size must be >= 1 or null"),
        (
            cfg.data.imbalance is None or cfg.data.imbalance >= 1,
            "data.imbalance (the largest class over the smallest) must be >= 1 or null",
        ),
        (0 < cfg.data.class_weights_beta < 1, "data.class_weights_beta must be in (0, 1)"),
        (cfg.objective.beta >= 0, "objective.beta must be >= 0"),
        (cfg.objective.free_bits >= 0, "objective.free_bits must be >= 0"),
        (cfg.objective.free_bits_group >= 0, "objective.free_bits_group must be >= 0"),
        (all(w >= 0 for w in cfg.objective.group_warmup_steps), "objective.group_warmup_steps must be >= 0"),
        (cfg.objective.spectral_reg >= 0, "objective.spectral_reg must be >= 0"),
        (
            cfg.model.posterior_offset_max is None or cfg.model.posterior_offset_max > 0,
            "model.posterior_offset_max must be > 0 or null",
        ),
        (cfg.model.prior_components >= 1, "model.prior_components must be >= 1"),
        (cfg.model.flow_steps >= 1 and cfg.model.flow_hidden >= 1, "model.flow_steps and flow_hidden must be >= 1"),
        (cfg.model.flow_context >= 0, "model.flow_context must be >= 0"),
        (all(g >= 1 for g in cfg.model.groups), "model.groups sizes must be >= 1"),
        (all(h >= 1 for h in cfg.model.group_hidden), "model.group_hidden widths must be >= 1"),
        (cfg.model.width >= 1 and cfg.model.res_blocks >= 0, "model.width must be >= 1, model.res_blocks >= 0"),
        (cfg.objective.iw_samples >= 1, "objective.iw_samples must be >= 1"),
        (min(cfg.objective.latent_l2, cfg.objective.decoder_reg_weight, cfg.objective.mmd_weight) >= 0,
         "objective.latent_l2, decoder_reg_weight and mmd_weight must be >= 0"),
        (len(cfg.objective.mmd_scales) > 0 and min(cfg.objective.mmd_scales) > 0, "objective.mmd_scales must be > 0"),
        (min(cfg.objective.tc_alpha, cfg.objective.tc_gamma, cfg.objective.dip_offdiag) >= 0,
         "objective.tc_alpha, tc_gamma and dip_offdiag must be >= 0"),
        (cfg.objective.dip_diag is None or cfg.objective.dip_diag >= 0, "objective.dip_diag must be >= 0 or null"),
        (cfg.objective.dataset_size is None or cfg.objective.dataset_size >= 1, "objective.dataset_size must be >= 1"),
        (cfg.objective.factor_gamma >= 0 and cfg.objective.critic_lr > 0, "objective.factor_gamma must be >= 0, "
         "critic_lr > 0"),
        (cfg.objective.critic_hidden >= 1 and cfg.objective.critic_layers >= 1, "objective.critic_hidden and "
         "critic_layers must be >= 1"),
        (cfg.objective.capacity_max >= 0 and cfg.objective.capacity_gamma >= 0 and cfg.objective.capacity_steps >= 0,
         "objective.capacity_max, capacity_gamma and capacity_steps must be >= 0"),
        (cfg.objective.kl_warmup_steps >= 0, "objective.kl_warmup_steps must be >= 0"),
        (cfg.objective.kl_cycles >= 1, "objective.kl_cycles must be >= 1"),
        (0 < cfg.objective.kl_ramp_fraction <= 1, "objective.kl_ramp_fraction must be in (0, 1]"),
    ]


def _training_checks(cfg: Config) -> list[tuple[bool, str]]:
    """The optimizer's, the guards' and the training run's ranges."""
    return [
        (cfg.optim.lr > 0, "optim.lr must be > 0"),
        (
            len(cfg.optim.betas) == 2 and all(0 <= b < 1 for b in cfg.optim.betas),
            "optim.betas must be two numbers in [0, 1)",
        ),
        (cfg.optim.lr_warmup_steps >= 0, "optim.lr_warmup_steps must be >= 0"),
        (0 <= cfg.optim.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]"),
        (cfg.guard.clip_grad_norm is None or cfg.guard.clip_grad_norm > 0, "guard.clip_grad_norm must be > 0 or null"),
        (cfg.guard.skip_grad_norm is None or cfg.guard.skip_grad_norm > 0, "guard.skip_grad_norm must be > 0 or null"),
        (0 <= cfg.guard.ema_decay < 1, "guard.ema_decay must be in [0, 1)"),
        (cfg.guard.ema_warmup_power >= 0, "guard.ema_warmup_power must be >= 0 (0 = no warm-up)"),
        (cfg.guard.rollback_after >= 0, "guard.rollback_after must be >= 0"),
        (cfg.guard.loss_rise is None or cfg.guard.loss_rise > 0, "guard.loss_rise must be > 0 or null"),
        (cfg.guard.loss_window >= 1, "guard.loss_window must be >= 1 (steps)"),
        (0 < cfg.guard.rollback_lr_factor <= 1, "guard.rollback_lr_factor must be in (0, 1]"),
        (0 < cfg.guard.rollback_clip_factor <= 1, "guard.rollback_clip_factor must be in (0, 1]"),
        (cfg.guard.skip_outlier is None or cfg.guard.skip_outlier > 1, "guard.skip_outlier must be > 1 or null"),
        (cfg.guard.skip_window >= 3 and cfg.guard.skip_warmup >= 0, "guard.skip_window must be >= 3, skip_warmup >= 0"),
        (cfg.guard.max_rollbacks >= 0, "guard.max_rollbacks must be >= 0"),
        (cfg.train.epochs >= 1, "train.epochs must be >= 1"),
        (cfg.train.steps is None or cfg.train.steps >= 1, "train.steps must be >= 1 or null"),
        (cfg.train.batch_size >= 1, "train.batch_size must be >= 1"),
        (cfg.train.eval_batch_size >= 1, "train.eval_batch_size must be >= 1"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.train.checkpoint_every >= 0, "train.checkpoint_every must be >= 0"),
        (cfg.train.checkpoint_minutes >= 0, "train.checkpoint_minutes must be >= 0"),
        (cfg.train.max_minutes >= 0, "train.max_minutes must be >= 0 (0: no time budget)"),
        (cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (cfg.train.threads is None or cfg.train.threads >= 1, "train.threads must be >= 1 or null"),
        (cfg.train.samples >= 1, "train.samples must be >= 1"),
    ]


def _adversarial_checks(cfg: Config) -> list[tuple[bool, str]]:
    """The adversarial objective's ranges (read only when objective.name=adversarial, checked always)."""
    a = cfg.adversarial
    return [
        (a.disc_layers >= 1, "adversarial.disc_layers must be >= 1"),
        (a.disc_channels >= 2, "adversarial.disc_channels must be >= 2"),
        (a.weight >= 0 and a.pixel_weight >= 0 and a.feature_weight >= 0 and a.lpips_weight >= 0,
         "adversarial.weight, pixel_weight, feature_weight and lpips_weight must be >= 0"),
        (a.disc_start >= 0 and a.disc_ramp >= 0, "adversarial.disc_start and disc_ramp must be >= 0 (steps)"),
        (a.r1 >= 0 and a.lecam >= 0, "adversarial.r1 and lecam must be >= 0 (0 = off)"),
        (0 <= a.lecam_decay < 1, "adversarial.lecam_decay must be in [0, 1)"),
        (a.lr is None or a.lr > 0, "adversarial.lr must be > 0 or null (null: optim.lr)"),
        (len(a.betas) == 2 and all(0 <= b < 1 for b in a.betas), "adversarial.betas must be two numbers in [0, 1)"),
        (a.watch_window >= 1, "adversarial.watch_window must be >= 1 (steps)"),
        (0.5 < a.win_accuracy <= 1, "adversarial.win_accuracy must be in (0.5, 1]"),
    ]

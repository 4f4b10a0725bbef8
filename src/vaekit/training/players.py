"""A player: one set of parameters that learns with its own optimizer, guard state and optional EMA.

A run trains the players its objective names (`Objective.players`): "model" today; a discriminator, a TC critic or
a code prior in the families that need a second network. A player never knows which objective it serves; all of
its state is in the checkpoint, so exact resume and rollback hold for every player.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from vaekit.config import Config
from vaekit.errors import ConfigError, VaekitError
from vaekit.models.base import BaseVAE
from vaekit.models.discriminators import build_discriminator, tc_critic
from vaekit.models.perceptual import load_lpips
from vaekit.models.vq import VQVAE
from vaekit.storage import load_state
from vaekit.training.guards import EMA, NormHistory


@dataclass
class Player:
    module: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    history: NormHistory  # recent gradient norms (the outlier rule)
    skipped: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))  # total skipped updates
    streak: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))  # skipped in a row, now
    grad_norm: Tensor = field(default_factory=lambda: torch.zeros(()))  # of the latest step, for evaluation rows
    lr_scale: float = 1.0  # lowered by each rollback
    clip_scale: float = 1.0  # lowered by each rollback, with the learning rate
    wrapped: nn.Module | None = None  # the DDP wrapper in multi-process runs (gradients averaged over processes)
    base_lr: float = 1e-3  # the learning rate the schedule scales (optim.lr for the model)
    params: list[nn.Parameter] = field(default_factory=list)  # what the optimizer updates (the module's, less any
    # other player's network inside it: a VQ model's code prior)

    @classmethod
    def build(
        cls, module: nn.Module, cfg: Config, device: torch.device, optim: tuple[float, list[float]] | None = None,
        leave_out: list[nn.Module] | None = None,
    ) -> Player:
        """Fused Adam with `cfg.optim`'s settings (`optim`: this player's own learning rate and betas) over the
        module's parameters less those of `leave_out` (other players' networks inside it), the EMA `cfg.guard` asks
        for, and the guard state on `device`."""
        lr, betas = optim or (cfg.optim.lr, cfg.optim.betas)
        others = {id(p) for net in leave_out or [] for p in net.parameters()}
        params = [p for p in module.parameters() if id(p) not in others]
        optimizer = torch.optim.Adam(
            params,
            lr=lr,
            betas=tuple(betas),  # type: ignore[arg-type]
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
            fused=device.type in ("cpu", "cuda"),  # fused Adam also takes found_inf: skipped steps need no sync
        )
        ema = EMA(module, cfg.guard.ema_decay, cfg.guard.ema_warmup_power) if cfg.guard.ema_decay > 0 else None
        player = cls(module, optimizer, ema, NormHistory(cfg.guard.skip_window, device), base_lr=lr, params=params)
        player.skipped, player.streak = player.skipped.to(device), player.streak.to(device)
        player.grad_norm = player.grad_norm.to(device)
        return player

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.shadow if self.ema else None,
            "skipped": self.skipped.clone(),  # the live tensors change in place
            "streak": self.streak.clone(),
            "lr_scale": self.lr_scale,
            "clip_scale": self.clip_scale,
            "norm_history": self.history.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: str) -> None:
        """Restore `state_dict`'s output (tensors read back on the CPU go to this player's device)."""
        device = self.skipped.device
        load_state(self.module, state["weights"], source)
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the parameters' device
        _match_layouts(self.optimizer)
        if self.ema is not None and state["ema"] is not None:
            self.ema.shadow = {k: v.to(device) for k, v in state["ema"].items()}
        self.skipped.copy_(state["skipped"])  # in place: a compiled (captured) step keeps these tensors
        self.streak.copy_(state["streak"])
        self.lr_scale, self.clip_scale = float(state["lr_scale"]), float(state.get("clip_scale", 1.0))
        if state.get("norm_history") is not None:  # checkpoints of vaekit 0.1 have none: start the history afresh
            self.history.load_state_dict(state["norm_history"])

    def averaged(self) -> nn.Module:
        """The module with its EMA weights when it keeps an EMA, else the live module."""
        if self.ema is None:
            return self.module
        averaged = copy.deepcopy(self.module)  # not a fresh build: its init would draw from the global RNG
        averaged.load_state_dict(self.ema.state_dict(self.module))
        return averaged


def player_network(name: str, cfg: Config, model: BaseVAE) -> nn.Module:
    """The network of the objective's player `name` other than the model, built from the config."""
    if name == "critic":
        return tc_critic(model.latent_dim, cfg.objective.critic_hidden, cfg.objective.critic_layers)
    if name == "code_prior" and isinstance(model, VQVAE):
        return model.code_prior  # inside the model (saved and loaded with it), trained by its own optimizer
    if name != "discriminator":
        raise VaekitError(f"objective {cfg.objective.name} trains a {name!r} player; pass its network (others=...)")
    if cfg.adversarial.adaptive and model.output_layer() is None:
        raise ConfigError(
            "adversarial.adaptive weighs the adversarial term at the decoder's last layer, and this model's decoder "
            "has no Linear or Conv2d layer to weigh at; set adversarial.adaptive=false"
        )
    return build_discriminator(model.shape, cfg.adversarial)


def frozen_networks(cfg: Config, device: torch.device) -> dict[str, nn.Module]:
    """The fixed networks the objective reads: LPIPS when `adversarial.lpips` names its weights."""
    if cfg.objective.name != "adversarial" or not cfg.adversarial.lpips:
        return {}
    return {"lpips": load_lpips(cfg.adversarial.lpips).to(device)}


def player_optim(name: str, cfg: Config) -> tuple[float, list[float]]:
    """The learning rate and Adam betas of player `name`: the discriminator's own (adversarial.lr, .betas), the TC
    critic's (objective.critic_lr, .critic_betas)."""
    if name == "discriminator":
        return cfg.adversarial.lr or cfg.optim.lr, cfg.adversarial.betas
    if name == "critic":
        return cfg.objective.critic_lr, cfg.objective.critic_betas
    if name == "code_prior":
        return cfg.model.vq.prior_lr, cfg.optim.betas
    return cfg.optim.lr, cfg.optim.betas


def players_state(saved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The players' states of a checkpoint; one written before players existed holds the model's at its top level."""
    if "players" in saved:
        return saved["players"]
    legacy = {key: saved[key] for key in ("optimizer", "ema", "skipped", "streak", "lr_scale")}
    legacy |= {"clip_scale": saved.get("clip_scale", 1.0), "norm_history": saved.get("norm_history")}
    return {"model": {**legacy, "weights": saved["model"]}}


def model_weights(saved: dict[str, Any], averaged: bool = True) -> dict[str, Tensor]:
    """A checkpoint's model weights, with its EMA's in their place when it keeps one and `averaged`."""
    model = players_state(saved)["model"]
    return {**model["weights"], **(model["ema"] or {})} if averaged else dict(model["weights"])


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each restored moment its parameter's memory layout (channels_last convolutions): checkpoints hold
    them contiguous, and CUDA's fused Adam refuses moments whose strides differ from the parameter's."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)

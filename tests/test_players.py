"""Players: each parameter set an objective trains has its own optimizer, guard state and checkpoint state; one
player's skipped update leaves the other's alone; checkpoints from before players still load (issue 40)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from vaekit.config import ObjectiveConfig, load_config
from vaekit.objectives import Batch, Knobs, LossOut, Nets
from vaekit.objectives.elbo import Elbo
from vaekit.training.players import Player
from vaekit.training.step import TrainState, build_state, train_step


@dataclass(frozen=True)
class CriticGame(Elbo):
    """A toy two-player objective: the model's ELBO, and a critic that learns to predict the posterior mean's norm
    from the detached codes (its loss never reaches the model)."""

    players: tuple[str, ...] = ("model", "critic")

    def loss(self, player: str, nets: Nets, batch: Batch, knobs: Knobs) -> LossOut:
        if player == "model":
            return super().loss(player, nets, batch, knobs)
        z = nets.model.encode(batch.x).mean.detach()  # (B, D): the critic learns on codes, not through them
        error = (nets.others["critic"](z).squeeze(-1) - z.norm(dim=-1)) ** 2  # (B,)
        if batch.y is not None:
            error = error * torch.nan  # labels mark a batch that is bad for the critic only (the model ignores them)
        return LossOut(loss=error.mean(), per_example=error.detach(), score=error.detach())


def _state(objective: CriticGame) -> TrainState:
    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=4", "train.batch_size=16", "train.compile=false",
                             "guard.ema_decay=0.9"])
    cfg = replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=100)  # a registered objective's players come from build_state(others=...)
    state.objective = objective
    state.players["critic"] = Player.build(nn.Linear(4, 1), cfg, torch.device("cpu"))
    return state


def _batch(seed: int) -> torch.Tensor:
    return (torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def _cfg():  # type: ignore[no-untyped-def]
    cfg = load_config(None, ["model.hidden=[32]", "model.latent_dim=4", "train.batch_size=16", "train.compile=false"])
    return replace(cfg, model=replace(cfg.model, input_shape=[1, 8, 8]))


def test_each_player_steps_with_its_own_optimizer_and_resumes_exactly() -> None:
    game = CriticGame(ObjectiveConfig())
    state = _state(game)
    cfg = _cfg()
    assert set(state.players) == {"model", "critic"}
    assert state.players["critic"].optimizer is not state.optimizer
    critic0 = {k: v.clone() for k, v in state.players["critic"].module.state_dict().items()}
    for i in range(3):
        train_step(state, _batch(i), cfg, 100)
    assert all(not torch.equal(critic0[k], v) for k, v in state.players["critic"].module.state_dict().items())
    saved = copy.deepcopy(state.state_dict())  # a checkpoint file holds copies; state_dict shares the weights
    assert set(saved["players"]) == {"model", "critic"} and saved["players"]["critic"]["ema"] is not None
    for i in range(3, 6):
        train_step(state, _batch(i), cfg, 100)
    resumed = _state(game)
    resumed.load_state_dict(saved, "memory")
    for i in range(3, 6):
        train_step(resumed, _batch(i), cfg, 100)
    for name in ("model", "critic"):
        a, b = state.players[name].module.state_dict(), resumed.players[name].module.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_one_players_skipped_update_leaves_the_other_stepping() -> None:
    state = _state(CriticGame(ObjectiveConfig()))
    cfg = _cfg()
    train_step(state, _batch(0), cfg, 100)
    critic = {k: v.clone() for k, v in state.players["critic"].module.state_dict().items()}
    model = {k: v.clone() for k, v in state.model.state_dict().items()}
    train_step(state, _batch(1), cfg, 100, y=torch.zeros(16, dtype=torch.long))  # NaN for the critic alone
    assert int(state.players["critic"].skipped) == 1 and int(state.players["model"].skipped) == 0
    assert all(torch.equal(critic[k], v) for k, v in state.players["critic"].module.state_dict().items())
    assert not any(torch.equal(model[k], v) for k, v in state.model.state_dict().items() if v.is_floating_point())
    train_step(state, _batch(2), cfg, 100)
    assert int(state.players["critic"].streak) == 0 and int(state.players["critic"].skipped) == 1


def test_a_checkpoint_from_before_players_loads() -> None:
    # vaekit 0.1 and round 2 wrote the model's optimizer, EMA and guard state at the checkpoint's top level
    cfg = _cfg()
    torch.manual_seed(0)
    state = build_state(cfg, total_steps=100)
    for i in range(3):
        train_step(state, _batch(i), cfg, 100)
    new = copy.deepcopy(state.state_dict())
    model = new.pop("players")["model"]
    legacy = {**new, "model": model.pop("weights"), **model}
    train_step(state, _batch(3), cfg, 100)
    fresh = build_state(cfg, total_steps=100)
    fresh.load_state_dict(legacy, "legacy")  # restores the RNG too: the same noise as `state` drew
    train_step(fresh, _batch(3), cfg, 100)
    a, b = state.model.state_dict(), fresh.model.state_dict()
    assert fresh.step == state.step == 4 and all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_processes_train_every_player_as_one_process(tmp_path: Path) -> None:
    # DDP averages each player's gradients over the processes: the critic too, not only the model
    script = str(Path(__file__).with_name("ddp_players.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, script, str(tmp_path / "one.pt")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-4000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          script, str(tmp_path / "two.pt")], capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-4000:]
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert set(a) == {"model", "critic"}
    for name in a:
        for key in a[name]:
            torch.testing.assert_close(b[name][key], a[name][key], rtol=0, atol=1e-5, msg=f"{name}.{key}")
